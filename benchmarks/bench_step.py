"""One SDPO update step on the embedded model against the machine's matmul floor.

The step is what ``LocalTrainer`` times as ``step_seconds``: teacher forward (adapter
disabled), student forward, loss, backward, gradient clip and AdamW, on ``B`` samples of
about 100 prompt and 100 response tokens.

Floor = FLOPs needed / peak matmul rate. The rate is one large square matmul in the
dtype the step computes in (float32, or bfloat16 under autocast), timed in the same
process in turns with the step. The FLOPs are counted with
``torch.utils.flop_counter.FlopCounterMode`` over a whole update, which sees every
matmul actually run: the teacher and student forwards, and the backward as autograd runs
it -- input gradients through every layer plus the LoRA weight gradients, none for the
frozen base weights (autograd skips them). Two corrections make it "needed" FLOPs:

- minus the LM head that the chunked loss recomputes in backward (a memory-for-time
  trade, not needed work), measured by counting ``sdpo_loss_from_hidden`` alone;
- plus causal attention (``QK^T`` and ``PV``), which the counter does not see in
  torch's CPU flash-attention kernel: ``2 L^2 d`` per layer forward, twice that backward
  (``d`` = heads x head dim). Where the counter does see an attention kernel (CUDA), what
  it counted there is replaced by this formula, so both devices count the same work.

Goals: the float32 step within 1.3x its floor, the bfloat16-autocast one within 1.6x (its
per-op work does not halve with the matmuls). ``--device cuda`` runs the same on a GPU,
against that device's measured matmul rate.

Each batch size runs in a fresh subprocess, so its peak RSS is its own.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import _measure as m

SCRIPT = Path(__file__)
FEEDBACK = "Way too long. Answer in one short sentence."
FILLER = (
    "Photosynthesis turns light, water and carbon dioxide into sugar and oxygen. "
    "Chlorophyll in the leaves absorbs red and blue light, and the energy splits water. "
    "The sugar feeds the plant, and the oxygen is released into the air we breathe. "
)


def make_samples(tokenizer: Any, batch: int, prompt_tokens: int, response_tokens: int) -> list[Any]:
    """``batch`` samples with a chat prompt of about ``prompt_tokens`` and an exact response."""
    from claas.teacher import DistillSample, encode_chat, teacher_messages
    from claas.types import ChatMessage

    filler = tokenizer.encode(FILLER * 40, add_special_tokens=False)
    overhead = len(encode_chat(tokenizer, [ChatMessage("user", "x")])) - 1
    samples = []
    for i in range(batch):
        content = tokenizer.decode(filler[i : i + max(prompt_tokens - overhead, 1)])
        messages = [ChatMessage("user", content)]
        prompt = encode_chat(tokenizer, messages)
        teacher = encode_chat(tokenizer, teacher_messages(messages, FEEDBACK))
        response = [*filler[i + 7 : i + 7 + response_tokens - 1], tokenizer.eos_token_id]
        samples.append(
            DistillSample(
                student_ids=(*prompt, *response),
                teacher_ids=(*teacher, *response),
                student_prompt_len=len(prompt),
                teacher_prompt_len=len(teacher),
                response_ids=tuple(response),
                old_logprobs=(-1.0,) * len(response),
                feedback=FEEDBACK,
            )
        )
    return samples


def _attention_flops(config: Any, samples: Sequence[Any]) -> float:
    """Causal attention matmul FLOPs: teacher forward, student forward and backward."""
    heads = config.num_attention_heads
    width = heads * getattr(config, "head_dim", config.hidden_size // heads)
    per_layer = sum(
        2 * len(s.teacher_ids) ** 2 * width + (2 + 4) * len(s.student_ids) ** 2 * width
        for s in samples
    )
    return float(config.num_hidden_layers * per_layer)


def _head_recompute_flops(model: Any, samples: Sequence[Any], chunk_size: int) -> float:
    """FLOPs the chunked loss spends beyond its needed head forward and backward."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from claas import sdpo

    head = model.get_output_embeddings().weight.detach().float()
    vocab, width = head.shape
    t = max(len(s.response_ids) for s in samples)
    on = {"device": head.device}
    hidden = torch.randn(len(samples), t, width, requires_grad=True, **on)
    ids = torch.randint(0, vocab, (len(samples), t), **on)
    logits = torch.randn(len(samples), t, vocab, **on)
    teacher = sdpo.teacher_topk(torch.log_softmax(logits, -1), 100)
    with FlopCounterMode(display=False) as counter:
        loss, _ = sdpo.sdpo_loss_from_hidden(
            hidden, head, teacher, ids, torch.ones(len(samples), t, **on), chunk_size=chunk_size
        )
        loss.backward()
    needed = 2 * (2 * hidden.shape[0] * t * width * vocab)  # forward + input gradient
    return float(counter.get_total_flops() - needed)


def measure_step(
    *,
    batch: int,
    rounds: int,
    threads: int | None,
    autocast: bool,
    device: str,
    prompt_tokens: int,
    response_tokens: int,
    models_dir: str | None,
    matmul_n: int,
) -> dict[str, Any]:
    """Child: time ``rounds`` update steps in turns with the matmul rate (see module doc)."""
    m.set_threads(threads)
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from claas import Settings
    from claas.models import load_tokenizer
    from claas.storage import LocalAdapterStore
    from claas.training.local import LocalTrainer
    from claas.types import DistillConfig, LoraSpec

    tmp = Path(tempfile.mkdtemp(prefix="claas-bench-step-"))
    try:
        extra = {"model_cache_dir": models_dir} if models_dir else {}
        settings = Settings(data_dir=tmp, autocast=autocast, device=device, **extra)
        engine = LocalTrainer(settings)
        tokenizer = load_tokenizer(settings.base_model, models_dir=settings.models_dir)
        lora = LoraSpec()
        parent = LocalAdapterStore(settings.adapters_dir).create(
            "bench/step",
            base_model=settings.base_model,
            lora=lora,
            write=lambda out: engine.init_adapter(lora, out),
        )
        samples = make_samples(tokenizer, batch, prompt_tokens, response_tokens)
        config = DistillConfig()

        def step() -> float:
            out = Path(tempfile.mkdtemp(dir=tmp))
            result = engine.distill(samples, parent=parent, config=config, out_dir=out)
            shutil.rmtree(out)
            return float(result.metrics["step_seconds"])

        # The warm-up step (LoRA injection, kernel selection) is the one counted.
        with FlopCounterMode(display=False) as counter:
            step()
        counted = float(counter.get_total_flops())
        seen_attention = sum(
            float(flops)
            for op, flops in counter.get_flop_counts().get("Global", {}).items()
            if "scaled_dot_product" in str(op)
        )
        m.reset_peak_rss()
        resting = m.rss()
        dtype = torch.bfloat16 if autocast else torch.float32
        series = m.interleave(
            rounds,
            {"rate": lambda: m.matmul_rate(dtype, matmul_n, device=device), "step": step},
        )
        peak = m.peak_rss()
        model = engine._base_model()
        recompute = _head_recompute_flops(model, samples, config.chunk_size)
        attention = _attention_flops(model.config, samples)
    finally:
        engine.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {
        "step": series["step"],
        "rate": series["rate"],
        "counted_flops": counted - seen_attention,
        "recompute_flops": recompute,
        "attention_flops": attention,
        "flops": counted - seen_attention - recompute + attention,
        "response_tokens": sum(len(s.response_ids) for s in samples),
        "prompt_tokens": [s.student_prompt_len for s in samples][:1],
        "teacher_tokens": [len(s.teacher_ids) for s in samples][:1],
        "resting_rss": resting,
        "peak_rss": peak,
        "dtype": str(dtype).removeprefix("torch."),
        "device": device,
    }


def _rows_for(result: dict[str, Any], batch: int, autocast: bool, default: bool) -> list[m.Row]:
    dtype = result["dtype"]
    floors = [result["flops"] / rate for rate in result["rate"]]
    step = m.median(result["step"])
    floor = m.median(floors)
    ratio = m.median_ratio(result["step"], floors)
    tokens = result["response_tokens"]
    label = (
        f"B={batch}, {dtype}"
        + (" autocast" if autocast else "")
        + ("" if result["device"] == "cpu" else f", {result['device']}")
        + (", the default" if autocast == default else "")
    )
    rows = []
    if batch == 1:
        rows.append(
            m.Row(
                name=f"step vs floor ({label})",
                measured=f"{step:.3g} s",
                reference=f"{floor:.3g} s floor",
                ratio=ratio,
                goal=m.at_most(1.6 if autocast else 1.3),
                note=(
                    f"{result['flops'] / 1e9:.1f} GFLOP needed (counted "
                    f"{result['counted_flops'] / 1e9:.1f}, minus head recompute "
                    f"{result['recompute_flops'] / 1e9:.1f}, plus attention "
                    f"{result['attention_flops'] / 1e9:.1f}); peak {dtype} matmul "
                    f"{m.median(result['rate']) / 1e9:.0f} GFLOP/s; prompt "
                    f"{result['prompt_tokens'][0]}, teacher {result['teacher_tokens'][0]}, "
                    f"response {tokens} tokens; {len(result['step'])} rounds"
                ),
            )
        )
    rows.append(
        m.Row(
            name=f"tokens/s ({label})",
            measured=f"{tokens / step:.1f} tok/s",
            reference=f"{tokens / floor:.1f} tok/s at floor",
            ratio=1 / ratio,
            note="" if batch == 1 else f"step {step:.3g} s, {ratio:.3g}x its floor",
        )
    )
    rows.append(
        m.Row(
            name=f"peak RSS ({label})",
            measured=f"{result['peak_rss'] / m.MiB:.0f} MiB",
            reference=f"{result['resting_rss'] / m.MiB:.0f} MiB at rest",
            ratio=result["peak_rss"] / result["resting_rss"],
        )
    )
    return rows


def default_autocast(device: str) -> bool:
    """What ``Settings.autocast="auto"`` resolves to on ``device`` of this machine."""
    from claas.precision import autocast_choice

    return autocast_choice("auto", device).enabled


def run(options: Any) -> list[m.Row]:
    """Batch 1 in float32 and under autocast (step vs floor, tokens/s, RSS), then the
    other batch sizes (tokens/s, RSS) under the default precision."""
    rows: list[m.Row] = []
    default = default_autocast(options.device)
    cases = [(1, False)] if 1 in options.batches else []
    if options.autocast_row:
        cases.append((1, True))
    cases += [(b, default) for b in options.batches if b != 1]
    for batch, autocast in cases:
        rounds = options.repeats if batch == 1 else options.batch_repeats
        print(f"[step] batch {batch}, autocast {autocast}: {rounds} rounds", file=sys.stderr)
        try:
            result = m.run_child(
                SCRIPT,
                "measure_step",
                {
                    "batch": batch,
                    "rounds": rounds,
                    "threads": options.threads,
                    "autocast": autocast,
                    "device": options.device,
                    "prompt_tokens": 100,
                    "response_tokens": 100,
                    "models_dir": options.models_dir,
                    "matmul_n": options.matmul_n,
                },
            )
        except RuntimeError as exc:
            label = f"B={batch}" + (" autocast" if autocast else "")
            rows += m.skipped_rows([f"step ({label})"], f"failed: {str(exc)[-300:]}")
            continue
        rows += _rows_for(result, batch, autocast, default)
    return rows


if __name__ == "__main__":
    m.child_main({"measure_step": measure_step})
