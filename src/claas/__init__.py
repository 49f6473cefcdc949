"""CLaaS: Continual Learning as a Service.

Every piece of text feedback a user gives becomes a small, immediate SDPO
update of that user's LoRA adapter::

    from claas import Learner

    learner = Learner()                      # bundled SmolLM2, data in ~/.claas
    learner.init_adapter("me/assistant")
    answer = learner.chat("me/assistant", [{"role": "user", "content": "Why is the sky blue?"}])
    learner.feedback(answer.id, "Way too long. Answer in one short sentence.")

``import claas`` stays light: torch-backed parts load on first use.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

from claas.config import (
    FollowupSettings,
    GuardSettings,
    JobSettings,
    ModalSettings,
    ServerSettings,
    Settings,
    TinkerSettings,
    VllmSettings,
)
from claas.errors import (
    AdapterExists,
    AdapterNotFound,
    BackendUnavailable,
    ClaasError,
    CompletionNotFound,
    Conflict,
    IdempotencyConflict,
    InvalidAdapterId,
    InvalidConfig,
    InvalidRequest,
    JobNotFound,
    MissingDependency,
    NonFiniteUpdate,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    QueueFull,
    StorageError,
    ToolsUnsupported,
    TrainingError,
    UpdateRejected,
    VersionNotFound,
)
from claas.followups import AdapterSettings, FollowUp
from claas.learner_like import LearnerLike
from claas.types import (
    AdapterSummary,
    AdapterVersion,
    ChatMessage,
    Completion,
    CompletionFeedback,
    DistillConfig,
    DistillResult,
    Feedback,
    FeedbackResult,
    LoraSpec,
    RawFeedback,
    SamplingParams,
)

if TYPE_CHECKING:
    from claas.client import Client
    from claas.learner import ChatStream, Learner, Score

__version__ = "0.1.0"

__all__ = [
    "AdapterExists",
    "AdapterNotFound",
    "AdapterSettings",
    "AdapterSummary",
    "AdapterVersion",
    "BackendUnavailable",
    "ChatMessage",
    "ChatStream",
    "ClaasError",
    "Client",
    "Completion",
    "CompletionFeedback",
    "CompletionNotFound",
    "Conflict",
    "DistillConfig",
    "DistillResult",
    "Feedback",
    "FeedbackResult",
    "FollowUp",
    "FollowupSettings",
    "GuardSettings",
    "IdempotencyConflict",
    "InvalidAdapterId",
    "InvalidConfig",
    "InvalidRequest",
    "JobNotFound",
    "JobSettings",
    "Learner",
    "LearnerLike",
    "LoraSpec",
    "MissingDependency",
    "ModalSettings",
    "NonFiniteUpdate",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "QueueFull",
    "RawFeedback",
    "SamplingParams",
    "Score",
    "ServerSettings",
    "Settings",
    "StorageError",
    "TinkerSettings",
    "ToolsUnsupported",
    "TrainingError",
    "UpdateRejected",
    "VersionNotFound",
    "VllmSettings",
    "__version__",
]

_LAZY = {
    "Learner": "claas.learner",
    "ChatStream": "claas.learner",
    "Score": "claas.learner",
    "Client": "claas.client",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'claas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
