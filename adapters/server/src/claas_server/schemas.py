"""Pydantic models of the HTTP API: the only place the server uses pydantic.

Requests in OpenAI's shape (chat and text completions) ignore fields they do not
know, as OpenAI-compatible servers do, so any client works unchanged; CLaaS's own
requests (feedback, adapters, score) forbid unknown fields and are strictly typed,
so a typo or a string for a number is an error rather than a silent guess. Value
rules the core already enforces (non-empty feedback, LoRA and DistillConfig
ranges, adapter id syntax) are left to the core: one rule, one message.
The fields (and documentation) of ``DistillOverrides`` are derived from
``claas.DistillConfig``, and the LoRA defaults of ``AdapterCreate`` are
``claas.LoraSpec``'s, so the core states each once.
"""

from __future__ import annotations

import inspect
import typing
from typing import TYPE_CHECKING, Annotated, Any, Literal

import attrs
from pydantic import BaseModel, ConfigDict, Field, create_model, model_validator

from claas.errors import InvalidRequest, ToolsUnsupported
from claas.jobs.model import JobStatus
from claas.tools import ToolCall, Tools
from claas.types import DistillConfig, LoraSpec, Role
from claas_server.schemas_followups import FollowUpInfo

__all__ = [
    "AdapterCreate",
    "AdapterInfo",
    "AdapterList",
    "AdapterVersionInfo",
    "ChatCompletion",
    "ChatCompletionChunk",
    "ChatCompletionRequest",
    "ChatMessageIn",
    "CompletionRequest",
    "DeletedAdapter",
    "DistillOverrides",
    "ErrorResponse",
    "FeedbackEventInfo",
    "FeedbackEventList",
    "FeedbackItem",
    "FeedbackRequest",
    "FeedbackResponse",
    "GuardProbe",
    "GuardProbes",
    "Health",
    "JobInfo",
    "JobList",
    "ModelInfo",
    "ModelList",
    "RollbackRequest",
    "ScoreRequest",
    "ScoreResponse",
    "TextCompletion",
    "VersionList",
]

SEED_MAX = 2**63 - 1
_LORA = LoraSpec()


class _OpenAIRequest(BaseModel):
    model_config = ConfigDict(extra="ignore", allow_inf_nan=False)


class _Request(BaseModel):
    # Strict: "1" is not a version number, and a typo is not a default.
    model_config = ConfigDict(extra="forbid", allow_inf_nan=False, strict=True)


class _Response(BaseModel):
    model_config = ConfigDict(extra="forbid")


# ----------------------------------------------------------------------- errors


class ErrorDetail(_Response):
    type: str = Field(description="OpenAI-style category, e.g. invalid_request_error")
    message: str
    param: str | None = None
    code: str | None = Field(
        default=None, description="Snake-case error class, e.g. adapter_not_found"
    )


class ErrorResponse(_Response):
    """Every error the API returns."""

    error: ErrorDetail


# ------------------------------------------------------------------------- chat


class TextPart(_OpenAIRequest):
    type: Literal["text"]
    text: str


class ChatMessageIn(_OpenAIRequest):
    """An OpenAI chat message; ``developer`` is read as ``system``. Only text content."""

    role: Role | Literal["developer"]
    content: str | list[TextPart] | None = None
    name: str | None = None
    tool_calls: list[Any] | None = Field(
        default=None, description="Not supported yet in the history: an assistant turn's calls."
    )

    def to_core(self) -> dict[str, str]:
        """The ``{"role", "content"}`` dict the core takes.

        Raises:
            ToolsUnsupported: For an assistant turn with tool calls, which the core's
                text-only messages would lose.
        """
        if self.tool_calls:
            raise ToolsUnsupported(
                "assistant turns with tool_calls in the history are not supported yet; "
                "send the conversation as text turns"
            )
        if isinstance(self.content, list):
            text = "".join(part.text for part in self.content)
        else:
            text = self.content or ""
        return {"role": "system" if self.role == "developer" else self.role, "content": text}


class StreamOptions(_OpenAIRequest):
    include_usage: bool = False


class _Sampling(_OpenAIRequest):
    model: str = Field(
        min_length=1,
        max_length=256,
        description="An adapter id `namespace/name`, or the base model's name (or `base`).",
    )
    temperature: float | None = Field(default=None, ge=0, le=2, description="0 means greedy.")
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0, le=1_000_000, description="Extension; 0 = off.")
    seed: int | None = Field(default=None, ge=0, le=SEED_MAX)
    stop: str | list[str] | None = Field(default=None, description="Up to 4 stop strings.")
    n: int | None = Field(default=None, ge=1, le=1, description="Only 1 is supported.")
    stream: bool | None = False
    stream_options: StreamOptions | None = None

    @model_validator(mode="after")
    def _check_stop(self) -> _Sampling:
        if isinstance(self.stop, list) and len(self.stop) > 4:
            raise ValueError("stop takes at most 4 strings")
        return self

    def sampling(self) -> dict[str, Any]:
        """Sampling keyword arguments for the core (only the ones given)."""
        options = {
            "temperature": self.temperature,
            "top_p": self.top_p,
            "top_k": self.top_k,
            "seed": self.seed,
            "stop": self.stop,
        }
        return {k: v for k, v in options.items() if v is not None}


class ChatCompletionRequest(_Sampling):
    """``POST /v1/chat/completions``: OpenAI's request; unknown fields are ignored."""

    messages: list[ChatMessageIn] = Field(min_length=1)
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    logprobs: bool | None = False
    top_logprobs: int | None = Field(default=None, ge=0, le=20)
    tools: list[dict[str, Any]] | None = Field(
        default=None,
        description="Function tools. vLLM renders them and parses the calls; the local "
        "backend renders them when the model's chat template does (400 where it does not).",
    )
    tool_choice: str | dict[str, Any] | None = Field(
        default=None, description="`auto` (default), `none`, `required` or a named function."
    )
    parallel_tool_calls: bool | None = Field(default=None, description="Accepted, not used.")
    prompt_cache_key: str | None = Field(
        default=None,
        max_length=1024,
        description="Accepted (OpenClaw sends its session id); prefix caching needs no key.",
    )
    user: str | None = Field(default=None, max_length=1024, description="Accepted, not used.")
    response_format: dict[str, Any] | None = Field(default=None, description="Only type `text`.")

    @model_validator(mode="after")
    def _check_unsupported(self) -> ChatCompletionRequest:
        if self.response_format and self.response_format.get("type", "text") != "text":
            raise ValueError("only response_format type 'text' is supported")
        return self

    def sampling(self) -> dict[str, Any]:
        options = super().sampling()
        limit = self.max_completion_tokens or self.max_tokens
        if limit is not None:
            options["max_tokens"] = limit
        if self.logprobs and self.top_logprobs:
            options["top_logprobs"] = self.top_logprobs
        return options

    def tool_set(self) -> Tools | None:
        """The ``tools`` and ``tool_choice`` for the core (``None`` without tools).

        Raises:
            InvalidRequest: A malformed tool, or a tool choice naming no given tool.
        """
        if not self.tools:
            if self.tool_choice not in (None, "auto", "none"):
                raise InvalidRequest("tool_choice needs tools")
            return None
        return Tools(definitions=self.tools, choice=self.tool_choice or "auto")


class CompletionRequest(_Sampling):
    """``POST /v1/completions``: a raw prompt continued without the chat template."""

    prompt: str | list[str] = Field(description="One prompt (a list must hold exactly one).")
    max_tokens: int | None = Field(default=16, ge=1)
    logprobs: int | None = Field(
        default=None, ge=0, le=5, description="Top alternatives per token."
    )
    echo: bool | None = Field(default=False, description="Not supported; must be false.")

    @model_validator(mode="after")
    def _check_prompt(self) -> CompletionRequest:
        if isinstance(self.prompt, list) and len(self.prompt) != 1:
            raise ValueError("prompt must be one string (or a list of exactly one)")
        if self.echo:
            raise ValueError("echo is not supported")
        return self

    @property
    def prompt_text(self) -> str:
        """The single prompt."""
        return self.prompt if isinstance(self.prompt, str) else self.prompt[0]

    def sampling(self) -> dict[str, Any]:
        options = super().sampling()
        if self.max_tokens is not None:
            options["max_tokens"] = self.max_tokens
        if self.logprobs:
            options["top_logprobs"] = self.logprobs
        return options


class TopLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int] | None = None


class TokenLogprob(_Response):
    token: str
    logprob: float
    bytes: list[int] | None = None
    top_logprobs: list[TopLogprob] = Field(default_factory=list)


class ChoiceLogprobs(_Response):
    content: list[TokenLogprob] | None = None


class FunctionCall(_Response):
    name: str
    arguments: str = Field(description="The JSON text the model wrote.")


class ToolCallOut(_Response):
    """A tool call the serving backend parsed from the answer."""

    index: int | None = Field(
        default=None,
        description="Position (stream chunks only).",
        exclude_if=lambda index: index is None,
    )
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall

    @classmethod
    def of(cls, call: ToolCall, index: int | None = None) -> ToolCallOut:
        """The wire form of a core ``ToolCall``."""
        return cls(
            index=index, id=call.id, function=FunctionCall(name=call.name, arguments=call.arguments)
        )


class AssistantMessage(_Response):
    role: Literal["assistant"] = "assistant"
    content: str | None
    tool_calls: list[ToolCallOut] | None = Field(
        default=None, exclude_if=lambda calls: calls is None
    )


class ChatChoice(_Response):
    index: int = 0
    message: AssistantMessage
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str


class Usage(_Response):
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int


class ChatCompletion(_Response):
    """OpenAI's chat completion; ``id`` is what feedback refers to."""

    id: str
    object: Literal["chat.completion"] = "chat.completion"
    created: int
    model: str
    choices: list[ChatChoice]
    usage: Usage
    system_fingerprint: str = Field(description="`claas-<adapter>@<version>`")
    adapter_version: int | None = Field(
        description="The adapter version that answered (null for the base model)."
    )


class ChunkDelta(_Response):
    role: Literal["assistant"] | None = None
    content: str | None = None
    tool_calls: list[ToolCallOut] | None = Field(
        default=None, exclude_if=lambda calls: calls is None
    )


class ChunkChoice(_Response):
    index: int = 0
    delta: ChunkDelta
    logprobs: ChoiceLogprobs | None = None
    finish_reason: str | None = None


class ChatCompletionChunk(_Response):
    """One server-sent event of a streamed chat (``data: {...}``; ends with ``[DONE]``)."""

    id: str
    object: Literal["chat.completion.chunk"] = "chat.completion.chunk"
    created: int
    model: str
    choices: list[ChunkChoice]
    usage: Usage | None = None
    system_fingerprint: str
    adapter_version: int | None


class TextLogprobs(_Response):
    tokens: list[str]
    token_logprobs: list[float]
    top_logprobs: list[dict[str, float]] | None = None
    text_offset: list[int]


class TextChoice(_Response):
    index: int = 0
    text: str
    logprobs: TextLogprobs | None = None
    finish_reason: str


class TextCompletion(_Response):
    id: str
    object: Literal["text_completion"] = "text_completion"
    created: int
    model: str
    choices: list[TextChoice]
    usage: Usage
    system_fingerprint: str
    adapter_version: int | None


class ModelInfo(_Response):
    id: str
    object: Literal["model"] = "model"
    created: int
    owned_by: str
    root: str | None = None
    parent: str | None = None
    version: int | None = Field(default=None, description="Live version (adapters only).")


class ModelList(_Response):
    object: Literal["list"] = "list"
    data: list[ModelInfo]


# --------------------------------------------------------------------- learning


def _attribute_docs(cls: type) -> dict[str, str]:
    """The ``Attributes:`` section of a Google-style class docstring, by name."""
    docs: dict[str, str] = {}
    lines = inspect.cleandoc(cls.__doc__ or "").splitlines()
    inside, name = False, ""
    for line in lines:
        if line.strip() == "Attributes:":
            inside = True
        elif inside and line.startswith(" " * 8) and name:
            docs[name] += " " + line.strip()
        elif inside and line.startswith(" " * 4) and ":" in line:
            name, _, text = line.strip().partition(":")
            docs[name] = text.strip()
        elif inside and line.strip():
            break
    return docs


def _wire_type(hint: Any) -> Any:
    """The JSON form of a field type: a tuple becomes a list (of a fixed length)."""
    if typing.get_origin(hint) is not tuple:
        return hint
    items = typing.get_args(hint)
    element = items[0]
    if len(items) == 2 and items[1] is Ellipsis:
        return list[element]  # type: ignore[valid-type]
    size = Field(min_length=len(items), max_length=len(items))
    return Annotated[list[element], size]  # type: ignore[valid-type]


def _override_fields(cls: type) -> dict[str, Any]:
    """One optional (``None`` = keep) pydantic field per attrs field of ``cls``."""
    hints = typing.get_type_hints(cls)
    docs = _attribute_docs(cls)
    return {
        field.name: (
            _wire_type(hints[field.name]) | None,
            Field(default=None, description=docs.get(field.name)),
        )
        for field in attrs.fields(cls)
    }


if TYPE_CHECKING:
    DistillOverrides = _Request
else:
    DistillOverrides = create_model(
        "DistillOverrides",
        __base__=_Request,
        __doc__="Fields of ``claas.DistillConfig`` to change for this update "
        "(types checked here, ranges by the core).",
        __module__=__name__,
        **_override_fields(DistillConfig),
    )


class FeedbackItem(_Request):
    """One piece of feedback: on a served completion, or on a given conversation."""

    completion_id: str | None = Field(default=None, max_length=256, description="A chat `id`.")
    messages: list[ChatMessageIn] | None = Field(
        default=None,
        description="The conversation answered (with `response`, when no completion_id).",
    )
    response: str | None = Field(default=None, description="The answer the feedback is about.")
    feedback: str = Field(description="What the user said about the answer.")


class FeedbackRequest(_Request):
    """``POST /v1/feedback``, in one of three forms.

    * by completion id: ``{"completion_id": "chatcmpl-...", "feedback": "..."}``
    * raw: ``{"adapter_id": "ns/name", "messages": [...], "response": "...",
      "feedback": "..."}``
    * batch: ``{"items": [item, ...], "adapter_id"?: "ns/name"}``, all on one adapter,
      applied as a single update.

    Any form may add ``config``: DistillConfig fields to override for this update.
    """

    completion_id: str | None = Field(default=None, max_length=256)
    messages: list[ChatMessageIn] | None = None
    response: str | None = None
    feedback: str | None = None
    items: list[FeedbackItem] | None = Field(default=None, min_length=1)
    adapter_id: str | None = Field(
        default=None,
        max_length=256,
        description="The adapter to update; defaults to the one that served the completion.",
    )
    config: DistillOverrides | None = None
    wait: bool = Field(
        default=True,
        description="Answer once the new version serves (200); false answers at once "
        "with the queued job (202), to poll at `GET /v1/feedback/{job_id}`.",
    )

    @model_validator(mode="after")
    def _one_form(self) -> FeedbackRequest:
        single = (self.completion_id, self.messages, self.response, self.feedback)
        if self.items is not None:
            if any(value is not None for value in single):
                raise ValueError("give either items or one item's fields at the top level")
        elif self.feedback is None:
            raise ValueError("feedback is required (or a list of items)")
        return self

    def all_items(self) -> list[FeedbackItem]:
        """The items, whichever form was used."""
        if self.items is not None:
            return list(self.items)
        assert self.feedback is not None
        return [
            FeedbackItem(
                completion_id=self.completion_id,
                messages=self.messages,
                response=self.response,
                feedback=self.feedback,
            )
        ]


class FeedbackResponse(_Response):
    """The update is published and the next chat uses ``version``."""

    object: Literal["feedback.result"] = "feedback.result"
    job_id: str = Field(description="The job that applied it (`GET /v1/feedback/{job_id}`).")
    adapter_id: str
    version: int
    parent_version: int
    feedback_ids: list[str]
    metrics: dict[str, float | None]
    timings: dict[str, float | None] = Field(description="Seconds per phase.")


class JobInfo(_Response):
    """A feedback job (``claas.jobs.FeedbackJob``): accepted at once, applied by a worker.

    ``status`` moves from ``queued`` to ``running`` and ends ``applied`` (with
    ``version``), ``failed``, ``rejected`` (the guard kept the candidate from going
    live), ``cancelled`` or ``skipped`` (the pre-check found too little
    teacher-student divergence to learn from: no new version,
    ``metrics.precheck_divergence`` says how much). Non-finite metrics and
    timings are ``null``.
    """

    id: str = Field(description="`job-...`")
    object: Literal["feedback.job"] = "feedback.job"
    adapter_id: str
    status: JobStatus
    done: bool = Field(description="Whether `status` is final.")
    accepted: float = Field(description="Unix time it was accepted.")
    feedback_ids: list[str] = Field(description="Its feedback events, one per item.")
    idempotency_key: str | None
    started: float | None = Field(description="When a worker began it (the last attempt).")
    finished: float | None = Field(description="When it reached a final status.")
    version: int | None = Field(description="The version it published (`applied` only).")
    parent_version: int | None
    metrics: dict[str, float | None]
    timings: dict[str, float | None] = Field(description="Seconds per phase.")
    error: str | None = Field(description="Why it failed, was rejected or cancelled.")
    error_code: str | None = Field(description="The error class, e.g. non_finite_update.")
    attempts: int = Field(description="Times a worker started it (more than one after a crash).")


class JobList(_Response):
    object: Literal["list"] = "list"
    data: list[JobInfo] = Field(description="Newest first.")


class FeedbackEventInfo(_Response):
    id: str
    adapter_id: str
    completion_id: str | None
    text: str
    status: str
    parent_version: int | None
    version: int | None
    error: str | None
    metrics: dict[str, float | None]
    timings: dict[str, float | None]
    created: float
    finished: float | None


class FeedbackEventList(_Response):
    object: Literal["list"] = "list"
    data: list[FeedbackEventInfo]


class AdapterCreate(_Request):
    """``POST /v1/adapters``: a new adapter whose version 0 equals the base model."""

    adapter_id: str = Field(max_length=256, description="`namespace/name`")
    rank: int = Field(default=_LORA.rank, description="LoRA rank.")
    alpha: float = Field(default=_LORA.alpha, description="LoRA alpha (scale = alpha / rank).")
    dropout: float = Field(default=_LORA.dropout, description="LoRA dropout.")
    target_modules: list[str] | None = Field(
        default=None,
        description=f"Modules to adapt; default {list(_LORA.target_modules)}.",
    )
    exist_ok: bool = False
    learn_from_followups: bool | None = Field(
        default=None,
        description="Learn from the user's follow-up messages (default: the server's setting).",
    )


class AdapterVersionInfo(_Response):
    adapter_id: str
    version: int
    parent: int | None
    created: float
    base_model: str
    lora: dict[str, Any]
    distill_config: dict[str, Any] | None
    feedback_ids: list[str]
    metrics: dict[str, float | None]
    engine: str
    live: bool = Field(description="Whether chats are served by this version.")
    rejected: bool = Field(
        default=False, description="Whether the guard kept this version from going live."
    )
    verdict: dict[str, Any] | None = Field(
        default=None,
        description="The guard's verdict: passed, mode, reasons, measures, answers, forced.",
    )


class CompletionRecord(_Response):
    """A recorded completion with the exact tokens it was served as (``claas.Completion``).

    Non-finite logprobs are ``null``.
    """

    id: str
    object: Literal["claas.completion"] = "claas.completion"
    adapter_id: str | None
    adapter_version: int | None
    model: str = Field(description="The base model.")
    messages: list[dict[str, str]] = Field(description="The conversation answered.")
    prompt_ids: list[int]
    response_ids: list[int]
    response_logprobs: list[float | None]
    text: str = Field(description="The answer as shown (thinking removed).")
    raw_text: str
    finish_reason: str
    created: float
    top_logprobs: list[list[tuple[int, float | None]]] = Field(
        description="Per response token, the most likely alternatives as [token_id, logprob]."
    )
    thinking: bool
    followups: list[FollowUpInfo] = Field(
        default_factory=list,
        description="The user messages that followed this answer in later requests, newest first.",
    )


class AdapterInfo(_Response):
    id: str
    object: Literal["adapter"] = "adapter"
    live_version: int | None = Field(description="None when `error` says the pointer is damaged.")
    base_model: str | None
    created: float | None = Field(description="When the live version was published.")
    versions: int = Field(description="Versions retained.")
    live: AdapterVersionInfo | None = Field(default=None, description="The live version.")
    error: str | None = Field(
        default=None, description="Why the adapter cannot be served (a damaged LATEST pointer)."
    )
    learn_from_followups: bool | None = Field(
        default=None, description="Whether follow-ups become feedback jobs (see PATCH)."
    )


class AdapterList(_Response):
    object: Literal["list"] = "list"
    data: list[AdapterInfo]


class RollbackInfo(_Response):
    kind: Literal["rollback"] = "rollback"
    adapter_id: str
    from_version: int
    to_version: int
    created: float


class VersionList(_Response):
    object: Literal["list"] = "list"
    adapter_id: str
    live_version: int
    data: list[AdapterVersionInfo]
    events: list[RollbackInfo] = Field(description="Rollbacks, newest first.")


class RollbackRequest(_Request):
    version: int = Field(ge=0)
    force: bool = Field(
        default=False, description="Publish a version the guard rejected (else 409)."
    )


class GuardProbe(_Request):
    prompt: str = Field(min_length=1, max_length=2000, description="A question to ask.")
    expect: list[str] = Field(
        min_length=1, description="Answers one of which the reply must contain (whole word)."
    )


class GuardProbes(_Request):
    """An adapter's own guard probes ("must still answer X")."""

    probes: list[GuardProbe] = Field(max_length=32)


class DeletedAdapter(_Response):
    id: str
    object: Literal["adapter"] = "adapter"
    deleted: bool = True


class ScoreRequest(_Request):
    """``POST /v1/score``: logprobs of a fixed response under the live version."""

    model: str = Field(min_length=1, max_length=256, description="Adapter id or base model.")
    messages: list[ChatMessageIn] = Field(min_length=1)
    response: str


class ScoreResponse(_Response):
    object: Literal["score"] = "score"
    adapter_id: str | None
    adapter_version: int | None
    token_ids: list[int]
    logprobs: list[float | None]
    total: float | None
    mean: float | None


class Health(_Response):
    status: Literal["ok"] = "ok"
    version: str
