"""Inference on Tinker: chats sampled from a version's sampler weights on the service.

A version trained by the Tinker engine names its sampler weights in
``tinker.json``; version 0 (a fresh LoRA, equal to the base model) and the bare
base model are sampled as the base model. The tokenizer is the base model's
(:func:`claas.models.load_tokenizer`), so prompt and response ids are exact.
Tinker does not stream: ``stream`` yields the whole answer as one delta.
"""

from __future__ import annotations

import threading
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from claas._tinker import TinkerCheckpoint, import_tinker, sample_teacher, service_call
from claas.config import Settings
from claas.errors import BackendUnavailable, InvalidRequest
from claas.inference.base import (
    Generation,
    StreamDelta,
    TeacherTopKLists,
    check_generation_limits,
    check_score_limits,
)
from claas.teacher import DistillSample, encode_chat
from claas.tools import Tools, check_renderable
from claas.types import AdapterVersion, ChatMessage, SamplingParams

__all__ = ["TinkerInference"]


class TinkerInference:
    """Serve chats from Tinker sampling clients.

    Args:
        settings: ``base_model`` (the Tinker model name), limits and the number
            of sampling clients kept (``adapter_cache_size``).
        service: A ``tinker.ServiceClient`` (or a stand-in with its methods).
        tokenizer: The base model's tokenizer, if already loaded.

    Raises:
        MissingDependency: If the ``tinker`` extra is not installed.
    """

    name = "tinker"

    def __init__(self, settings: Settings, *, service: Any = None, tokenizer: Any = None) -> None:
        self._tinker = import_tinker()
        self.settings = settings
        self._service = service
        self._tokenizer = tokenizer
        self._samplers: OrderedDict[str, tuple[str | None, Any]] = OrderedDict()
        self._lock = threading.Lock()

    @property
    def service(self) -> Any:
        """The Tinker service client (created on first use; reads ``TINKER_API_KEY``)."""
        with self._lock:
            if self._service is None:
                with service_call("connecting", BackendUnavailable):
                    self._service = self._tinker.ServiceClient()
            return self._service

    @property
    def tokenizer(self) -> Any:
        """The base model's tokenizer (loaded on first use)."""
        if self._tokenizer is None:
            from claas.models import load_tokenizer

            self._tokenizer = load_tokenizer(
                self.settings.base_model, models_dir=self.settings.models_dir
            )
        return self._tokenizer

    def _sampler(self, adapter: AdapterVersion | None) -> Any:
        """The sampling client serving ``adapter`` (None: the base model)."""
        path = None
        if adapter is not None:
            path = TinkerCheckpoint.read(Path(adapter.path)).sampler_path
        key = path or f"base:{self.settings.base_model}"
        with self._lock:
            if key in self._samplers:
                self._samplers.move_to_end(key)
                return self._samplers[key][1]
        with service_call("creating a sampling client", BackendUnavailable):
            if path is None:
                future = self.service.create_sampling_client(base_model=self.settings.base_model)
            else:
                future = self.service.create_sampling_client(model_path=path)
            sampler = future.result()
        with self._lock:
            self._samplers[key] = (adapter.adapter_id if adapter else None, sampler)
            while len(self._samplers) > self.settings.adapter_cache_size:
                self._samplers.popitem(last=False)
        return sampler

    def _check(self, prompt_ids: Sequence[int], sampling: SamplingParams) -> None:
        check_generation_limits(self.settings, sampling, prompt_ids)

    def _generate(
        self, prompt_ids: list[int], adapter: AdapterVersion | None, sampling: SamplingParams
    ) -> Generation:
        self._check(prompt_ids, sampling)
        sampler = self._sampler(adapter)
        with service_call("sampling", BackendUnavailable):
            response = self._submit(sampler, prompt_ids, sampling).result()
            sequence = response.sequences[0]
            ids = [int(t) for t in sequence.tokens]
            logprobs = sequence.logprobs
            if logprobs is None:
                logprobs = self._score_with(sampler, prompt_ids, ids)
        tops: tuple[tuple[tuple[int, float], ...], ...] = ()
        if sampling.top_logprobs and sequence.topk_logprobs is not None:
            tops = tuple(
                tuple((int(i), float(lp)) for i, lp in row or ()) for row in sequence.topk_logprobs
            )
        return Generation(
            prompt_ids=tuple(prompt_ids),
            response_ids=tuple(ids),
            response_logprobs=tuple(float(lp) for lp in logprobs),
            raw_text=self.tokenizer.decode(ids, skip_special_tokens=True),
            finish_reason="stop" if sequence.stop_reason == "stop" else "length",
            top_logprobs=tops,
        )

    def _submit(self, sampler: Any, prompt_ids: Sequence[int], sampling: SamplingParams) -> Any:
        """Send one sampling request; returns its future (nothing waits for it here)."""
        types = self._tinker.types
        params = types.SamplingParams(
            max_tokens=sampling.max_tokens,
            temperature=sampling.temperature,
            top_p=sampling.top_p,
            top_k=sampling.top_k if sampling.top_k > 0 else -1,
            seed=sampling.seed,
            stop=list(sampling.stop) or None,
        )
        return sampler.sample(
            prompt=types.ModelInput.from_ints(list(prompt_ids)),
            num_samples=1,
            sampling_params=params,
            topk_sample_logprobs=sampling.top_logprobs,
        )

    def answer_batch(
        self, prompts: Sequence[Sequence[int]], *, adapter: AdapterVersion | None, max_tokens: int
    ) -> list[tuple[list[int], list[float]]]:
        """Greedy answers to several encoded prompts: token ids and logprobs each.

        Every request is sent before any is waited for, so the service samples them
        together and a batch (the guard's probes) costs about one round trip, not one
        per prompt.
        """
        greedy = SamplingParams(temperature=0.0, max_tokens=max_tokens, seed=0)
        for prompt in prompts:
            self._check(list(prompt), greedy)
        sampler = self._sampler(adapter)
        with service_call("sampling", BackendUnavailable):
            futures = [self._submit(sampler, prompt, greedy) for prompt in prompts]
            sequences = [future.result().sequences[0] for future in futures]
            answers = [[int(t) for t in sequence.tokens] for sequence in sequences]
            missing = [
                (i, self._score_future(sampler, prompts[i], answers[i]))
                for i, sequence in enumerate(sequences)
                if sequence.logprobs is None
            ]
            logprobs = [sequence.logprobs for sequence in sequences]
            for i, future in missing:
                logprobs[i] = self._read_scores(future.result(), len(prompts[i]))
        return [
            (ids, [float(lp) for lp in lps]) for ids, lps in zip(answers, logprobs, strict=True)
        ]

    def score_batch(
        self,
        pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
        *,
        adapter: AdapterVersion | None,
    ) -> list[list[float]]:
        """Logprobs of several (prompt, response) pairs, all requests sent before any wait."""
        for prompt_ids, response_ids in pairs:
            check_score_limits(self.settings, prompt_ids, response_ids)
        sampler = self._sampler(adapter)
        with service_call("scoring", BackendUnavailable):
            futures = [self._score_future(sampler, p, r) for p, r in pairs]
            return [
                self._read_scores(future.result(), len(prompt))
                for future, (prompt, _) in zip(futures, pairs, strict=True)
            ]

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        adapter: AdapterVersion | None,
        sampling: SamplingParams,
        thinking: bool = False,
        tools: Tools | None = None,
    ) -> Generation:
        """Generate one response with the version's sampler (see ``InferenceBackend``).

        ``tools`` are rendered by the base model's chat template (no tool-call parsing).
        """
        check_renderable(tools, self.tokenizer, self.name, self.settings.base_model)
        prompt_ids = encode_chat(self.tokenizer, messages, thinking=thinking, tools=tools)
        return self._generate(prompt_ids, adapter, sampling)

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        adapter: AdapterVersion | None,
        sampling: SamplingParams,
        thinking: bool = False,
        tools: Tools | None = None,
    ) -> Iterator[StreamDelta]:
        """The whole answer as one delta, then the generation (Tinker does not stream)."""
        generation = self.generate(
            messages, adapter=adapter, sampling=sampling, thinking=thinking, tools=tools
        )

        def deltas() -> Iterator[StreamDelta]:
            if generation.raw_text:
                yield StreamDelta(
                    text=generation.raw_text,
                    token_ids=generation.response_ids,
                    logprobs=generation.response_logprobs,
                )
            yield StreamDelta(text="", generation=generation)

        return deltas()

    def complete(
        self, prompt: str, *, adapter: AdapterVersion | None, sampling: SamplingParams
    ) -> Generation:
        """Continue a raw text prompt (no chat template)."""
        if not isinstance(prompt, str) or not prompt:
            raise InvalidRequest("prompt must be a non-empty string")
        return self._generate([int(i) for i in self.tokenizer.encode(prompt)], adapter, sampling)

    def _score_future(
        self, sampler: Any, prompt_ids: Sequence[int], response_ids: Sequence[int]
    ) -> Any:
        sequence = self._tinker.types.ModelInput.from_ints([*prompt_ids, *response_ids])
        return sampler.compute_logprobs(sequence)

    @staticmethod
    def _read_scores(logprobs: Sequence[float | None], prompt_len: int) -> list[float]:
        """The response's part of a sequence's logprobs (a missing one as NaN)."""
        return [float(lp) if lp is not None else float("nan") for lp in logprobs[prompt_len:]]

    def _score_with(
        self, sampler: Any, prompt_ids: Sequence[int], response_ids: Sequence[int]
    ) -> list[float]:
        future = self._score_future(sampler, prompt_ids, response_ids)
        return self._read_scores(future.result(), len(prompt_ids))

    def score(
        self,
        prompt_ids: Sequence[int],
        response_ids: Sequence[int],
        *,
        adapter: AdapterVersion | None,
    ) -> list[float]:
        """Logprob of each response token given the prompt, under the version's sampler."""
        check_score_limits(self.settings, prompt_ids, response_ids)
        sampler = self._sampler(adapter)
        with service_call("scoring", BackendUnavailable):
            return self._score_with(sampler, prompt_ids, response_ids)

    def teacher_topk(self, samples: Sequence[DistillSample], *, k: int) -> list[TeacherTopKLists]:
        """The base model's top-K logprobs over each sample's response (``teacher='remote'``)."""
        sampler = self._sampler(None)
        with service_call("scoring the teacher", BackendUnavailable):
            return sample_teacher(sampler, samples, k=k)

    def publish(self, version: AdapterVersion) -> None:
        """Create the version's sampling client now, so the next chat uses it at once."""
        self._sampler(version)

    def retire(self, adapter_id: str) -> None:
        """Forget the sampling clients of a deleted adapter."""
        with self._lock:
            for key, (owner, _) in list(self._samplers.items()):
                if owner == adapter_id:
                    del self._samplers[key]

    def close(self) -> None:
        """Drop the cached sampling clients."""
        with self._lock:
            self._samplers.clear()
