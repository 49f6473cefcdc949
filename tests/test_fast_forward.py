"""The fused LoRA forward and the float32 training attention compute what they replace."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from peft import LoraConfig, get_peft_model
from tiny_llama import tiny_llama

from claas import DistillConfig, LoraSpec, Settings
from claas._fast_forward import forget_weight_copies, install_attention, install_lora_forward
from claas.inference._batch_decode import greedy_batch
from claas.models import load_tokenizer
from claas.teacher import DistillSample, build_sample_from_text
from claas.training._batch import collate
from claas.training.local import LocalTrainer, lora_parameters
from claas.types import ChatMessage


class _Block(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.up = torch.nn.Linear(16, 32)
        self.down = torch.nn.Linear(32, 16, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.down(torch.relu(self.up(x)))


def _tiny_peft(seed: int) -> torch.nn.Module:
    torch.manual_seed(seed)
    config = LoraConfig(r=4, lora_alpha=8, target_modules=["up", "down"], lora_dropout=0.0)
    model = get_peft_model(_Block(), config)
    model.add_adapter("second", LoraConfig(r=2, lora_alpha=2, target_modules=["up"]))
    for name, param in model.named_parameters():
        if "lora_B" in name:
            torch.nn.init.normal_(param, std=0.1)
    return model


def _run(model: torch.nn.Module, x: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
    lora = [p for n, p in model.named_parameters() if "lora_" in n]
    for p in lora:
        p.requires_grad_(True)
        p.grad = None
    out = model(x)
    out.square().sum().backward()
    return out.detach(), [p.grad.clone() if p.grad is not None else torch.zeros(0) for p in lora]


@pytest.mark.parametrize("adapter", ["default", "second"])
def test_fused_lora_forward_matches_peft_outputs_and_gradients(adapter: str) -> None:
    x = torch.randn(3, 5, 16)
    plain, fused = _tiny_peft(0), _tiny_peft(0)
    assert install_lora_forward(fused) == 2
    assert install_lora_forward(fused) == 0  # already installed
    for model in (plain, fused):
        model.set_adapter(adapter)
    want, want_grads = _run(plain, x)
    got, got_grads = _run(fused, x)
    torch.testing.assert_close(got, want)
    for g, w in zip(got_grads, want_grads, strict=True):
        torch.testing.assert_close(g, w)
    with plain.disable_adapter(), fused.disable_adapter():
        torch.testing.assert_close(fused(x), plain(x))


@pytest.mark.parametrize("rows", [1, 4, 16, 17, 40])  # up to 16: LoRA in float32
def test_fused_lora_forward_under_bfloat16_autocast_stays_close(rows: int) -> None:
    x = torch.randn(rows, 16)
    plain, fused = _tiny_peft(1), _tiny_peft(1)
    install_lora_forward(fused)
    exact = plain(x).detach()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        want, got = plain(x), fused(x)
    assert got.dtype == want.dtype == torch.bfloat16
    torch.testing.assert_close(got.float(), want.float(), rtol=2e-2, atol=2e-2)
    torch.testing.assert_close(got.float(), exact, rtol=2e-2, atol=2e-2)
    got.float().square().sum().backward()  # the LoRA weights still get their gradients
    grads = [p.grad for n, p in fused.named_parameters() if "lora_" in n and "default" in n]
    assert grads and all(g is not None and bool(g.abs().sum() > 0) for g in grads)


@pytest.mark.parametrize("autocast", [False, True])
@pytest.mark.parametrize("mode", [torch.no_grad, torch.inference_mode])
def test_gradient_free_calls_follow_the_lora_weights_as_they_change(
    autocast: bool, mode: type
) -> None:
    """Gradient-free calls keep cast copies of the LoRA weights: never stale ones."""
    x = torch.randn(40, 16)
    plain, fused = _tiny_peft(2), _tiny_peft(2)
    install_lora_forward(fused)
    close = {"rtol": 2e-2, "atol": 2e-2} if autocast else {}

    def both() -> tuple[torch.Tensor, torch.Tensor]:
        with mode(), torch.autocast("cpu", dtype=torch.bfloat16, enabled=autocast):
            return plain(x).float(), fused(x).float()

    before, got = both()
    torch.testing.assert_close(got, before, **close)
    for model in (plain, fused):  # written in place, as an optimizer step or a slot load does
        with torch.no_grad():
            for name, param in model.named_parameters():
                if "lora_B" in name:
                    param.mul_(-3.0)
    after, got = both()
    assert not torch.allclose(after, before, rtol=0.1, atol=0.1)
    torch.testing.assert_close(got, after, **close)
    for model in (plain, fused):  # the other adapter, then a new one under the same name
        model.set_adapter("second")
    torch.testing.assert_close(both()[1], both()[0], **close)
    for model in (plain, fused):
        torch.manual_seed(3)
        model.delete_adapter("second")
        model.add_adapter("second", LoraConfig(r=2, lora_alpha=4, target_modules=["up"]))
        model.set_adapter("second")
        for name, param in model.named_parameters():
            if "lora_B" in name and "second" in name:
                torch.nn.init.normal_(param, std=0.1)
    install_lora_forward(fused)
    want, got = both()
    torch.testing.assert_close(got, want, **close)


def test_gradient_free_calls_after_a_fused_adamw_step_see_the_stepped_weights() -> None:
    """The fused kernel leaves version counters alone: the trainer's reset must cover it."""
    x = torch.randn(40, 16)
    plain, fused = _tiny_peft(4), _tiny_peft(4)
    install_lora_forward(fused)
    with torch.no_grad():
        before = fused(x)  # caches the copies
    outputs = []
    for model in (plain, fused):
        lora = [p for n, p in model.named_parameters() if "lora_" in n]
        versions = [p._version for p in lora]
        optimizer = torch.optim.AdamW(lora, lr=0.05, fused=True)
        model(x).square().sum().backward()
        optimizer.step()
        assert [p._version for p in lora] == versions  # why the reset is needed
        forget_weight_copies(model)
        with torch.no_grad():
            outputs.append(model(x))
    assert not torch.allclose(outputs[1], before, rtol=1e-3, atol=1e-3)
    torch.testing.assert_close(outputs[1], outputs[0])


def test_installed_attention_masks_left_padding_and_cached_decoding_as_sdpa_does() -> None:
    plain, fast = tiny_llama(seed=2), tiny_llama(seed=2)
    install_attention(fast)
    ids = torch.tensor([[0, 0, 0, 5, 6, 7], [8, 9, 10, 11, 12, 13]])
    mask = torch.tensor([[0, 0, 0, 1, 1, 1], [1, 1, 1, 1, 1, 1]])
    with torch.inference_mode():
        want = plain(input_ids=ids, attention_mask=mask).logits
        got = fast(input_ids=ids, attention_mask=mask).logits
    # The padded row's real positions must not see its padding.
    torch.testing.assert_close(got[:, 3:], want[:, 3:])
    prompts = [[5, 6, 7], [8, 9, 10, 11, 12, 13], [20, 21]]
    kwargs = {"max_tokens": 6, "eos_ids": frozenset(), "pad_id": 0, "device": "cpu"}
    assert greedy_batch(fast, prompts, **kwargs) == greedy_batch(plain, prompts, **kwargs)


@pytest.fixture(scope="module")
def sample(models_dir: Path) -> DistillSample:
    tokenizer = load_tokenizer(Settings().base_model, models_dir=models_dir)
    question = [ChatMessage(role="user", content="Why is the sky blue? Explain briefly.")]
    answer = "The sky looks blue because air scatters short blue wavelengths of sunlight more."
    return build_sample_from_text(tokenizer, question, answer, "Way too long. One sentence.")


def _loss_and_grad(
    settings: Settings, sample: DistillSample, *, fast: bool
) -> tuple[float, torch.Tensor, torch.Tensor]:
    """One SDPO loss and its LoRA gradient from fixed non-zero LoRA weights."""
    engine = LocalTrainer(settings, fast_forward=fast)
    config = DistillConfig(top_k=20)
    slot = engine._slot(LoraSpec(rank=8, alpha=16.0))
    params = lora_parameters(engine._peft, slot)
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for _, param in params:
            param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    batch = collate([sample], device="cpu")
    teacher = engine._teacher_topk(batch, config)
    loss, _ = engine._loss(batch, teacher, config, None)
    loss.backward()
    grad = torch.cat([p.grad.flatten() for _, p in params])
    engine.close()
    return float(loss.detach()), grad, teacher.logprobs


def _relative(a: torch.Tensor, b: torch.Tensor) -> float:
    return float((a - b).norm() / b.norm())


@pytest.mark.slow
def test_fast_step_gives_the_loss_and_gradient_of_the_plain_path(
    settings: Settings, sample: DistillSample
) -> None:
    fp32 = settings.evolve(autocast=False)
    loss, grad, teacher = _loss_and_grad(fp32, sample, fast=False)
    fast_loss, fast_grad, fast_teacher = _loss_and_grad(fp32, sample, fast=True)
    assert fast_loss == pytest.approx(loss, rel=1e-5)
    assert _relative(fast_grad, grad) < 1e-4
    torch.testing.assert_close(fast_teacher, teacher)

    # Under bfloat16 autocast both paths round; the fast one may not be further from
    # the float32 result than the plain one, beyond bfloat16 noise.
    bf16 = settings.evolve(autocast=True)
    plain_loss, plain_grad, _ = _loss_and_grad(bf16, sample, fast=False)
    bf_loss, bf_grad, _ = _loss_and_grad(bf16, sample, fast=True)
    plain_error = _relative(plain_grad, grad)
    assert 0 < plain_error < 0.2
    assert _relative(bf_grad, grad) < 1.5 * plain_error + 0.02
    assert abs(bf_loss - loss) < 1.5 * abs(plain_loss - loss) + 0.02 * abs(loss)
    assert torch.nn.functional.cosine_similarity(bf_grad, plain_grad, dim=0) > 0.99


def _teacher_after_fused_steps(
    settings: Settings, sample: DistillSample, *, fast: bool
) -> torch.Tensor:
    """The current-adapter teacher after two fused AdamW steps from fixed LoRA weights."""
    engine = LocalTrainer(settings, fast_forward=fast)
    config = DistillConfig(top_k=20, teacher="current", steps=2, learning_rate=1e-2)
    slot = engine._slot(LoraSpec(rank=8, alpha=16.0))
    params = lora_parameters(engine._peft, slot)
    generator = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for _, param in params:
            param.copy_(torch.randn(param.shape, generator=generator) * 0.02)
    engine._optimizer = torch.optim.AdamW([p for _, p in params], lr=1e-2, fused=True)
    batch = collate([sample], device="cpu")
    engine._run_steps(batch, config, [p for _, p in params], None)
    teacher = engine._teacher_topk(batch, config).logprobs
    engine.close()
    return teacher


@pytest.mark.slow
def test_the_teacher_after_fused_optimizer_steps_reads_the_stepped_weights(
    settings: Settings, sample: DistillSample
) -> None:
    """The current-adapter teacher of a later step sees what the earlier steps wrote."""
    fp32 = settings.evolve(autocast=False)
    want = _teacher_after_fused_steps(fp32, sample, fast=False)
    got = _teacher_after_fused_steps(fp32, sample, fast=True)
    torch.testing.assert_close(got, want, rtol=2e-3, atol=2e-3)  # stale: off by ~10
