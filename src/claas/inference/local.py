"""Local inference with transformers + peft (CPU or GPU).

The base model is loaded once. Adapter versions are loaded into one
``PeftModel``, in a bounded set of slots that a new version of the same LoRA
shape reuses by copying its weights in (see ``_lora_slots``). Generation is a
plain KV-cached decode loop that records the untempered logprob of every
sampled token.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator, Sequence
from typing import TYPE_CHECKING, Any

from claas.config import Settings
from claas.errors import InvalidRequest
from claas.inference._bf16_weights import BFloat16Weights
from claas.inference._lora_slots import LoraSlots
from claas.inference._packed_attention import install_packed_attention
from claas.inference._settled import Settled
from claas.inference.base import (
    Generation,
    StreamDelta,
    check_generation_limits,
    check_score_limits,
)
from claas.models import (
    autocast_context,
    load_model,
    load_tokenizer,
    resolve_device,
)
from claas.precision import autocast_choice
from claas.teacher import encode_chat
from claas.tools import Tools, check_renderable
from claas.types import AdapterVersion, ChatMessage, SamplingParams

if TYPE_CHECKING:
    import torch

__all__ = ["LocalInference"]


class LocalInference:
    """Serve chats from an in-process transformers model.

    Args:
        settings: Model name, device, dtype, cache size and limits.
        model: An already loaded base model to use instead of loading one (from
            ``load_model(..., autocast=inference.autocast.enabled)``).
        tokenizer: Its tokenizer.

    Attributes:
        autocast: Whether it computes under bfloat16 autocast, resolved from
            ``settings.autocast`` for its device.
        check_autocast: The same for the batched greedy checks (``answer_batch``,
            ``score_batch``, ``answer_batch_from_drafts``: the guard's); where it
            is on and chats decode in float32, they run with bfloat16 copies of
            the frozen linear weights (``_bf16_weights``).
    """

    name = "local"

    def __init__(self, settings: Settings, *, model: Any = None, tokenizer: Any = None) -> None:
        self.settings = settings
        self._model = model
        self._tokenizer = tokenizer
        self._lock = threading.RLock()
        self._device = resolve_device(settings.device)
        self.autocast = autocast_choice(settings.autocast, self._device, purpose="inference")
        self.check_autocast = autocast_choice(settings.autocast, self._device, purpose="checks")
        self._bf16 = BFloat16Weights()
        self._slots = LoraSlots(self._base, settings.adapter_cache_size, self._device)

    @property
    def tokenizer(self) -> Any:
        """The base model's tokenizer (loaded on first use)."""
        if self._tokenizer is None:
            with self._lock:
                if self._tokenizer is None:
                    self._tokenizer = load_tokenizer(
                        self.settings.base_model, models_dir=self.settings.models_dir
                    )
        return self._tokenizer

    def _base(self) -> Any:
        if self._model is None:
            self._model = load_model(
                self.settings.base_model,
                models_dir=self.settings.models_dir,
                device=self._device,
                dtype=self.settings.dtype,
                autocast=self.autocast.enabled,
            )
            install_packed_attention(self._model)
        return self._model

    @contextlib.contextmanager
    def _using(self, adapter: AdapterVersion | None) -> Iterator[Any]:
        """Hold the model lock with ``adapter`` active (or every adapter disabled)."""
        with self._lock:
            base = self._base()
            peft = self._slots.model
            if adapter is None:
                if peft is None:
                    yield base
                else:
                    with peft.disable_adapter():
                        yield peft
                return
            name = self._slots.load(adapter)
            if self._slots.model.active_adapter != name:
                self._slots.activate(name)
            yield self._slots.model

    @contextlib.contextmanager
    def _checking(self, adapter: AdapterVersion | None) -> Iterator[Any]:
        """:meth:`_using`, with bfloat16 linear weights where checks compute in bfloat16."""
        with self._using(adapter) as model:
            if not self.check_autocast.enabled:
                yield model
                return
            with self._bf16.swapped_in(model):
                yield model

    def publish(self, version: AdapterVersion) -> None:
        """Load ``version`` now so the next chat is served by it without delay.

        It supersedes its adapter's earlier versions: one of their slots takes it.
        """
        with self._lock:
            self._slots.load(version, supersedes=True)

    def prepare(self, version: AdapterVersion) -> None:
        """Load ``version`` into a slot of its own, superseding nothing (a candidate
        not live yet, such as the guard's); its first answers then need no load, and
        if it goes live :meth:`publish` finds it loaded."""
        with self._lock:
            self._slots.load(version)

    def retire(self, adapter_id: str) -> None:
        """Unload every cached version of ``adapter_id`` (their slots are reused first)."""
        with self._lock:
            self._slots.free(adapter_id)

    def close(self) -> None:
        """Drop the model and adapters."""
        with self._lock:
            self._model = None
            self._slots.clear()
            self._bf16 = BFloat16Weights()

    def _check_prompt(self, prompt_ids: Sequence[int], sampling: SamplingParams) -> None:
        check_generation_limits(self.settings, sampling, prompt_ids)

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        adapter: AdapterVersion | None,
        sampling: SamplingParams,
        thinking: bool = False,
        tools: Tools | None = None,
    ) -> Generation:
        """Generate a full response (see ``InferenceBackend.generate``)."""
        *_, last = self.stream(
            messages, adapter=adapter, sampling=sampling, thinking=thinking, tools=tools
        )
        assert last.generation is not None
        return last.generation

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        adapter: AdapterVersion | None,
        sampling: SamplingParams,
        thinking: bool = False,
        tools: Tools | None = None,
    ) -> Iterator[StreamDelta]:
        """Generate token by token (see ``InferenceBackend.stream``).

        ``tools`` are rendered by the base model's chat template; the answer is the
        model's raw text (this backend parses no tool calls).
        """
        check_renderable(tools, self.tokenizer, self.name, self.settings.base_model)
        prompt_ids = encode_chat(self.tokenizer, messages, thinking=thinking, tools=tools)
        self._check_prompt(prompt_ids, sampling)
        return self._stream_ids(prompt_ids, adapter, sampling)

    def complete(
        self, prompt: str, *, adapter: AdapterVersion | None, sampling: SamplingParams
    ) -> Generation:
        """Continue a raw text prompt."""
        if not isinstance(prompt, str) or not prompt:
            raise InvalidRequest("prompt must be a non-empty string")
        prompt_ids = [int(i) for i in self.tokenizer.encode(prompt)]
        self._check_prompt(prompt_ids, sampling)
        *_, last = self._stream_ids(prompt_ids, adapter, sampling)
        assert last.generation is not None
        return last.generation

    def _stream_ids(
        self, prompt_ids: list[int], adapter: AdapterVersion | None, sampling: SamplingParams
    ) -> Iterator[StreamDelta]:
        from claas.inference._decode import decode_tokens, eos_token_ids

        tokenizer = self.tokenizer
        eos_ids = eos_token_ids(tokenizer, self._base())
        with self._using(adapter) as model:
            yield from decode_tokens(
                model,
                tokenizer,
                prompt_ids,
                sampling,
                eos_ids=eos_ids,
                device=self._device,
                autocast=self.autocast.enabled,
            )

    def answer_batch(
        self, prompts: Sequence[Sequence[int]], *, adapter: AdapterVersion | None, max_tokens: int
    ) -> list[tuple[list[int], list[float]]]:
        """Greedy answers to several encoded prompts at once: token ids and logprobs each."""
        from claas.inference._batch_decode import greedy_batch
        from claas.inference._decode import eos_token_ids

        eos_ids = eos_token_ids(self.tokenizer, self._base())
        with self._checking(adapter) as model:
            return greedy_batch(
                model,
                prompts,
                max_tokens=max_tokens,
                eos_ids=eos_ids,
                pad_id=self._pad_id(),
                device=self._device,
                autocast=self.check_autocast.enabled,
            )

    def score_batch(
        self,
        pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
        *,
        adapter: AdapterVersion | None,
    ) -> list[list[float]]:
        """Logprobs of several (prompt, response) pairs in one forward pass."""
        from claas.inference._batch_decode import score_batch

        with self._checking(adapter) as model:
            return score_batch(
                model,
                pairs,
                device=self._device,
                autocast=self.check_autocast.enabled,
            )

    def answer_batch_from_drafts(
        self,
        prompts: Sequence[Sequence[int]],
        drafts: Sequence[Sequence[int]],
        *,
        adapter: AdapterVersion | None,
        max_tokens: int,
        lookup: Sequence[Sequence[Sequence[int]]] = (),
        settled: Sequence[Settled | None] = (),
    ) -> list[tuple[list[int], list[float]]]:
        """:meth:`answer_batch`, checking a draft answer per prompt before decoding.

        Where a draft is the adapter's own greedy answer it is taken after one
        scoring pass; elsewhere decoding goes on from the first token that differs,
        guessing ahead from the draft, from ``lookup`` (other known answers per
        prompt) and from the prompt. An answer ends early at the fewest tokens its
        ``settled`` rule (per prompt, optional) accepts.
        """
        from claas.inference._batch_decode import greedy_from_drafts
        from claas.inference._decode import eos_token_ids

        eos_ids = eos_token_ids(self.tokenizer, self._base())
        with self._checking(adapter) as model:
            return greedy_from_drafts(
                model,
                prompts,
                drafts,
                max_tokens=max_tokens,
                eos_ids=eos_ids,
                device=self._device,
                autocast=self.check_autocast.enabled,
                lookup=lookup,
                settled=settled,
            )

    def _pad_id(self) -> int:
        pad = self.tokenizer.pad_token_id
        return int(pad if pad is not None else self.tokenizer.eos_token_id)

    def score(
        self,
        prompt_ids: Sequence[int],
        response_ids: Sequence[int],
        *,
        adapter: AdapterVersion | None,
    ) -> list[float]:
        """Logprob of each response token given the prompt (teacher forcing)."""
        import torch

        check_score_limits(self.settings, prompt_ids, response_ids)
        ids = torch.tensor([[*prompt_ids, *response_ids]], device=self._device)
        autocast = autocast_context(self._device, self.autocast.enabled)
        with self._using(adapter) as model, torch.inference_mode(), autocast:
            logits = model(input_ids=ids).logits[0, len(prompt_ids) - 1 : -1].float()
        logprobs = _token_logprobs(logits, ids[0, len(prompt_ids) :])
        return [float(x) for x in logprobs]


def _token_logprobs(logits_TV: torch.Tensor, ids_T: torch.Tensor) -> torch.Tensor:
    import torch

    return torch.log_softmax(logits_TV, dim=-1).gather(-1, ids_T[:, None])[:, 0]
