"""What the vLLM backend asks the server and what it remembers, without I/O.

Each operation is a generator (a *flow*) that yields the HTTP calls it needs
(:class:`Call`) and is sent their answers (:class:`Reply`). A driver performs
the calls: ``httpx.Client`` in :class:`~claas.inference.vllm.VLLMInference`,
``httpx.AsyncClient`` in :class:`~claas.inference.vllm.AsyncVLLMClient`. So the
sync and async clients share every decision:

- each adapter version is served under its own name (:func:`lora_name`),
  loaded from its own version directory on first use or on ``publish``;
- at most ``Settings.vllm.max_loras`` names stay loaded: superseded versions
  are unloaded first, then the least recently used;
- a 404 for a name that should be loaded means vLLM restarted (or was told to
  forget it): the flow re-reads ``/v1/models``, loads the version again and
  retries once, so a restart costs one reload instead of a failed request;
- sleep mode is used only when the server reports it enabled.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Callable, Generator, Mapping, Sequence
from typing import Any, TypeVar

import attrs

from claas.config import Settings
from claas.errors import BackendUnavailable, InvalidRequest, PayloadTooLarge
from claas.inference._vllm_http import (
    base_model_id,
    chat_body,
    completion_body,
    error_message,
    http_error,
    lora_name,
    parse_chat,
    parse_completion,
    probe_body,
    prompt_logprobs_body,
    served_loras,
    teacher_lists,
    token_logprobs,
)
from claas.inference.base import Generation, TeacherTopKLists, check_generation_limits
from claas.teacher import DistillSample
from claas.tools import Tools
from claas.types import AdapterVersion, ChatMessage, SamplingParams

__all__ = ["Call", "Flow", "Reply", "VLLMCore"]

T = TypeVar("T")
CHAT = "/v1/chat/completions"
COMPLETIONS = "/v1/completions"


@attrs.frozen(kw_only=True)
class Call:
    """One HTTP request a flow needs; ``stream`` asks for the body as an open stream."""

    method: str
    path: str
    body: Mapping[str, Any] | None = None
    params: Mapping[str, Any] | None = None
    stream: bool = False


@attrs.frozen(kw_only=True)
class Reply:
    """The answer to a :class:`Call`: status, parsed JSON (or text), and an open stream.

    ``stream`` is the driver's open response for a successful streaming call
    (its body not yet read); ``None`` otherwise.
    """

    status: int
    body: Any = None
    stream: Any = None


Flow = Generator[Call, Reply, T]


def _ok(reply: Reply, action: str) -> Any:
    if 200 <= reply.status < 300:
        return reply.body
    raise http_error(reply.status, reply.body, action=action)


def _route_missing(reply: Reply) -> bool:
    # FastAPI's own 404 ({"detail": "Not Found"}) means the endpoint is not there at all.
    return reply.status == 404 and isinstance(reply.body, Mapping) and "detail" in reply.body


def _model_missing(reply: Reply) -> bool:
    return reply.status == 404 and not _route_missing(reply)


class VLLMCore:
    """The shared state and flows of one vLLM client.

    Args:
        settings: ``base_model`` (the served name to prefer),
            ``vllm.max_loras`` and the request limits.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()
        self._base: str | None = None
        self._loaded: OrderedDict[str, AdapterVersion] = OrderedDict()
        self._sleep_support: bool | None = None
        self._wake_pending = False

    def server_lost(self) -> None:
        """Forget what was learned about the server; it may come back restarted or different."""
        with self._lock:
            self._base = None
            self._sleep_support = None

    @property
    def loaded(self) -> list[str]:
        """Names of the versions believed loaded, least recently used first."""
        with self._lock:
            return list(self._loaded)

    # -- names and residency ----------------------------------------------------------

    def refresh(self) -> Flow[str]:
        """Re-read ``/v1/models``: the served base model, and which names vLLM still holds."""
        body = _ok((yield Call(method="GET", path="/v1/models")), "listing its models")
        base = base_model_id(body, self.settings.base_model)
        listed = served_loras(body)
        with self._lock:
            self._base = base
            for name in [n for n in self._loaded if n not in listed]:
                del self._loaded[name]
            self._sleep_support = None
        return base

    def model_for(self, version: AdapterVersion | None) -> Flow[str]:
        """The model name to send requests for ``version`` to, loading it if needed."""
        if version is None:
            with self._lock:
                base = self._base
            return base if base is not None else (yield from self.refresh())
        name = lora_name(version)
        with self._lock:
            if name in self._loaded:
                self._loaded.move_to_end(name)
                return name
        yield from self._load(version, name)
        return name

    def _load(self, version: AdapterVersion, name: str) -> Flow[None]:
        call = Call(
            method="POST",
            path="/v1/load_lora_adapter",
            body={"lora_name": name, "lora_path": version.path},
        )
        reply = yield call
        if reply.status == 400:
            # Already loaded, e.g. by another CLaaS process or a request that timed out here.
            models = _ok((yield Call(method="GET", path="/v1/models")), "listing its models")
            if served_loras(models).get(name) != version.path:
                raise self._load_error(version, reply)
        elif not 200 <= reply.status < 300:
            raise self._load_error(version, reply)
        with self._lock:
            self._loaded[name] = version
            self._loaded.move_to_end(name)
            victims = self._over_bound(keep=name)
        for victim in victims:
            yield from self._unload(victim)

    @staticmethod
    def _load_error(version: AdapterVersion, reply: Reply) -> BackendUnavailable:
        if _route_missing(reply):
            return BackendUnavailable(
                "vLLM does not load adapters at runtime; start it with --enable-lora and "
                "the environment variable VLLM_ALLOW_RUNTIME_LORA_UPDATING=True"
            )
        return BackendUnavailable(
            f"vLLM could not load {version.ref} from {version.path} (HTTP {reply.status}): "
            f"{error_message(reply.body)}; the server must be able to read the adapter store"
        )

    def _over_bound(self, *, keep: str) -> list[str]:
        """Forget the names beyond the bound (lock held): superseded versions first, then LRU."""
        excess = len(self._loaded) - self.settings.vllm.max_loras
        if excess <= 0:
            return []
        current: set[str] = set()
        seen: set[str] = set()
        for name, version in reversed(self._loaded.items()):
            if version.adapter_id not in seen:
                seen.add(version.adapter_id)
                current.add(name)
        order = [n for n in self._loaded if n not in current] + [
            n for n in self._loaded if n in current
        ]
        victims = [n for n in order if n != keep][:excess]
        for name in victims:
            del self._loaded[name]
        return victims

    def _unload(self, name: str) -> Flow[None]:
        reply = yield Call(method="POST", path="/v1/unload_lora_adapter", body={"lora_name": name})
        if reply.status != 404:  # already gone is what we wanted
            _ok(reply, f"unloading {name}")

    def retire(self, adapter_id: str) -> Flow[None]:
        """Unload every loaded version of ``adapter_id``."""
        with self._lock:
            names = [n for n, v in self._loaded.items() if v.adapter_id == adapter_id]
            for name in names:
                del self._loaded[name]
        for name in names:
            yield from self._unload(name)

    # -- requests to a model ----------------------------------------------------------

    def call_model(
        self, version: AdapterVersion | None, make: Callable[[str], Call], *, action: str
    ) -> Flow[Reply]:
        """Send ``make(model name)`` for ``version``; reload and retry once if vLLM forgot it."""
        if self._wake_pending:
            yield from self.wake()
        model = yield from self.model_for(version)
        reply = yield make(model)
        if _model_missing(reply):
            yield from self.refresh()
            model = yield from self.model_for(version)
            reply = yield make(model)
            if _model_missing(reply):
                raise BackendUnavailable(
                    f"vLLM does not serve {model!r} even after loading it again: "
                    f"{error_message(reply.body)}"
                )
        _ok(reply, action)
        return reply

    def _check(self, sampling: SamplingParams) -> None:
        check_generation_limits(self.settings, sampling)

    def generate(
        self,
        messages: Sequence[ChatMessage],
        adapter: AdapterVersion | None,
        sampling: SamplingParams,
        *,
        thinking: bool,
        stream: bool = False,
        tools: Tools | None = None,
    ) -> Flow[Reply]:
        """A chat completion; parse ``reply.body`` with ``parse_chat`` or read ``reply.stream``."""
        self._check(sampling)

        def make(model: str) -> Call:
            body = chat_body(
                model, messages, sampling, thinking=thinking, stream=stream, tools=tools
            )
            return Call(method="POST", path=CHAT, body=body, stream=stream)

        return (yield from self.call_model(adapter, make, action="a chat completion"))

    def chat(
        self,
        messages: Sequence[ChatMessage],
        adapter: AdapterVersion | None,
        sampling: SamplingParams,
        *,
        thinking: bool,
        tools: Tools | None = None,
    ) -> Flow[Generation]:
        """A chat completion with exact prompt ids, response ids and logprobs."""
        reply = yield from self.generate(
            messages, adapter, sampling, thinking=thinking, tools=tools
        )
        return parse_chat(reply.body, want_tops=sampling.top_logprobs > 0)

    def complete(
        self, prompt: str, adapter: AdapterVersion | None, sampling: SamplingParams
    ) -> Flow[Generation]:
        """Continue a raw text prompt (vLLM tokenizes it and returns the ids)."""
        if not isinstance(prompt, str) or not prompt:
            raise InvalidRequest("prompt must be a non-empty string")
        self._check(sampling)

        def make(model: str) -> Call:
            body = completion_body(model, prompt, sampling)
            return Call(method="POST", path=COMPLETIONS, body=body)

        reply = yield from self.call_model(adapter, make, action="a completion")
        return parse_completion(reply.body, want_tops=sampling.top_logprobs > 0)

    def score(
        self, prompt_ids: Sequence[int], response_ids: Sequence[int], adapter: AdapterVersion | None
    ) -> Flow[list[float]]:
        """Logprob of each response token after the prompt, under ``adapter``."""
        if not response_ids or not prompt_ids:
            raise InvalidRequest("nothing to score: prompt and response need tokens")
        sequence = [*prompt_ids, *response_ids]

        def make(model: str) -> Call:
            body = prompt_logprobs_body(model, [sequence], 0)
            return Call(method="POST", path=COMPLETIONS, body=body)

        reply = yield from self.call_model(adapter, make, action="scoring")
        choice = reply.body["choices"][0]
        return token_logprobs(
            choice.get("prompt_logprobs"), prompt_len=len(prompt_ids), response_ids=response_ids
        )

    def teacher_topk(
        self, samples: Sequence[DistillSample], k: int
    ) -> Flow[list[TeacherTopKLists]]:
        """The base model's top-``k`` at each response position of each teacher sequence."""
        if not samples:
            return []

        def make(model: str) -> Call:
            body = prompt_logprobs_body(model, [s.teacher_ids for s in samples], k)
            return Call(method="POST", path=COMPLETIONS, body=body)

        try:
            reply = yield from self.call_model(None, make, action=f"teacher top-{k} logprobs")
        except PayloadTooLarge:
            raise
        except InvalidRequest as exc:
            raise InvalidRequest(
                f"{exc}; vLLM must be started with --max-logprobs >= DistillConfig.top_k ({k})"
            ) from exc
        choices = sorted(reply.body["choices"], key=lambda c: int(c["index"]))
        return [
            teacher_lists(
                choice.get("prompt_logprobs"),
                prompt_len=sample.teacher_prompt_len,
                response_ids=sample.response_ids,
                k=k,
            )
            for choice, sample in zip(choices, samples, strict=True)
        ]

    def publish(self, version: AdapterVersion) -> Flow[None]:
        """Load ``version`` (if needed) and return once a request to it has been answered."""

        def make(model: str) -> Call:
            return Call(method="POST", path=COMPLETIONS, body=probe_body(model))

        yield from self.call_model(version, make, action=f"serving {version.ref}")

    # -- sleep mode -------------------------------------------------------------------

    def sleep_supported(self) -> Flow[bool]:
        """Whether the server has sleep mode enabled (dev endpoints and ``--enable-sleep-mode``)."""
        if self._sleep_support is None:
            supported = False
            if (yield Call(method="GET", path="/is_sleeping")).status == 200:
                info = yield Call(
                    method="GET", path="/server_info", params={"config_format": "json"}
                )
                config = (_ok(info, "describing its configuration") or {}).get("vllm_config")
                model_config = config.get("model_config") if isinstance(config, Mapping) else None
                supported = isinstance(model_config, Mapping) and bool(
                    model_config.get("enable_sleep_mode")
                )
            self._sleep_support = supported
        return self._sleep_support

    def sleep(self) -> Flow[bool]:
        """Put vLLM to sleep (level 1, after running requests finish) if it supports it."""
        if not (yield from self.sleep_supported()):
            return False
        call = Call(method="POST", path="/sleep", params={"level": 1, "mode": "wait"})
        _ok((yield call), "going to sleep")
        return True

    def wake(self) -> Flow[None]:
        """Wake vLLM up; if that fails, the next request tries again first."""
        self._wake_pending = True
        _ok((yield Call(method="POST", path="/wake_up")), "waking up")
        self._wake_pending = False
