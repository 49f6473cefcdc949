"""The SDPO loss at production size: chunked against unchunked float32, and against TRL.

Inputs: student logits ``[1, T, V]`` in bfloat16 (what a bf16 model emits), a teacher
top-K with its log-probs and ids, the sampled ids, a full mask and serving log-probs
(so the clipped importance weight is on). Defaults are the production size: T = 4,096,
V = 151,936 (Qwen), K = 100; alpha 0.5, tail on, clip 2.

- ``chunked``: :func:`claas.sdpo.sdpo_loss` with ``chunk_size`` C;
- ``unchunked``: the same formula written plainly in float32 over the whole ``[T, V]``
  (below, independent of ``claas.sdpo``) -- the reference for the goals;
- ``trl``: TRL's experimental SDPO loss utilities (``trl.experimental.sdpo.loss_utils``:
  top-K divergence with tail, then its importance-sampling clip, then a token mean).
  They take the teacher as full logits and use the *student's* top-K as the support, so
  the teacher logits ``[1, T, V]`` are one more input. Run only where trl imports.

Each measurement is one forward + backward in a fresh process (peak RSS above the
inputs, see ``_measure.py``); variants alternate round by round.
"""

from __future__ import annotations

import math
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import _measure as m

SCRIPT = Path(__file__)
ALPHA, CLIP = 0.5, 2.0


def _with_tail(logp: Any) -> Any:
    import torch

    top = torch.logsumexp(logp, dim=-1, keepdim=True).clamp(max=-1e-7)
    return torch.cat([logp, torch.log(-torch.expm1(top))], dim=-1)


def unchunked_loss(logits: Any, q_logprobs: Any, q_ids: Any, ids: Any, mask: Any, old: Any) -> Any:
    """The SDPO loss in float32 over the full ``[B, T, V]``: the memory and time reference."""
    import torch

    logp = torch.log_softmax(logits.float(), dim=-1)
    token = logp.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    s = _with_tail(logp.gather(-1, q_ids))
    q = _with_tail(q_logprobs.float())
    mix = torch.logaddexp(q + math.log(ALPHA), s + math.log(1 - ALPHA))
    div = ALPHA * (q.exp() * (q - mix)).sum(-1) + (1 - ALPHA) * (s.exp() * (s - mix)).sum(-1)
    weight = (token.detach() - old).clamp(-20, 20).exp().clamp(max=CLIP)
    m_ = mask.float()
    return (weight * div * m_).sum() / m_.sum().clamp(min=1)


def trl_loss(logits: Any, teacher_logits: Any, ids: Any, mask: Any, old: Any, k: int) -> Any:
    """TRL's utilities on the same batch (student top-K support, full teacher logits)."""
    from trl.experimental.sdpo import loss_utils
    from trl.trainer.utils import selective_log_softmax

    per_token = loss_utils.compute_topk_self_distillation_loss(
        logits,
        teacher_logits,
        distillation_topk=k,
        distillation_alpha=ALPHA,
        distillation_add_tail=True,
    )
    token = selective_log_softmax(logits, ids)
    per_token = loss_utils.apply_importance_sampling_clipping(per_token, token, old, CLIP)
    m_ = mask.float()
    return (per_token * m_).sum() / m_.sum().clamp(min=1)


def _inputs(t: int, v: int, k: int, variant: str, seed: int) -> dict[str, Any]:
    """Seeded inputs shaped like a real update: the student close to the teacher.

    The sampled ids are among the teacher's top-K and the serving log-probs near the
    student's, so the divergence and the importance weights are of a realistic size.
    """
    import torch

    g = torch.Generator().manual_seed(seed)
    teacher_logits = (torch.randn(1, t, v, generator=g) * 3).to(torch.bfloat16)
    logits = (teacher_logits * 0.8 + torch.randn(1, t, v, generator=g)).to(torch.bfloat16)
    values, top_ids, student = [], [], []
    for q_rows, s_rows in zip(teacher_logits[0].split(256), logits[0].split(256), strict=True):
        top = torch.log_softmax(q_rows.float(), dim=-1).topk(k, dim=-1)
        values.append(top.values)
        top_ids.append(top.indices)
        student.append(torch.log_softmax(s_rows.float(), dim=-1))
    q_ids = torch.cat(top_ids)[None]
    ids = q_ids.gather(-1, torch.randint(0, k, (1, t, 1), generator=g)).squeeze(-1)
    token = torch.cat(
        [s.gather(-1, i[:, None]) for s, i in zip(student, ids[0].split(256), strict=True)]
    )[:, 0]
    return {
        "logits": logits.requires_grad_(True),
        "teacher_logits": teacher_logits if variant == "trl" else None,
        "q_logprobs": torch.cat(values)[None],
        "q_ids": q_ids,
        "ids": ids,
        "mask": torch.ones(1, t, dtype=torch.bool),
        "old": (token + 0.1 * torch.randn(t, generator=g))[None],
    }


def _loss(variant: str, x: dict[str, Any], k: int, chunk_size: int) -> Any:
    if variant == "trl":
        return trl_loss(x["logits"], x["teacher_logits"], x["ids"], x["mask"], x["old"], k)
    if variant == "unchunked":
        return unchunked_loss(
            x["logits"], x["q_logprobs"], x["q_ids"], x["ids"], x["mask"], x["old"]
        )
    from claas import sdpo

    teacher = sdpo.TeacherTopK(x["q_logprobs"], x["q_ids"])
    loss, _ = sdpo.sdpo_loss(
        x["logits"], teacher, x["ids"], x["mask"], old_logprobs=x["old"], chunk_size=chunk_size
    )
    return loss


def measure_loss(
    *, variant: str, t: int, v: int, k: int, chunk_size: int, threads: int | None, seed: int
) -> dict[str, Any]:
    """Child: one forward + backward of ``variant``; wall time and peak RSS above the inputs."""
    m.set_threads(threads)
    import torch

    _loss(variant, _inputs(8, v, k, variant, seed), k, chunk_size).backward()  # kernels, imports
    x = _inputs(t, v, k, variant, seed)
    m.reset_peak_rss()
    baseline = m.rss()
    started = time.perf_counter()
    loss = _loss(variant, x, k, chunk_size)
    forward = time.perf_counter() - started
    loss.backward()
    seconds = time.perf_counter() - started
    peak = m.peak_rss() - baseline
    grad = x["logits"].grad
    assert grad is not None
    return {
        "seconds": seconds,
        "forward": forward,
        "peak": peak,
        "loss": float(loss.detach()),
        "grad_norm": float(grad.float().norm()),
        "inputs": baseline,
        "torch": torch.__version__,
    }


def _trl_python(options: Any) -> tuple[str | None, str]:
    """An interpreter where trl's SDPO utilities import, or None and the reason."""
    candidates = [options.trl_python] if options.trl_python else [sys.executable]
    probe = "import trl.experimental.sdpo.loss_utils, trl.trainer.utils"
    for python in candidates:
        try:
            done = subprocess.run([python, "-c", probe], capture_output=True, timeout=300)
        except (OSError, subprocess.TimeoutExpired) as exc:
            return None, f"{python}: {exc}"
        if done.returncode == 0:
            return python, ""
    where = options.trl_python or "this interpreter"
    return None, f"trl (1.16+) does not import in {where}; set CLAAS_BENCH_TRL_PYTHON"


def run(options: Any) -> list[m.Row]:
    """Memory and time of chunked vs unchunked (goals) and vs TRL (information)."""
    t, v, k, c = options.loss_t, options.loss_v, options.loss_k, options.chunk_size
    size = f"T={t}, V={v}, K={k}"
    trl_python, why = _trl_python(options)
    variants = ["chunked", "unchunked"] + (["trl"] if trl_python else [])
    env = {"OMP_NUM_THREADS": str(options.threads)} if options.threads else {}
    results: dict[str, list[dict[str, Any]]] = {name: [] for name in variants}
    for i in range(options.loss_repeats):
        for name in variants if i % 2 == 0 else reversed(variants):
            print(f"[loss] round {i + 1}: {name}", file=sys.stderr)
            args = {
                "variant": name,
                "t": t,
                "v": v,
                "k": k,
                "chunk_size": c,
                "threads": options.threads,
                "seed": i,
            }
            python = trl_python if name == "trl" else None
            results[name].append(m.run_child(SCRIPT, "measure_loss", args, python=python, env=env))
    chunked, plain = results["chunked"], results["unchunked"]
    agree = max(
        abs(a["loss"] - b["loss"]) / max(abs(b["loss"]), 1e-30)
        for a, b in zip(chunked, plain, strict=True)
    )
    grads = max(
        abs(a["grad_norm"] - b["grad_norm"]) / max(b["grad_norm"], 1e-30)
        for a, b in zip(chunked, plain, strict=True)
    )
    rows = _pair_rows(
        f"loss chunked C={c} vs fp32 unchunked ({size})",
        chunked,
        plain,
        m.at_most(0.25),
        m.at_most(1.1),
    )
    rows[0] = _with_note(
        rows[0],
        f"loss values agree to {agree:.1e} (relative), gradient "
        f"norms to {grads:.1e}; {len(chunked)} rounds",
    )
    if trl_python:
        rows += _pair_rows(
            f"loss chunked vs TRL sdpo loss_utils ({size})",
            chunked,
            results["trl"],
            m.info(),
            m.info(),
        )
        rows[-2] = _with_note(
            rows[-2],
            "TRL uses the student's top-K and full teacher "
            "logits (another [T, V] input, not counted)",
        )
    else:
        rows += m.skipped_rows([f"loss vs TRL ({size})"], why)
    return rows


def _pair_rows(
    name: str, a: list[dict[str, Any]], b: list[dict[str, Any]], mem: m.Goal, time_: m.Goal
) -> list[m.Row]:
    gib = 1024**3
    peak_a, peak_b = [r["peak"] for r in a], [r["peak"] for r in b]
    secs_a, secs_b = [r["seconds"] for r in a], [r["seconds"] for r in b]
    return [
        m.Row(
            name=f"{name}: peak memory",
            measured=f"{m.median(peak_a) / gib:.2f} GiB",
            reference=f"{m.median(peak_b) / gib:.2f} GiB",
            ratio=m.median_ratio(peak_a, peak_b),
            goal=mem,
        ),
        m.Row(
            name=f"{name}: fwd+bwd time",
            measured=f"{m.median(secs_a):.3g} s",
            reference=f"{m.median(secs_b):.3g} s",
            ratio=m.median_ratio(secs_a, secs_b),
            goal=time_,
        ),
    ]


def _with_note(row: m.Row, note: str) -> m.Row:
    from dataclasses import replace

    return replace(row, note=note)


if __name__ == "__main__":
    m.child_main({"measure_loss": measure_loss})
