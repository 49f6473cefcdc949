"""The local engine and inference on a CUDA device: placement, bfloat16 weights, fused AdamW.

Skipped where no GPU is present (CI has none); run them on a GPU machine with
``pytest -m gpu``.
"""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest
import torch
from safetensors.torch import load_file

from claas import DistillConfig, LoraSpec, Settings
from claas.inference.local import LocalInference
from claas.models import load_tokenizer
from claas.precision import autocast_choice
from claas.storage import LocalAdapterStore
from claas.teacher import DistillSample, build_sample_from_text
from claas.training.local import LocalTrainer
from claas.types import ChatMessage, SamplingParams

pytestmark = [
    pytest.mark.gpu,
    pytest.mark.slow,
    pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device"),
]

LORA = LoraSpec(rank=8, alpha=16.0)


@pytest.fixture
def cuda(settings: Settings) -> Settings:
    return attrs.evolve(settings, device="cuda")


@pytest.fixture(scope="module")
def sample(models_dir: Path) -> DistillSample:
    tokenizer = load_tokenizer(Settings().base_model, models_dir=models_dir)
    question = [ChatMessage(role="user", content="Name a color.")]
    return build_sample_from_text(
        tokenizer, question, "Blue is a calm color.", "Answer with one word."
    )


def test_auto_follows_the_devices_bfloat16_support() -> None:
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    assert autocast_choice("auto", "cuda").enabled == native
    assert autocast_choice("auto", "cuda:0").enabled == native


def test_an_update_on_cuda_keeps_weights_there_and_uses_fused_adamw(
    cuda: Settings, sample: DistillSample
) -> None:
    engine = LocalTrainer(cuda)
    store = LocalAdapterStore(cuda.adapters_dir)
    v0 = store.create(
        "t/cuda",
        base_model=cuda.base_model,
        lora=LORA,
        write=lambda out: engine.init_adapter(LORA, out),
    )
    metrics: dict[str, float] = {}

    def write(out: Path) -> None:
        config = DistillConfig(top_k=8, learning_rate=1e-3)
        metrics.update(engine.distill([sample], parent=v0, config=config, out_dir=out).metrics)

    v1 = store.publish("t/cuda", parent=0, write=write)
    assert torch.isfinite(torch.tensor(list(metrics.values()))).all()
    devices = {p.device.type for p in engine._peft.parameters()}
    assert devices == {"cuda"}
    frozen = {
        p.dtype for n, p in engine._peft.named_parameters() if n.endswith("base_layer.weight")
    }
    lora = {p.dtype for n, p in engine._peft.named_parameters() if ".lora_" in n}
    # dtype "auto" is bfloat16 on a GPU; the LoRA weights are float32 master weights.
    assert frozen == {torch.bfloat16} and lora == {torch.float32}
    assert engine._optimizer is not None and engine._optimizer.defaults["fused"] is True
    saved = load_file(f"{v1.path}/adapter_model.safetensors")
    assert saved and {t.dtype for t in saved.values()} == {torch.float32}
    engine.close()


def test_cuda_inference_answers_and_holds_bfloat16_weights(cuda: Settings) -> None:
    backend = LocalInference(cuda)
    question = [ChatMessage("user", "What is the capital of France?")]
    answer = backend.generate(
        question, adapter=None, sampling=SamplingParams(max_tokens=16, temperature=0)
    )
    assert "Paris" in answer.raw_text
    linear = [m.weight for m in backend._base().modules() if isinstance(m, torch.nn.Linear)]
    assert {w.device.type for w in linear} == {"cuda"}
    assert {w.dtype for w in linear} == {torch.bfloat16}
    backend.close()


def test_fast_forward_on_cuda_matches_the_plain_path(cuda: Settings, sample: DistillSample) -> None:
    from claas.training._batch import collate
    from claas.training.local import lora_parameters

    results = []
    for fast in (False, True):
        engine = LocalTrainer(cuda, fast_forward=fast)
        slot = engine._slot(LORA)
        params = lora_parameters(engine._peft, slot)
        generator = torch.Generator().manual_seed(0)
        with torch.no_grad():
            for _, param in params:
                param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
        batch = collate([sample], device="cuda")
        config = DistillConfig(top_k=8)
        loss, _ = engine._loss(batch, engine._teacher_topk(batch, config), config, None)
        loss.backward()
        results.append((float(loss.detach()), torch.cat([p.grad.flatten() for _, p in params])))
        engine.close()
    (plain_loss, plain_grad), (fast_loss, fast_grad) = results
    assert fast_loss == pytest.approx(plain_loss, rel=0.02, abs=1e-3)
    assert torch.nn.functional.cosine_similarity(fast_grad, plain_grad, dim=0) > 0.99
