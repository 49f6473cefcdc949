"""The vLLM backend: chats, scoring and teacher logprobs from a running vLLM server.

CLaaS only talks to vLLM over HTTP; it never starts, stops or restarts it.
Start the server yourself, for example::

    VLLM_ALLOW_RUNTIME_LORA_UPDATING=True python -m vllm.entrypoints.openai.api_server \\
        --model MODEL_DIR --served-model-name NAME --enable-lora --max-lora-rank 64 \\
        --max-loras 4 --max-logprobs 100

and set ``Settings.load(inference_backend="vllm", vllm_url="http://host:8000")``
(``settings.vllm.url``; ``CLAAS_VLLM_URL``).
Requests for the base model go to the served base model named like
``Settings.base_model`` (so ``--served-model-name`` should be that name), or
to the only base model the server serves. Each adapter version is loaded from
its version directory, which the server must be able to read, under a name of
its own (see :func:`claas.inference._vllm_http.lora_name`).

Connection errors are retried a few times with backoff, then raised as
:class:`~claas.errors.BackendUnavailable`, as are timeouts and server errors.
:class:`VLLMInference` is the synchronous backend the ``Learner`` uses;
:class:`AsyncVLLMClient` offers the same operations to asyncio code.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import AsyncIterator, Iterator, Sequence
from typing import Any, TypeVar

from claas.config import Settings
from claas.errors import BackendUnavailable, InvalidConfig, missing_extra
from claas.inference._vllm_core import Call, Flow, Reply, VLLMCore
from claas.inference._vllm_http import ChatStreamParser, lora_name, sse_data
from claas.inference.base import Generation, StreamDelta, TeacherTopKLists
from claas.teacher import DistillSample
from claas.tools import Tools
from claas.types import AdapterVersion, ChatMessage, SamplingParams

try:
    import httpx
except ImportError as exc:  # pragma: no cover - depends on the installed extras
    raise missing_extra("httpx", "vllm") from exc

__all__ = ["AsyncVLLMClient", "VLLMInference"]

log = logging.getLogger("claas.inference.vllm")
T = TypeVar("T")

RETRIES = 3
BACKOFF_SECONDS = 0.25
# Failures before any answer. Repeating is safe: generating and scoring change nothing,
# and loading a name that is already loaded is recognised as done.
_RETRIED = (httpx.ConnectError, httpx.ConnectTimeout, httpx.RemoteProtocolError)


def _client_options(settings: Settings) -> dict[str, Any]:
    vllm = settings.vllm
    if not vllm.url:
        raise InvalidConfig(
            "Settings.vllm.url is required by the vllm backend (e.g. CLAAS_VLLM_URL="
            "http://127.0.0.1:8000)"
        )
    headers = {"Authorization": f"Bearer {vllm.api_key}"} if vllm.api_key else {}
    timeout = httpx.Timeout(vllm.timeout, connect=min(vllm.timeout, 10.0))
    return {"base_url": vllm.url.rstrip("/"), "headers": headers, "timeout": timeout}


def _transport_error(settings: Settings, call: Call, exc: httpx.TransportError) -> Exception:
    where = f"{settings.vllm.url}{call.path}"
    if isinstance(exc, httpx.TimeoutException) and not isinstance(exc, httpx.ConnectTimeout):
        return BackendUnavailable(
            f"vLLM at {where} did not answer within {settings.vllm.timeout:g} s "
            "(Settings.vllm.timeout)"
        )
    return BackendUnavailable(f"vLLM at {where} is unreachable: {type(exc).__name__}: {exc}")


def _body(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return response.text


def _sleep_wanted(settings: Settings) -> bool:
    return settings.vllm.sleep_during_training and settings.training_engine == "local"


class VLLMInference:
    """Serve chats from a running vLLM server (the ``vllm`` inference backend).

    Args:
        settings: ``vllm`` (url, api_key, timeout, max_loras),
            ``base_model`` and the request limits.
        transport: An httpx transport to use instead of the network (tests).
        retries: Extra attempts after a connection error.
        backoff: Seconds before the first retry; doubled for each next one.

    Raises:
        InvalidConfig: If ``settings.vllm.url`` is not set.
    """

    name = "vllm"

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.BaseTransport | None = None,
        retries: int = RETRIES,
        backoff: float = BACKOFF_SECONDS,
    ) -> None:
        self.settings = settings
        self._client = httpx.Client(**_client_options(settings), transport=transport)
        self._core = VLLMCore(settings)
        self._retries = retries
        self._backoff = backoff

    @staticmethod
    def lora_name(version: AdapterVersion) -> str:
        """The name ``version`` is served under in vLLM."""
        return lora_name(version)

    @property
    def loaded(self) -> list[str]:
        """Names of the adapter versions loaded by this client, least recently used first."""
        return self._core.loaded

    # -- driving the flows ------------------------------------------------------------

    def _run(self, flow: Flow[T]) -> T:
        try:
            call = next(flow)
            while True:
                call = flow.send(self._send(call))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    def _send(self, call: Call) -> Reply:
        request = self._client.build_request(
            call.method, call.path, json=call.body, params=call.params
        )
        attempt = 0
        while True:
            try:
                response = self._client.send(request, stream=call.stream)
            except _RETRIED as exc:
                if attempt >= self._retries:
                    self._core.server_lost()
                    raise _transport_error(self.settings, call, exc) from exc
                time.sleep(self._backoff * 2**attempt)
                attempt += 1
                continue
            except httpx.TransportError as exc:
                self._core.server_lost()
                raise _transport_error(self.settings, call, exc) from exc
            if call.stream and response.status_code == 200:
                return Reply(status=200, stream=response)
            try:
                response.read()
            finally:
                response.close()
            return Reply(status=response.status_code, body=_body(response))

    # -- InferenceBackend ----------------------------------------------------------------

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        adapter: AdapterVersion | None,
        sampling: SamplingParams,
        thinking: bool = False,
        tools: Tools | None = None,
    ) -> Generation:
        """Generate one response with the exact prompt ids, response ids and logprobs."""
        return self._run(
            self._core.chat(messages, adapter, sampling, thinking=thinking, tools=tools)
        )

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        adapter: AdapterVersion | None,
        sampling: SamplingParams,
        thinking: bool = False,
        tools: Tools | None = None,
    ) -> Iterator[StreamDelta]:
        """Open a streamed chat now (errors raise here); iterate for the deltas."""
        flow = self._core.generate(
            messages, adapter, sampling, thinking=thinking, stream=True, tools=tools
        )
        reply = self._run(flow)
        return self._deltas(reply.stream, ChatStreamParser(want_tops=sampling.top_logprobs > 0))

    def _deltas(self, response: httpx.Response, parser: ChatStreamParser) -> Iterator[StreamDelta]:
        try:
            for line in response.iter_lines():
                chunk = sse_data(line)
                delta = parser.feed(chunk) if chunk is not None else None
                if delta is not None:
                    yield delta
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"the vLLM stream broke off: {exc}") from exc
        finally:
            response.close()
        yield StreamDelta(text="", generation=parser.result())

    def complete(
        self, prompt: str, *, adapter: AdapterVersion | None, sampling: SamplingParams
    ) -> Generation:
        """Continue a raw text prompt (no chat template)."""
        return self._run(self._core.complete(prompt, adapter, sampling))

    def score(
        self,
        prompt_ids: Sequence[int],
        response_ids: Sequence[int],
        *,
        adapter: AdapterVersion | None,
    ) -> list[float]:
        """Logprob of each response token given the prompt (vLLM prompt logprobs)."""
        return self._run(self._core.score(prompt_ids, response_ids, adapter))

    def teacher_topk(self, samples: Sequence[DistillSample], *, k: int) -> list[TeacherTopKLists]:
        """The served base model's top-``k`` logprobs at each sample's response positions.

        Used by the learner when ``DistillConfig.teacher == "remote"``; vLLM
        must allow ``k`` logprobs (``--max-logprobs``).
        """
        return self._run(self._core.teacher_topk(samples, k))

    def publish(self, version: AdapterVersion) -> None:
        """Load ``version`` under its own name; return once it has answered a request."""
        self._run(self._core.publish(version))

    def retire(self, adapter_id: str) -> None:
        """Unload every version of ``adapter_id`` (a down server is left to forget them)."""
        try:
            self._run(self._core.retire(adapter_id))
        except BackendUnavailable as exc:
            log.warning("could not unload %s from vLLM: %s", adapter_id, exc)

    def close(self) -> None:
        """Close the HTTP connections (the server keeps running)."""
        self._client.close()

    def __enter__(self) -> VLLMInference:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- sleep mode ----------------------------------------------------------------------

    def sleep_supported(self) -> bool:
        """Whether the server reports sleep mode enabled (GPU servers started for it)."""
        return self._run(self._core.sleep_supported())

    @contextlib.contextmanager
    def training_window(self) -> Iterator[None]:
        """Let vLLM sleep while a local training step runs, if configured and supported.

        Only with ``Settings.vllm.sleep_during_training``, the ``local``
        training engine and a server that reports sleep mode enabled; otherwise
        nothing is sent. Requests to vLLM fail while it sleeps. A failed sleep
        or wake-up never fails the training step: a pending wake-up is retried
        before the next request.
        """
        slept = False
        if _sleep_wanted(self.settings):
            try:
                slept = self._run(self._core.sleep())
            except BackendUnavailable as exc:
                log.warning("vLLM did not go to sleep for training: %s", exc)
        try:
            yield
        finally:
            if slept:
                try:
                    self._run(self._core.wake())
                except BackendUnavailable as exc:
                    log.warning("vLLM did not wake up after training; will retry: %s", exc)


class AsyncVLLMClient:
    """The vLLM backend's operations for asyncio code (same arguments, awaited).

    Shares every decision with :class:`VLLMInference` (naming, loading,
    reloading after a restart, retries) but keeps its own record of loaded
    versions. Use ``async with AsyncVLLMClient(settings) as client``.
    """

    name = "vllm"

    def __init__(
        self,
        settings: Settings,
        *,
        transport: httpx.AsyncBaseTransport | None = None,
        retries: int = RETRIES,
        backoff: float = BACKOFF_SECONDS,
    ) -> None:
        self.settings = settings
        self._client = httpx.AsyncClient(**_client_options(settings), transport=transport)
        self._core = VLLMCore(settings)
        self._retries = retries
        self._backoff = backoff

    async def _run(self, flow: Flow[T]) -> T:
        try:
            call = next(flow)
            while True:
                call = flow.send(await self._send(call))
        except StopIteration as done:
            return done.value  # type: ignore[no-any-return]

    async def _send(self, call: Call) -> Reply:
        request = self._client.build_request(
            call.method, call.path, json=call.body, params=call.params
        )
        attempt = 0
        while True:
            try:
                response = await self._client.send(request, stream=call.stream)
            except _RETRIED as exc:
                if attempt >= self._retries:
                    self._core.server_lost()
                    raise _transport_error(self.settings, call, exc) from exc
                await asyncio.sleep(self._backoff * 2**attempt)
                attempt += 1
                continue
            except httpx.TransportError as exc:
                self._core.server_lost()
                raise _transport_error(self.settings, call, exc) from exc
            if call.stream and response.status_code == 200:
                return Reply(status=200, stream=response)
            try:
                await response.aread()
            finally:
                await response.aclose()
            return Reply(status=response.status_code, body=_body(response))

    async def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        adapter: AdapterVersion | None,
        sampling: SamplingParams,
        thinking: bool = False,
        tools: Tools | None = None,
    ) -> Generation:
        """See :meth:`VLLMInference.generate`."""
        return await self._run(
            self._core.chat(messages, adapter, sampling, thinking=thinking, tools=tools)
        )

    async def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        adapter: AdapterVersion | None,
        sampling: SamplingParams,
        thinking: bool = False,
        tools: Tools | None = None,
    ) -> AsyncIterator[StreamDelta]:
        """Open a streamed chat (errors raise here); ``async for`` over the result."""
        flow = self._core.generate(
            messages, adapter, sampling, thinking=thinking, stream=True, tools=tools
        )
        reply = await self._run(flow)
        return self._deltas(reply.stream, ChatStreamParser(want_tops=sampling.top_logprobs > 0))

    async def _deltas(
        self, response: httpx.Response, parser: ChatStreamParser
    ) -> AsyncIterator[StreamDelta]:
        try:
            async for line in response.aiter_lines():
                chunk = sse_data(line)
                delta = parser.feed(chunk) if chunk is not None else None
                if delta is not None:
                    yield delta
        except httpx.TransportError as exc:
            raise BackendUnavailable(f"the vLLM stream broke off: {exc}") from exc
        finally:
            await response.aclose()
        yield StreamDelta(text="", generation=parser.result())

    async def complete(
        self, prompt: str, *, adapter: AdapterVersion | None, sampling: SamplingParams
    ) -> Generation:
        """See :meth:`VLLMInference.complete`."""
        return await self._run(self._core.complete(prompt, adapter, sampling))

    async def score(
        self,
        prompt_ids: Sequence[int],
        response_ids: Sequence[int],
        *,
        adapter: AdapterVersion | None,
    ) -> list[float]:
        """See :meth:`VLLMInference.score`."""
        return await self._run(self._core.score(prompt_ids, response_ids, adapter))

    async def teacher_topk(
        self, samples: Sequence[DistillSample], *, k: int
    ) -> list[TeacherTopKLists]:
        """See :meth:`VLLMInference.teacher_topk`."""
        return await self._run(self._core.teacher_topk(samples, k))

    async def publish(self, version: AdapterVersion) -> None:
        """See :meth:`VLLMInference.publish`."""
        await self._run(self._core.publish(version))

    async def retire(self, adapter_id: str) -> None:
        """See :meth:`VLLMInference.retire`."""
        try:
            await self._run(self._core.retire(adapter_id))
        except BackendUnavailable as exc:
            log.warning("could not unload %s from vLLM: %s", adapter_id, exc)

    async def sleep_supported(self) -> bool:
        """See :meth:`VLLMInference.sleep_supported`."""
        return await self._run(self._core.sleep_supported())

    async def aclose(self) -> None:
        """Close the HTTP connections (the server keeps running)."""
        await self._client.aclose()

    async def __aenter__(self) -> AsyncVLLMClient:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()
