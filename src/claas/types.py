"""Records that cross module boundaries: messages, completions, feedback, configs.

Everything here is a frozen attrs class validated on construction and free of
torch, so it can be pickled, logged, stored as JSON and sent over HTTP.
"""

from __future__ import annotations

import math
import re
from collections.abc import Mapping, Sequence
from typing import Any, Literal, get_args

import attrs

from claas.errors import InvalidAdapterId, InvalidConfig, InvalidRequest
from claas.tools import ToolCall

__all__ = [
    "AdapterVersion",
    "ChatMessage",
    "Completion",
    "DistillConfig",
    "DistillResult",
    "AdapterSummary",
    "CompletionFeedback",
    "Feedback",
    "feedback_item",
    "FeedbackResult",
    "LoraSpec",
    "RawFeedback",
    "SamplingParams",
    "Hindsight",
    "TeacherMode",
    "TeacherTopKLists",
    "messages_from_dicts",
    "split_adapter_id",
    "valid_id_part",
    "validate_adapter_id",
]

Role = Literal["system", "user", "assistant", "tool"]
ROLES: tuple[Role, ...] = get_args(Role)
TeacherMode = Literal["base", "current", "remote"]
LossKind = Literal["divergence", "token"]
Hindsight = Literal["feedback", "followup"]
DEFAULT_TARGET_MODULES = (
    "q_proj",
    "k_proj",
    "v_proj",
    "o_proj",
    "gate_proj",
    "up_proj",
    "down_proj",
)


_PART = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_ID_RULE = (
    "an adapter id is 'namespace/name', each part 1-64 characters of A-Z a-z 0-9 _ - . "
    "starting with a letter or digit, with no '..' and at most 129 characters in all"
)


def validate_adapter_id(adapter_id: str) -> str:
    """Check that ``adapter_id`` is a safe ``namespace/name`` and return it unchanged.

    Raises:
        InvalidAdapterId: If it breaks the rule; the message states the rule.
    """
    if not isinstance(adapter_id, str):
        raise InvalidAdapterId(f"adapter id must be a string, not {type(adapter_id).__name__}")
    parts = adapter_id.split("/")
    if len(adapter_id) > 129 or len(parts) != 2 or not all(map(valid_id_part, parts)):
        shown = adapter_id if len(adapter_id) <= 80 else adapter_id[:77] + "..."
        raise InvalidAdapterId(f"invalid adapter id {shown!r}: {_ID_RULE}")
    return adapter_id


def split_adapter_id(adapter_id: str) -> tuple[str, str]:
    """Validate ``adapter_id`` and return its ``(namespace, name)``.

    Raises:
        InvalidAdapterId: If the id is not a valid ``namespace/name``.
    """
    namespace, name = validate_adapter_id(adapter_id).split("/")
    return namespace, name


def valid_id_part(part: str) -> bool:
    """Whether ``part`` may be a namespace or a name in an adapter id."""
    return bool(_PART.fullmatch(part)) and ".." not in part


def _str_tuple(value: Any) -> tuple[str, ...]:
    if isinstance(value, str):
        return (value,)
    return tuple(value)


def _float_pair(value: Any) -> tuple[float, float]:
    return tuple(value)  # type: ignore[return-value]  # length checked by the validator


def _config_error(owner: str, field: str, value: object, rule: str) -> InvalidConfig:
    return InvalidConfig(f"{owner}.{field}={value!r} is invalid: {rule}")


def _check_role(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if value not in ROLES:
        raise InvalidRequest(f"message role {value!r} is not one of {', '.join(ROLES)}")


def _check_content(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str):
        raise InvalidRequest(f"message content must be a string, got {type(value).__name__}")


@attrs.frozen
class ChatMessage:
    """One chat turn.

    Attributes:
        role: ``system``, ``user``, ``assistant`` or ``tool``.
        content: The text of the turn.
    """

    role: str = attrs.field(validator=_check_role)
    content: str = attrs.field(validator=_check_content)

    def to_dict(self) -> dict[str, str]:
        """Return the OpenAI-style ``{"role", "content"}`` mapping."""
        return {"role": self.role, "content": self.content}


def messages_from_dicts(
    messages: Sequence[ChatMessage | Mapping[str, Any]],
) -> tuple[ChatMessage, ...]:
    """Normalise OpenAI-style message dicts (or ChatMessages) into ChatMessages.

    Raises:
        InvalidRequest: If the list is empty, a message lacks role or content,
            or the conversation does not end with a user turn.
    """
    if isinstance(messages, (str, bytes)) or not isinstance(messages, Sequence):
        raise InvalidRequest("messages must be a list of {role, content} objects")
    if not messages:
        raise InvalidRequest("messages must not be empty")
    result = []
    for index, message in enumerate(messages):
        if isinstance(message, ChatMessage):
            result.append(message)
            continue
        if not isinstance(message, Mapping) or "role" not in message:
            raise InvalidRequest(f"messages[{index}] must be an object with 'role' and 'content'")
        result.append(ChatMessage(role=message["role"], content=message.get("content") or ""))
    if result[-1].role != "user":
        raise InvalidRequest("the last message must have role 'user'")
    return tuple(result)


def _non_negative(owner: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value < 0:
            raise _config_error(owner, attribute.name, value, "must be a finite number >= 0")

    return check


def _positive(owner: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, (int, float)) or not math.isfinite(value) or value <= 0:
            raise _config_error(owner, attribute.name, value, "must be a finite number > 0")

    return check


def _positive_int(owner: str, upper: int | None = None) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise _config_error(owner, attribute.name, value, "must be an integer >= 1")
        if upper is not None and value > upper:
            raise _config_error(owner, attribute.name, value, f"must be <= {upper}")

    return check


def _unit_interval(owner: str) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if not isinstance(value, (int, float)) or not 0.0 <= value <= 1.0:
            raise _config_error(owner, attribute.name, value, "must lie in [0, 1]")

    return check


def _one_of(owner: str, choices: tuple[str, ...]) -> Any:
    def check(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
        if value not in choices:
            raise _config_error(owner, attribute.name, value, f"must be one of {choices}")

    return check


def _betas(_: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    ok = (
        isinstance(value, tuple)
        and len(value) == 2
        and all(isinstance(b, (int, float)) and 0.0 <= b < 1.0 for b in value)
    )
    if not ok:
        raise _config_error("DistillConfig", "adam_betas", value, "must be two numbers in [0, 1)")


@attrs.frozen(kw_only=True)
class DistillConfig:
    """Hyperparameters of one SDPO update (FACTS defaults; lr tuned for the embedded model).

    Attributes:
        learning_rate: AdamW learning rate. 1e-4 suits the bundled 135M model
            (2e-4 learns faster but collapses some answers to empty stubs);
            about 3e-5 is the published value for 8B models.
        alpha: Divergence interpolation: 0 forward KL(q||s), 1 reverse KL(s||q),
            in between the generalized Jensen-Shannon divergence.
        top_k: Number of teacher tokens kept per position.
        add_tail: Add a (K+1)-th tail atom to both distributions.
        loss: ``divergence`` (top-K distillation) or ``token`` (sampled-token
            policy gradient, for teachers that only give one logprob).
        teacher: ``base`` (frozen base model), ``current`` (adapter on, no grad)
            or ``remote`` (teacher logprobs from the inference backend).
        is_clip: Upper clip of the off-policy importance weight.
        kl_beta: Weight of the k3 KL-to-base penalty on sampled tokens.
        max_grad_norm: Gradient-norm clip.
        weight_decay: AdamW weight decay.
        adam_betas: AdamW betas.
        steps: Optimizer steps on the same batch.
        chunk_size: Positions per chunk of the loss (bounds peak memory).
        hindsight: How the teacher is shown the text: ``feedback`` (an explicit
            critique) or ``followup`` (the user's next message).
        skip_below: Skip the update (job ``skipped``, no new version) when the
            divergence measured before training is below this; 0 never skips.
        skip_reference: What the pre-check compares the teacher with: ``""``
            the student; a text, the teacher shown that neutral text instead
            (so only what the feedback says beyond it counts).
    """

    learning_rate: float = attrs.field(default=1e-4, validator=_positive("DistillConfig"))
    alpha: float = attrs.field(default=0.5, validator=_unit_interval("DistillConfig"))
    top_k: int = attrs.field(default=100, validator=_positive_int("DistillConfig", 4096))
    add_tail: bool = True
    loss: LossKind = attrs.field(
        default="divergence", validator=_one_of("DistillConfig", get_args(LossKind))
    )
    teacher: TeacherMode = attrs.field(
        default="base", validator=_one_of("DistillConfig", get_args(TeacherMode))
    )
    is_clip: float = attrs.field(default=2.0, validator=_positive("DistillConfig"))
    kl_beta: float = attrs.field(default=0.0, validator=_non_negative("DistillConfig"))
    max_grad_norm: float = attrs.field(default=1.0, validator=_positive("DistillConfig"))
    weight_decay: float = attrs.field(default=0.0, validator=_non_negative("DistillConfig"))
    adam_betas: tuple[float, float] = attrs.field(
        default=(0.9, 0.999), converter=_float_pair, validator=_betas
    )
    steps: int = attrs.field(default=1, validator=_positive_int("DistillConfig", 64))
    chunk_size: int = attrs.field(default=256, validator=_positive_int("DistillConfig"))
    hindsight: Hindsight = attrs.field(
        default="feedback", validator=_one_of("DistillConfig", get_args(Hindsight))
    )
    skip_below: float = attrs.field(default=0.0, validator=_non_negative("DistillConfig"))
    skip_reference: str = ""

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        data = attrs.asdict(self)
        data["adam_betas"] = list(self.adam_betas)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any] | None) -> DistillConfig:
        """Build from a mapping, rejecting unknown keys.

        Raises:
            InvalidConfig: On an unknown key or a value that breaks its rule.
        """
        if data is None:
            return cls()
        if not isinstance(data, Mapping):
            raise InvalidConfig("DistillConfig must be given as a mapping of field names")
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(data) - known)
        if unknown:
            raise InvalidConfig(f"DistillConfig has no field(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**data)
        except TypeError as exc:
            raise InvalidConfig(f"DistillConfig: {exc}") from exc

    def merged(self, overrides: Mapping[str, Any] | None) -> DistillConfig:
        """Return a copy with ``overrides`` applied (validated)."""
        if not overrides:
            return self
        return DistillConfig.from_dict({**self.to_dict(), **dict(overrides)})


@attrs.frozen(kw_only=True)
class LoraSpec:
    """Shape of a LoRA adapter, fixed when the adapter is created."""

    rank: int = attrs.field(default=32, validator=_positive_int("LoraSpec", 1024))
    alpha: float = attrs.field(default=64.0, validator=_positive("LoraSpec"))
    dropout: float = attrs.field(default=0.0, validator=_unit_interval("LoraSpec"))
    target_modules: tuple[str, ...] = attrs.field(
        default=DEFAULT_TARGET_MODULES, converter=_str_tuple
    )

    @target_modules.validator
    def _check_targets(self, attribute: attrs.Attribute[Any], value: tuple[str, ...]) -> None:
        if not value or not all(isinstance(m, str) and m.isidentifier() for m in value):
            raise _config_error("LoraSpec", "target_modules", value, "must be module names")

    def to_dict(self) -> dict[str, Any]:
        """Return a JSON-ready mapping."""
        return {**attrs.asdict(self), "target_modules": list(self.target_modules)}


@attrs.frozen(kw_only=True)
class SamplingParams:
    """Decoding options of one chat request.

    ``temperature == 0`` means greedy decoding.
    """

    max_tokens: int = attrs.field(default=256, validator=_positive_int("SamplingParams", 32768))
    temperature: float = attrs.field(default=0.7, validator=_non_negative("SamplingParams"))
    top_p: float = attrs.field(default=1.0, validator=_unit_interval("SamplingParams"))
    top_k: int = attrs.field(default=0, validator=_non_negative("SamplingParams"))
    seed: int | None = None
    stop: tuple[str, ...] = attrs.field(default=(), converter=_str_tuple)
    top_logprobs: int = attrs.field(default=0, validator=_non_negative("SamplingParams"))

    @top_p.validator
    def _check_top_p(self, attribute: attrs.Attribute[float], value: float) -> None:
        if value <= 0:
            raise _config_error("SamplingParams", "top_p", value, "must lie in (0, 1]")

    @classmethod
    def from_kwargs(cls, **kwargs: Any) -> SamplingParams:
        """Build from keyword arguments, rejecting unknown names."""
        known = {f.name for f in attrs.fields(cls)}
        unknown = sorted(set(kwargs) - known)
        if unknown:
            raise InvalidRequest(f"unknown sampling option(s) {unknown}; known: {sorted(known)}")
        if kwargs.get("stop") is None:
            kwargs.pop("stop", None)
        elif isinstance(kwargs["stop"], str):
            kwargs["stop"] = (kwargs["stop"],)
        return cls(**kwargs)

    @property
    def greedy(self) -> bool:
        """Whether decoding is deterministic argmax."""
        return self.temperature == 0


@attrs.frozen(kw_only=True)
class Completion:
    """A response served to a user, with the exact tokens it was sampled as.

    Attributes:
        id: The completion id (OpenAI-style ``chatcmpl-...``) feedback refers to.
        adapter_id: ``namespace/name`` or ``None`` for the bare base model.
        adapter_version: The version that produced it (``None`` for the base model).
        model: The base model name.
        messages: The conversation the response answers.
        prompt_ids: Token ids of the prompt exactly as served.
        response_ids: Token ids of the response exactly as sampled.
        response_logprobs: Log-probability of each sampled token under the
            serving policy (the untempered model distribution).
        text: The response as shown to the user (thinking removed).
        raw_text: The decoded response tokens, thinking included.
        finish_reason: ``stop`` or ``length``.
        created: Unix time.
        top_logprobs: Per response token, the most likely alternatives
            ``((token_id, logprob), ...)`` when requested.
        thinking: Whether it was served with thinking on.
        tool_calls: Tool calls the serving backend parsed from the response
            (shown to the caller, not recorded: their tokens are in ``response_ids``).
    """

    id: str
    adapter_id: str | None
    adapter_version: int | None
    model: str
    messages: tuple[ChatMessage, ...]
    prompt_ids: tuple[int, ...]
    response_ids: tuple[int, ...]
    response_logprobs: tuple[float, ...]
    text: str
    raw_text: str = ""
    finish_reason: str = "stop"
    created: float = 0.0
    top_logprobs: tuple[tuple[tuple[int, float], ...], ...] = ()
    thinking: bool = False
    # Not part of equality: the records keep the calls' tokens, not the parsed calls.
    tool_calls: tuple[ToolCall, ...] = attrs.field(default=(), eq=False)

    def __attrs_post_init__(self) -> None:
        if len(self.response_ids) != len(self.response_logprobs):
            raise InvalidRequest("response_ids and response_logprobs differ in length")


def _check_feedback_text(_: object, attribute: attrs.Attribute[str], value: str) -> None:
    if not isinstance(value, str) or not value.strip():
        raise InvalidRequest("feedback text must be a non-empty string")


@attrs.frozen(kw_only=True)
class CompletionFeedback:
    """Text feedback on a completion CLaaS served (named by its id)."""

    completion_id: str = attrs.field()
    text: str = attrs.field(validator=_check_feedback_text)

    @completion_id.validator
    def _check_id(self, attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not value:
            raise InvalidRequest("completion_id must be a non-empty string")


@attrs.frozen(kw_only=True)
class RawFeedback:
    """Text feedback on a response CLaaS did not serve: the conversation and the answer."""

    messages: tuple[ChatMessage, ...] = attrs.field(converter=lambda m: messages_from_dicts(m))
    response: str = attrs.field()
    text: str = attrs.field(validator=_check_feedback_text)

    @response.validator
    def _check_response(self, attribute: attrs.Attribute[str], value: str) -> None:
        if not isinstance(value, str) or not value:
            raise InvalidRequest("the response must be a non-empty string")


Feedback = CompletionFeedback | RawFeedback
"""One feedback item: on a served completion, or on raw messages and a response."""


def feedback_item(
    completion_id: str | None,
    text: str | None,
    messages: Sequence[ChatMessage | Mapping[str, object]] | None = None,
    response: str | None = None,
) -> Feedback:
    """The item that ``feedback(completion_id, text, messages=, response=)`` describes.

    Raises:
        InvalidRequest: Empty text, or neither a completion id nor messages and response.
    """
    text = text if text is not None else ""
    if completion_id is not None:
        return CompletionFeedback(completion_id=completion_id, text=text)
    if messages is None or response is None:
        raise InvalidRequest("feedback needs a completion_id, or both messages and response")
    return RawFeedback(messages=messages, response=response, text=text)


@attrs.frozen(kw_only=True)
class TeacherTopKLists:
    """Teacher top-K logprobs of one sequence's response positions, as plain lists.

    ``ids[t]`` and ``logprobs[t]`` hold the K most likely tokens at response
    position ``t``; ``token_logprobs[t]`` is the logprob of the sampled token.
    """

    ids: tuple[tuple[int, ...], ...]
    logprobs: tuple[tuple[float, ...], ...]
    token_logprobs: tuple[float, ...]


@attrs.frozen(kw_only=True)
class DistillResult:
    """What a training engine reports about one update."""

    metrics: Mapping[str, float]
    steps: int
    tokens: int


@attrs.frozen(kw_only=True)
class AdapterVersion:
    """One immutable version of an adapter, as the store holds it."""

    adapter_id: str
    version: int
    parent: int | None
    created: float
    base_model: str
    path: str
    lora: Mapping[str, Any] = attrs.field(factory=dict)
    distill_config: Mapping[str, Any] | None = None
    feedback_ids: tuple[str, ...] = ()
    metrics: Mapping[str, float] = attrs.field(factory=dict)
    engine: str = "local"
    verdict: Mapping[str, Any] | None = None
    """The guard's verdict (``passed``, ``reasons``, ``forced``, ...); ``None``: never judged."""

    @property
    def ref(self) -> str:
        """``namespace/name@version``, the name this version is served under."""
        return f"{self.adapter_id}@{self.version}"

    @property
    def rejected(self) -> bool:
        """Whether the guard kept this version from going live (see :mod:`claas.guard`)."""
        return self.verdict is not None and not self.verdict.get("passed", False)


@attrs.frozen(kw_only=True)
class FeedbackResult:
    """Outcome of a feedback call: the new version and what the update measured."""

    feedback_ids: tuple[str, ...]
    adapter_id: str
    version: int
    parent_version: int
    metrics: Mapping[str, float]
    timings: Mapping[str, float]


@attrs.frozen(kw_only=True)
class AdapterSummary:
    """An existing adapter: its live version and how many versions the store keeps.

    ``live`` is ``None`` (and ``error`` says why) when the adapter's ``latest``
    pointer is damaged: nothing is served from it until that is repaired.
    """

    adapter_id: str
    live: AdapterVersion | None
    versions: int
    error: str | None = None
