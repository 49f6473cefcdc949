"""The OpenAI-compatible routes: chat and text completions, and the model list.

``model`` names an adapter (``namespace/name``) or the base model (its name, or
``base``). The response ``id`` is the completion id that ``POST /v1/feedback``
takes; ``adapter_version`` and ``system_fingerprint`` (``claas-<adapter>@<v>``)
say which version answered. ``GET /v1/chat/completions/{id}`` (as in OpenAI's
stored completions) returns the recorded completion with its exact tokens and
the follow-ups later requests revealed (matching happens in ``Learner.chat``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import AsyncIterator, Sequence
from typing import Any

from fastapi import APIRouter
from fastapi.concurrency import run_in_threadpool
from fastapi.responses import StreamingResponse

from claas import Completion, FollowUp
from claas_server.deps import Caller, ServerState, State, resolve_model
from claas_server.errors import ERROR_RESPONSES, describe
from claas_server.schemas import (
    AssistantMessage,
    ChatChoice,
    ChatCompletion,
    ChatCompletionChunk,
    ChatCompletionRequest,
    ChoiceLogprobs,
    ChunkChoice,
    ChunkDelta,
    CompletionRecord,
    CompletionRequest,
    ModelInfo,
    ModelList,
    TextChoice,
    TextCompletion,
    TextLogprobs,
    TokenLogprob,
    ToolCallOut,
    TopLogprob,
    Usage,
)
from claas_server.schemas_followups import FollowUpInfo
from claas_server.streaming import PinnedStream, open_stream

__all__ = ["router"]

router = APIRouter(tags=["openai"], responses=ERROR_RESPONSES)

_SSE = {
    "description": "With `stream: true`: server-sent `chat.completion.chunk` events, "
    "then `data: [DONE]`.",
    "content": {
        "text/event-stream": {
            "schema": {
                "type": "object",
                "description": "One server-sent event",
                "required": ["data"],
                "properties": {
                    "data": {"type": "string", "description": "A JSON chunk, or [DONE]"},
                    "event": {"type": "string"},
                },
            }
        }
    },
}


def fingerprint(adapter_id: str | None, version: int | None) -> str:
    """``claas-<adapter>@<version>``, or ``claas-base``."""
    return f"claas-{adapter_id}@{version}" if adapter_id else "claas-base"


def _usage(completion: Completion) -> Usage:
    prompt, answer = len(completion.prompt_ids), len(completion.response_ids)
    return Usage(prompt_tokens=prompt, completion_tokens=answer, total_tokens=prompt + answer)


def _shown_positions(completion: Completion, tokenizer: Any) -> int:
    """How many response tokens to report: a final end-of-turn token is not shown."""
    count = len(completion.response_ids)
    if count and completion.finish_reason == "stop":
        last = completion.response_ids[-1]
        if tokenizer.decode([last], skip_special_tokens=True) == "":
            count -= 1
    return count


def _token(tokenizer: Any, token_id: int) -> tuple[str, list[int]]:
    text = tokenizer.decode([int(token_id)])
    return text, list(text.encode("utf-8"))


def chat_logprobs(completion: Completion, tokenizer: Any) -> ChoiceLogprobs:
    """OpenAI's ``choices[0].logprobs`` for a completion."""
    content = []
    for position in range(_shown_positions(completion, tokenizer)):
        token, raw = _token(tokenizer, completion.response_ids[position])
        tops = completion.top_logprobs[position] if position < len(completion.top_logprobs) else ()
        alternatives = []
        for alt_id, alt_logprob in tops:
            alt, alt_raw = _token(tokenizer, alt_id)
            alternatives.append(TopLogprob(token=alt, logprob=alt_logprob, bytes=alt_raw))
        content.append(
            TokenLogprob(
                token=token,
                logprob=completion.response_logprobs[position],
                bytes=raw,
                top_logprobs=alternatives,
            )
        )
    return ChoiceLogprobs(content=content)


def _chat_response(
    state: ServerState, adapter: str | None, body: ChatCompletionRequest
) -> ChatCompletion:
    messages = [m.to_core() for m in body.messages]
    completion = state.learner.chat(adapter, messages, tools=body.tool_set(), **body.sampling())
    state.metrics.observe_tokens(len(completion.prompt_ids), len(completion.response_ids))
    logprobs = chat_logprobs(completion, state.learner.tokenizer) if body.logprobs else None
    calls = [ToolCallOut.of(call) for call in completion.tool_calls] or None
    return ChatCompletion(
        id=completion.id,
        created=int(completion.created),
        model=body.model,
        choices=[
            ChatChoice(
                message=AssistantMessage(
                    content=completion.text if completion.text or not calls else None,
                    tool_calls=calls,
                ),
                logprobs=logprobs,
                finish_reason=completion.finish_reason,
            )
        ],
        usage=_usage(completion),
        system_fingerprint=fingerprint(completion.adapter_id, completion.adapter_version),
        adapter_version=completion.adapter_version,
    )


@router.post(
    "/v1/chat/completions",
    response_model=ChatCompletion,
    responses={200: _SSE},
    summary="Chat with an adapter's live version (OpenAI-compatible)",
)
async def chat_completions(
    body: ChatCompletionRequest, state: State, caller: Caller
) -> ChatCompletion | StreamingResponse:
    """Answer a conversation; ``stream: true`` streams tokens as they are generated.

    Errors found before the first token (unknown adapter, bad options, a prompt
    over the limit) are ordinary HTTP errors; an error after it ends the stream
    with an ``{"error": ...}`` event.
    """
    adapter = resolve_model(body.model, caller, state.settings)
    if not body.stream:
        return await run_in_threadpool(_chat_response, state, adapter, body)
    messages = [m.to_core() for m in body.messages]
    options = {**body.sampling(), "tools": body.tool_set()}
    pinned = await open_stream(
        lambda: state.learner.chat_stream(adapter, messages, **options), state.stream_executor
    )
    return StreamingResponse(
        _chat_events(state, pinned, adapter, body),
        media_type="text/event-stream",
        headers={"Cache-Control": "no-cache", "X-Accel-Buffering": "no"},
    )


def _event(data: Any) -> str:
    text = data if isinstance(data, str) else json.dumps(data, separators=(",", ":"))
    return f"data: {text}\n\n"


async def _chat_events(
    state: ServerState, pinned: PinnedStream, adapter: str | None, body: ChatCompletionRequest
) -> AsyncIterator[str]:
    stream = pinned.stream
    created = int(time.time())

    def chunk(choices: Sequence[ChunkChoice], usage: Usage | None = None) -> str:
        data = ChatCompletionChunk(
            id=stream.id,
            created=created,
            model=body.model,
            choices=list(choices),
            usage=usage,
            system_fingerprint=fingerprint(adapter, stream.adapter_version),
            adapter_version=stream.adapter_version,
        )
        return _event(data.model_dump())

    yield chunk([ChunkChoice(delta=ChunkDelta(role="assistant", content=""))])
    try:
        async for text in pinned.deltas():
            yield chunk([ChunkChoice(delta=ChunkDelta(content=text))])
    except Exception as exc:
        yield _event(describe(exc)[1])
        return
    completion = stream.completion
    if completion is None:  # the backend ended without a result; report, do not pretend
        yield _event({"error": {"type": "server_error", "message": "the stream ended early"}})
        return
    state.metrics.observe_tokens(len(completion.prompt_ids), len(completion.response_ids))
    if completion.tool_calls:
        calls = [ToolCallOut.of(call, index) for index, call in enumerate(completion.tool_calls)]
        yield chunk([ChunkChoice(delta=ChunkDelta(tool_calls=calls))])
    logprobs = None
    if body.logprobs:
        logprobs = await run_in_threadpool(chat_logprobs, completion, state.learner.tokenizer)
    finish = ChunkChoice(
        delta=ChunkDelta(), logprobs=logprobs, finish_reason=completion.finish_reason
    )
    yield chunk([finish])
    if body.stream_options is not None and body.stream_options.include_usage:
        yield chunk([], usage=_usage(completion))
    yield _event("[DONE]")


def _text_logprobs(completion: Completion, tokenizer: Any, top: int | None) -> TextLogprobs:
    tokens, logprobs, offsets, alternatives = [], [], [], []
    offset = 0
    for position in range(_shown_positions(completion, tokenizer)):
        token, _ = _token(tokenizer, completion.response_ids[position])
        tokens.append(token)
        logprobs.append(completion.response_logprobs[position])
        offsets.append(offset)
        offset += len(token)
        tops = completion.top_logprobs[position] if position < len(completion.top_logprobs) else ()
        alternatives.append({_token(tokenizer, i)[0]: lp for i, lp in tops})
    return TextLogprobs(
        tokens=tokens,
        token_logprobs=logprobs,
        top_logprobs=alternatives if top else None,
        text_offset=offsets,
    )


def _text_response(
    state: ServerState, adapter: str | None, body: CompletionRequest
) -> TextCompletion:
    completion = state.learner.complete(adapter, body.prompt_text, **body.sampling())
    state.metrics.observe_tokens(len(completion.prompt_ids), len(completion.response_ids))
    logprobs = None
    if body.logprobs is not None:
        logprobs = _text_logprobs(completion, state.learner.tokenizer, body.logprobs)
    return TextCompletion(
        id=completion.id,
        created=int(completion.created),
        model=body.model,
        choices=[
            TextChoice(
                text=completion.text, logprobs=logprobs, finish_reason=completion.finish_reason
            )
        ],
        usage=_usage(completion),
        system_fingerprint=fingerprint(completion.adapter_id, completion.adapter_version),
        adapter_version=completion.adapter_version,
    )


@router.post(
    "/v1/completions",
    response_model=TextCompletion,
    responses={200: _SSE},
    summary="Continue a raw prompt, no chat template (OpenAI-compatible)",
)
async def completions(
    body: CompletionRequest, state: State, caller: Caller
) -> TextCompletion | StreamingResponse:
    """Continue ``prompt``; with ``stream: true`` the whole text arrives as one event."""
    adapter = resolve_model(body.model, caller, state.settings)
    result = await run_in_threadpool(_text_response, state, adapter, body)
    if not body.stream:
        return result

    async def events() -> AsyncIterator[str]:
        data = result.model_dump()
        usage = data.pop("usage")
        yield _event(data)
        if body.stream_options is not None and body.stream_options.include_usage:
            yield _event({**data, "choices": [], "usage": usage})
        yield _event("[DONE]")

    return StreamingResponse(events(), media_type="text/event-stream")


def _models(state: ServerState, caller: Caller) -> ModelList:
    base = state.settings.base_model
    data = [ModelInfo(id=base, created=0, owned_by="claas")]
    for summary in state.learner.adapter_summaries(caller.namespaces):
        live, adapter_id = summary.live, summary.adapter_id
        if live is None:  # damaged: not servable, so not a model
            continue
        data.append(
            ModelInfo(
                id=adapter_id,
                created=int(live.created),
                owned_by=adapter_id.split("/", 1)[0],
                root=live.base_model,
                parent=live.base_model,
                version=live.version,
            )
        )
    return ModelList(data=data)


@router.get("/v1/models", response_model=ModelList, summary="The base model and adapters")
def list_models(state: State, caller: Caller) -> ModelList:
    """The base model and every adapter the key may use."""
    return _models(state, caller)


@router.get("/v1/models/{model:path}", response_model=ModelInfo, summary="One model")
def get_model(model: str, state: State, caller: Caller) -> ModelInfo:
    """The base model, or an adapter with its live version."""
    adapter = resolve_model(model, caller, state.settings)
    if adapter is None:
        return ModelInfo(id=state.settings.base_model, created=0, owned_by="claas")
    live = state.learner.current_version(adapter)
    return ModelInfo(
        id=adapter,
        created=int(live.created),
        owned_by=adapter.split("/", 1)[0],
        root=live.base_model,
        parent=live.base_model,
        version=live.version,
    )


def _finite(value: float) -> float | None:
    return value if math.isfinite(value) else None


def completion_record(
    completion: Completion, followups: Sequence[FollowUp] = ()
) -> CompletionRecord:
    """The JSON form of a recorded completion (with its follow-ups, when given)."""
    return CompletionRecord(
        id=completion.id,
        adapter_id=completion.adapter_id,
        adapter_version=completion.adapter_version,
        model=completion.model,
        messages=[m.to_dict() for m in completion.messages],
        prompt_ids=list(completion.prompt_ids),
        response_ids=list(completion.response_ids),
        response_logprobs=[_finite(lp) for lp in completion.response_logprobs],
        text=completion.text,
        raw_text=completion.raw_text,
        finish_reason=completion.finish_reason,
        created=completion.created,
        top_logprobs=[
            [(token, _finite(lp)) for token, lp in position] for position in completion.top_logprobs
        ],
        thinking=completion.thinking,
        followups=[FollowUpInfo(**f.to_dict()) for f in followups],
    )


@router.get(
    "/v1/chat/completions/{completion_id}",
    response_model=CompletionRecord,
    summary="A recorded completion with its exact tokens",
)
def get_chat_completion(completion_id: str, state: State, caller: Caller) -> CompletionRecord:
    """The completion ``id`` names, as recorded: prompt and response token ids, logprobs.

    A completion of an adapter needs a key that may use its namespace; one of the
    base model is readable by whoever knows its (unguessable) id, as feedback is.
    """
    completion = state.learner.get_completion(completion_id)
    if completion.adapter_id is not None:
        caller.require(completion.adapter_id)
    return completion_record(completion, state.learner.followups(completion_id=completion.id))
