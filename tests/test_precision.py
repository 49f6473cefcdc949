"""Precision of the local backends: float32 LoRA master weights; bfloat16 under autocast."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import torch
from safetensors.torch import load_file

from claas import DistillConfig, LoraSpec, Settings
from claas.inference.local import LocalInference
from claas.models import load_tokenizer
from claas.storage import LocalAdapterStore
from claas.teacher import DistillSample, build_sample_from_text
from claas.training.local import LocalTrainer
from claas.types import AdapterVersion, ChatMessage, SamplingParams

pytestmark = pytest.mark.slow

LORA = LoraSpec(rank=8, alpha=16.0)
CONFIG = DistillConfig(top_k=8, learning_rate=1e-3)


@pytest.fixture(scope="module")
def sample(models_dir: Path) -> DistillSample:
    tokenizer = load_tokenizer(Settings().base_model, models_dir=models_dir)
    question = [ChatMessage(role="user", content="Name a color.")]
    return build_sample_from_text(
        tokenizer, question, "Blue is a calm color.", "Answer with one word."
    )


def _first_update(
    settings: Settings, sample: DistillSample, lora: LoraSpec = LORA
) -> tuple[LocalTrainer, AdapterVersion, dict[str, float]]:
    engine = LocalTrainer(settings)
    store = LocalAdapterStore(settings.adapters_dir)
    v0 = store.create(
        "t/precision",
        base_model=settings.base_model,
        lora=lora,
        write=lambda out: engine.init_adapter(lora, out),
    )
    metrics: dict[str, float] = {}

    def write(out: Path) -> None:
        metrics.update(engine.distill([sample], parent=v0, config=CONFIG, out_dir=out).metrics)

    v1 = store.publish("t/precision", parent=0, write=write)
    return engine, v1, metrics


def _dtypes(engine: LocalTrainer) -> tuple[set[torch.dtype], set[torch.dtype]]:
    """Dtypes of the LoRA weights and of the frozen linear weights in the engine."""
    lora, frozen = set(), set()
    for name, param in engine._peft.named_parameters():
        if ".lora_" in name:
            lora.add(param.dtype)
        elif name.endswith("base_layer.weight"):
            frozen.add(param.dtype)
    return lora, frozen


def test_float32_engine_keeps_every_weight_float32(settings: Settings, sample: DistillSample):
    engine, v1, _ = _first_update(attrs.evolve(settings, autocast=False), sample)
    assert _dtypes(engine) == ({torch.float32}, {torch.float32})
    assert {t.dtype for t in load_file(f"{v1.path}/adapter_model.safetensors").values()} == {
        torch.float32
    }
    engine.close()


def test_autocast_stores_frozen_weights_in_bfloat16_and_trains_float32_lora(
    settings: Settings, sample: DistillSample
):
    autocast = attrs.evolve(settings, autocast=True)
    engine, v1, metrics = _first_update(autocast, sample)
    assert _dtypes(engine) == ({torch.float32}, {torch.bfloat16})
    base = engine._peft.get_base_model()
    # The embedding and the norms keep float32, as under autocast; the LM head (tied to
    # the embedding in this model) gets its own bfloat16 copy.
    embedding, head = base.get_input_embeddings().weight, base.get_output_embeddings().weight
    assert embedding.dtype == torch.float32 and head.dtype == torch.bfloat16
    assert torch.equal(head.float(), embedding.bfloat16().float())
    assert all(
        p.dtype == torch.float32 for n, p in base.named_parameters() if n.endswith("norm.weight")
    )
    saved = load_file(f"{v1.path}/adapter_model.safetensors")
    assert saved and {t.dtype for t in saved.values()} == {torch.float32}
    # A second LoRA shape gets its own slot, created next to bfloat16 base layers:
    # its weights are float32 master weights too.
    second = LoraSpec(rank=4, alpha=8.0)
    engine.init_adapter(second, Path(autocast.data_dir) / "second")
    assert _dtypes(engine) == ({torch.float32}, {torch.bfloat16})
    engine.close()

    # The same first step in float32 gives the same loss to bfloat16 precision.
    reference_engine, _, reference = _first_update(
        attrs.evolve(settings, data_dir=Path(settings.data_dir) / "fp32", autocast=False), sample
    )
    reference_engine.close()
    assert metrics["first_distill_loss"] == pytest.approx(
        reference["first_distill_loss"], rel=0.1, abs=2e-3
    )
    assert torch.isfinite(torch.tensor(list(metrics.values()))).all()


def test_autocast_inference_holds_bfloat16_weights_and_answers_like_float32(
    settings: Settings, sample: DistillSample
):
    fp32 = LocalInference(attrs.evolve(settings, autocast=False))
    bf16 = LocalInference(attrs.evolve(settings, autocast=True))
    question = [ChatMessage("user", "What is the capital of France?")]
    greedy = SamplingParams(max_tokens=16, temperature=0)
    answer = bf16.generate(question, adapter=None, sampling=greedy)
    assert "Paris" in answer.raw_text
    linear = {m.weight.dtype for m in bf16._base().modules() if isinstance(m, torch.nn.Linear)}
    assert linear == {torch.bfloat16}
    prompt = sample.student_ids[: sample.student_prompt_len]
    want = fp32.score(prompt, sample.response_ids, adapter=None)
    got = bf16.score(prompt, sample.response_ids, adapter=None)
    assert got == pytest.approx(want, abs=0.25)
    assert got != want  # really computed in bfloat16
    fp32.close()
    bf16.close()
