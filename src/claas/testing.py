"""In-memory fakes of CLaaS's seams, for testing code that uses CLaaS.

They need no model, no torch and no network, the way ``httpx.MockTransport``
stands in for a real transport::

    from claas import Learner, Settings
    from claas.testing import FakeInference, FakeTrainer, FakeTokenizer

    learner = Learner(Settings(data_dir=tmp_path), inference=FakeInference(),
                      engine=FakeTrainer(), tokenizer=FakeTokenizer())

``Settings(inference_backend="fake", training_engine="fake")`` selects them by
name: this package's metadata declares :func:`fake_backend` and
:func:`fake_engine` as entry points of the registry (see :mod:`claas.registry`),
so the production registry never imports this module unless asked for ``fake``.

The fake trainer really writes versions (a small JSON "weights" file counting
updates), so storage, records, ordering and rollback behave as in production;
the fake backend answers with a deterministic text that names the adapter
version serving it.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from claas.config import Settings
from claas.errors import InvalidRequest, TrainingError
from claas.inference.base import Generation, StreamDelta
from claas.teacher import DistillSample, encode_chat
from claas.tools import Tools, check_renderable
from claas.types import (
    AdapterVersion,
    ChatMessage,
    DistillConfig,
    DistillResult,
    LoraSpec,
    SamplingParams,
    TeacherTopKLists,
)

__all__ = ["FakeInference", "FakeTokenizer", "FakeTrainer", "fake_backend", "fake_engine"]

FAKE_WEIGHTS = "fake_weights.json"


class FakeTokenizer:
    """A byte-level tokenizer with a ChatML-like chat template.

    Ids 0..255 are bytes; 256 is ``<|im_start|>``, 257 ``<|im_end|>`` (EOS).
    """

    eos_token_id = 257
    eos_token = "<|im_end|>"
    pad_token_id = 257
    chat_template = "fake-chatml, with tools"

    def encode(self, text: str, add_special_tokens: bool = True, **_: Any) -> list[int]:
        """UTF-8 bytes of the text."""
        return list(text.encode("utf-8"))

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = False, **_: Any) -> str:
        """Inverse of ``encode``; special ids become their names unless skipped."""
        out = bytearray()
        for i in ids:
            if i < 256:
                out.append(i)
            elif not skip_special_tokens:
                out.extend((self.eos_token if i == 257 else "<|im_start|>").encode())
        return out.decode("utf-8", errors="replace")

    def apply_chat_template(
        self, conversation: Sequence[Mapping[str, str]], **kwargs: Any
    ) -> dict[str, list[int]]:
        """Render ``<|im_start|>role\\ncontent<|im_end|>\\n`` turns (+ assistant opener)."""
        ids: list[int] = []
        turns = list(conversation)
        if not turns or turns[0]["role"] != "system":
            turns.insert(0, {"role": "system", "content": "You are a helpful assistant."})
        if kwargs.get("tools"):
            tools = json.dumps(kwargs["tools"], sort_keys=True)
            turns.insert(1, {"role": "system", "content": f"Tools: {tools}"})
        for turn in turns:
            ids += [256, *self.encode(turn["role"] + "\n" + turn["content"]), 257, 10]
        if kwargs.get("add_generation_prompt"):
            ids += [256, *self.encode("assistant\n")]
        return {"input_ids": ids}


Responder = Callable[[Sequence[ChatMessage], AdapterVersion | None], str]


def _echo(messages: Sequence[ChatMessage], adapter: AdapterVersion | None) -> str:
    served = f"{adapter.adapter_id} v{adapter.version}" if adapter else "base"
    return f"[{served}] You said: {messages[-1].content}"


class FakeInference:
    """A backend that answers deterministically and records every call.

    Args:
        responder: Maps (messages, adapter version) to the response text.
        tokenizer: Tokenizer for prompt and response ids.
    """

    name = "fake"

    def __init__(self, responder: Responder = _echo, tokenizer: FakeTokenizer | None = None):
        self.responder = responder
        self.tokenizer = tokenizer or FakeTokenizer()
        self.published: list[str] = []
        self.calls: list[tuple[str, str | None]] = []
        self._lock = threading.Lock()

    def _generation(self, prompt_ids: list[int], text: str, sampling: SamplingParams) -> Generation:
        ids = self.tokenizer.encode(text)[: sampling.max_tokens]
        finish = "length"
        if len(ids) < sampling.max_tokens:
            ids.append(self.tokenizer.eos_token_id)
            finish = "stop"
        shown = self.tokenizer.decode(ids, skip_special_tokens=True)
        return Generation(
            prompt_ids=tuple(prompt_ids),
            response_ids=tuple(ids),
            response_logprobs=tuple(-0.5 for _ in ids),
            raw_text=shown,
            finish_reason=finish,
            top_logprobs=tuple(((i, -0.5),) for i in ids) if sampling.top_logprobs else (),
        )

    def generate(
        self,
        messages: Sequence[ChatMessage],
        *,
        adapter: AdapterVersion | None,
        sampling: SamplingParams,
        thinking: bool = False,
        tools: Tools | None = None,
    ) -> Generation:
        """Answer with ``responder(messages, adapter)``; ``tools`` are rendered into the prompt."""
        check_renderable(tools, self.tokenizer, self.name, "the fake model")
        with self._lock:
            self.calls.append(("generate", adapter.ref if adapter else None))
        prompt = encode_chat(self.tokenizer, messages, thinking=thinking, tools=tools)
        return self._generation(prompt, self.responder(messages, adapter), sampling)

    def stream(
        self,
        messages: Sequence[ChatMessage],
        *,
        adapter: AdapterVersion | None,
        sampling: SamplingParams,
        thinking: bool = False,
        tools: Tools | None = None,
    ) -> Iterator[StreamDelta]:
        """Yield the answer word by word, then the full generation."""
        generation = self.generate(messages, adapter=adapter, sampling=sampling, tools=tools)

        def deltas() -> Iterator[StreamDelta]:
            for word in generation.raw_text.split(" "):
                yield StreamDelta(text=word + " ")
            yield StreamDelta(text="", generation=generation)

        return deltas()

    def complete(
        self, prompt: str, *, adapter: AdapterVersion | None, sampling: SamplingParams
    ) -> Generation:
        """Continue a raw prompt with the responder's answer."""
        if not prompt:
            raise InvalidRequest("prompt must be a non-empty string")
        message = ChatMessage(role="user", content=prompt)
        return self._generation(
            self.tokenizer.encode(prompt), self.responder([message], adapter), sampling
        )

    def score(
        self,
        prompt_ids: Sequence[int],
        response_ids: Sequence[int],
        *,
        adapter: AdapterVersion | None,
    ) -> list[float]:
        """-1 / (1 + version) per token: later versions 'like' every response more."""
        version = adapter.version if adapter else 0
        return [-1.0 / (1 + version) for _ in response_ids]

    def teacher_topk(self, samples: Sequence[DistillSample], *, k: int) -> list[TeacherTopKLists]:
        """A teacher that puts all its mass on each sampled token."""
        return [
            TeacherTopKLists(
                ids=tuple((t,) for t in s.response_ids),
                logprobs=tuple((0.0,) for _ in s.response_ids),
                token_logprobs=tuple(0.0 for _ in s.response_ids),
            )
            for s in samples
        ]

    def publish(self, version: AdapterVersion) -> None:
        """Record that ``version`` was published."""
        with self._lock:
            self.published.append(version.ref)

    def retire(self, adapter_id: str) -> None:
        """Forget published versions of ``adapter_id``."""
        with self._lock:
            self.published = [r for r in self.published if not r.startswith(adapter_id + "@")]

    def close(self) -> None:
        """Nothing to release."""


class FakeTrainer:
    """A training engine that counts updates instead of computing them.

    Args:
        fail_with: An exception to raise from every ``distill`` (e.g.
            ``NonFiniteUpdate("nan")``) to test error handling.
        delay: Seconds each update sleeps (to test ordering and queueing).
        divergence: What the skip pre-check measures for every batch (a fixed
            value: a fake has no teacher to compare with).
    """

    name = "fake"

    def __init__(
        self,
        *,
        fail_with: BaseException | None = None,
        delay: float = 0.0,
        divergence: float = 1.0,
    ) -> None:
        self.fail_with = fail_with
        self.delay = delay
        self.fixed_divergence = divergence
        self.calls: list[dict[str, Any]] = []
        self.published: list[str] = []
        self.deleted: list[str] = []
        self._lock = threading.Lock()

    def init_adapter(self, lora: LoraSpec, out_dir: Path) -> None:
        """Write a weights file with zero updates."""
        out_dir.mkdir(parents=True, exist_ok=True)
        payload = {"updates": 0, "lora": lora.to_dict(), "feedback": []}
        (out_dir / FAKE_WEIGHTS).write_text(json.dumps(payload))

    def distill(
        self,
        samples: Sequence[DistillSample],
        *,
        parent: AdapterVersion,
        config: DistillConfig,
        out_dir: Path,
        remote_teacher: Sequence[TeacherTopKLists] | None = None,
    ) -> DistillResult:
        """Write the parent's weights file with the update counted."""
        import time

        with self._lock:
            self.calls.append(
                {
                    "parent": parent.ref,
                    "samples": len(samples),
                    "batch": list(samples),
                    "config": config,
                }
            )
        if self.delay:
            time.sleep(self.delay)
        if self.fail_with is not None:
            raise self.fail_with
        source = Path(parent.path) / FAKE_WEIGHTS
        if not source.exists():
            raise TrainingError(f"version {parent.ref} has no fake weights")
        state = json.loads(source.read_text())
        state["updates"] += config.steps
        state["feedback"] = [*state["feedback"], *(s.feedback for s in samples)]
        out_dir.mkdir(parents=True, exist_ok=True)
        (out_dir / FAKE_WEIGHTS).write_text(json.dumps(state))
        tokens = sum(s.response_len for s in samples)
        metrics = {"loss": 0.1, "distill_loss": 0.1, "tokens": float(tokens), "grad_norm": 0.5}
        return DistillResult(metrics=metrics, steps=config.steps, tokens=tokens)

    def divergence(
        self,
        samples: Sequence[DistillSample],
        *,
        parent: AdapterVersion,
        config: DistillConfig,
        remote_teacher: Sequence[TeacherTopKLists] | None = None,
        reference: Sequence[DistillSample] | None = None,
    ) -> float:
        """The fixed divergence this fake was built with."""
        return self.fixed_divergence

    def on_published(self, version: AdapterVersion) -> None:
        """Record the published version."""
        with self._lock:
            self.published.append(version.ref)

    def on_deleted(self, versions: Sequence[AdapterVersion]) -> None:
        """Record the deleted versions (nothing else keeps them)."""
        with self._lock:
            self.deleted.extend(v.ref for v in versions)

    def close(self) -> None:
        """Nothing to release."""


def fake_backend(settings: Settings) -> FakeInference:
    """The registry's factory for ``inference_backend="fake"``."""
    return FakeInference()


def fake_engine(settings: Settings) -> FakeTrainer:
    """The registry's factory for ``training_engine="fake"``."""
    return FakeTrainer()
