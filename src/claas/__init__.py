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

from claas.config import Settings
from claas.errors import (
    AdapterExists,
    AdapterNotFound,
    BackendUnavailable,
    ClaasError,
    CompletionNotFound,
    Conflict,
    InvalidAdapterId,
    InvalidConfig,
    InvalidRequest,
    MissingDependency,
    NonFiniteUpdate,
    NotFound,
    PayloadTooLarge,
    PermissionDenied,
    StorageError,
    TrainingError,
    VersionNotFound,
)
from claas.types import (
    AdapterVersion,
    ChatMessage,
    Completion,
    DistillConfig,
    DistillResult,
    Feedback,
    FeedbackResult,
    LoraSpec,
    SamplingParams,
)

if TYPE_CHECKING:
    from claas.learner import ChatStream, Learner, Score

__version__ = "0.1.0"

__all__ = [
    "AdapterExists",
    "AdapterNotFound",
    "AdapterVersion",
    "BackendUnavailable",
    "ChatMessage",
    "ChatStream",
    "ClaasError",
    "Completion",
    "CompletionNotFound",
    "Conflict",
    "DistillConfig",
    "DistillResult",
    "Feedback",
    "FeedbackResult",
    "InvalidAdapterId",
    "InvalidConfig",
    "InvalidRequest",
    "Learner",
    "LoraSpec",
    "MissingDependency",
    "NonFiniteUpdate",
    "NotFound",
    "PayloadTooLarge",
    "PermissionDenied",
    "SamplingParams",
    "Score",
    "Settings",
    "StorageError",
    "TrainingError",
    "VersionNotFound",
    "__version__",
]

_LAZY = {"Learner": "claas.learner", "ChatStream": "claas.learner", "Score": "claas.learner"}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'claas' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
