"""Properties of the SDPO loss, each fast path checked against an independent float64 reference."""

from __future__ import annotations

import itertools
import math
from typing import Any, NamedTuple

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch import Tensor
from torch.utils._python_dispatch import TorchDispatchMode

from claas import sdpo
from claas.sdpo import TeacherTopK

F64 = torch.float64
SETTINGS = settings(max_examples=25, deadline=None, derandomize=True)
ALPHAS = st.sampled_from([0.0, 0.1, 0.5, 0.9, 1.0])


class Case(NamedTuple):
    """Random student and teacher logits ``[B, T, V]`` (float64) and a batch around them."""

    s: Tensor
    q: Tensor
    ids: Tensor
    mask: Tensor
    old: Tensor
    base: Tensor

    @property
    def dims(self) -> tuple[int, int, int]:
        b, t, v = self.s.shape
        return b, t, v


@st.composite
def cases(draw: Any) -> Case:
    b, t = draw(st.integers(1, 2)), draw(st.integers(1, 5))
    v = draw(st.integers(2, 12))
    scale = draw(st.sampled_from([0.3, 1.0, 4.0]))
    g = torch.Generator().manual_seed(draw(st.integers(0, 2**31 - 1)))
    s, q = (torch.randn(b, t, v, generator=g, dtype=F64) * scale for _ in range(2))
    ids = torch.randint(0, v, (b, t), generator=g)
    mask = torch.rand(b, t, generator=g) < 0.7
    old = s.log_softmax(-1).gather(-1, ids[..., None])[..., 0] + torch.randn(b, t, generator=g)
    base = s.log_softmax(-1).gather(-1, ids[..., None])[..., 0] + torch.randn(b, t, generator=g)
    return Case(s, q, ids, mask, old, base)


def logprobs(x: Tensor) -> Tensor:
    return x.log_softmax(-1)


# ---- float64 reference: explicit probabilities, no logsumexp ----------------------------------


def ref_kl(p: Tensor, r: Tensor) -> Tensor:
    return (p * (p.log() - r.log())).sum(-1)


def ref_divergence_probs(ps: Tensor, pq: Tensor, alpha: float) -> Tensor:
    if alpha == 0.0:
        return ref_kl(pq, ps)
    if alpha == 1.0:
        return ref_kl(ps, pq)
    m = alpha * pq + (1 - alpha) * ps
    return alpha * ref_kl(pq, m) + (1 - alpha) * ref_kl(ps, m)


def probs(logits: Tensor) -> Tensor:
    e = (logits.to(F64) - logits.to(F64).amax(-1, keepdim=True)).exp()
    return e / e.sum(-1, keepdim=True)


def ref_divergence(s_logits: Tensor, q_logits: Tensor, alpha: float) -> Tensor:
    return ref_divergence_probs(probs(s_logits), probs(q_logits), alpha)


def ref_topk_divergence(s_logits: Tensor, q_logits: Tensor, k: int, alpha: float, tail: bool):
    ps, pq = probs(s_logits), probs(q_logits)
    ids = pq.argsort(-1, descending=True)[..., :k]
    ps_k, pq_k = ps.gather(-1, ids), pq.gather(-1, ids)
    if tail:
        ps_k = torch.cat([ps_k, 1 - ps_k.sum(-1, keepdim=True)], -1)
        pq_k = torch.cat([pq_k, 1 - pq_k.sum(-1, keepdim=True)], -1)
        # A tail of exactly 0 on both sides contributes 0 (0 log 0 = 0).
        ps_k, pq_k = ps_k.clamp(min=1e-300), pq_k.clamp(min=1e-300)
    else:
        ps_k, pq_k = ps_k / ps_k.sum(-1, keepdim=True), pq_k / pq_k.sum(-1, keepdim=True)
    return ref_divergence_probs(ps_k, pq_k, alpha)


# ---- divergence properties -------------------------------------------------------------------


@SETTINGS
@given(cases(), ALPHAS, st.integers(1, 12), st.booleans())
def test_identical_distributions_have_zero_divergence(c: Case, alpha, k, tail) -> None:
    s = logprobs(c.s).float()
    assert sdpo.divergence(s, s, alpha=alpha).abs().max() < 1e-6
    top = sdpo.teacher_topk(s, k)
    assert sdpo.divergence(s, top, alpha=alpha, add_tail=tail).abs().max() < 1e-6


@SETTINGS
@given(cases(), ALPHAS, st.integers(1, 12), st.booleans())
def test_divergence_is_non_negative(c: Case, alpha, k, tail) -> None:
    s, q = logprobs(c.s).float(), logprobs(c.q).float()
    assert sdpo.divergence(s, q, alpha=alpha).min() >= -1e-6
    top = sdpo.teacher_topk(q, k)
    assert sdpo.divergence(s, top, alpha=alpha, add_tail=tail).min() >= -1e-6


@SETTINGS
@given(cases())
def test_jsd_at_half_is_symmetric(c: Case) -> None:
    s, q = logprobs(c.s).float(), logprobs(c.q).float()
    d_sq = sdpo.divergence(s, q, alpha=0.5)
    d_qs = sdpo.divergence(q, s, alpha=0.5)
    torch.testing.assert_close(d_sq, d_qs, rtol=1e-5, atol=1e-7)


@SETTINGS
@given(cases())
def test_endpoints_are_plain_kl(c: Case) -> None:
    ps, pq = probs(c.s), probs(c.q)
    forward = (pq * (pq / ps).log()).sum(-1)
    reverse = (ps * (ps / pq).log()).sum(-1)
    s, q = logprobs(c.s), logprobs(c.q)
    torch.testing.assert_close(sdpo.divergence(s, q, alpha=0.0), forward, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(sdpo.divergence(s, q, alpha=1.0), reverse, rtol=1e-9, atol=1e-12)
    d32 = sdpo.divergence(s.float(), q.float(), alpha=0.0).double()
    torch.testing.assert_close(d32, forward, rtol=1e-4, atol=1e-6)


@SETTINGS
@given(cases(), ALPHAS)
def test_full_vocab_matches_float64_reference(c: Case, alpha) -> None:
    ref = ref_divergence(c.s, c.q, alpha)
    got = sdpo.divergence(logprobs(c.s), logprobs(c.q), alpha=alpha)
    assert got.dtype == F64
    assert ((got - ref).abs() <= 1e-6 * ref.abs() + 1e-12).all()
    got32 = sdpo.divergence(logprobs(c.s).float(), logprobs(c.q).float(), alpha=alpha)
    assert got32.dtype == torch.float32
    torch.testing.assert_close(got32.double(), ref, rtol=1e-4, atol=1e-6)


@SETTINGS
@given(cases(), ALPHAS, st.integers(1, 12), st.booleans())
def test_topk_matches_float64_reference(c: Case, alpha, k, tail) -> None:
    k = min(k, c.dims[2])
    ref = ref_topk_divergence(c.s, c.q, k, alpha, tail)
    got = sdpo.divergence(
        logprobs(c.s), sdpo.teacher_topk(logprobs(c.q), k), alpha=alpha, add_tail=tail
    )
    torch.testing.assert_close(got, ref, rtol=1e-6, atol=1e-10)


@SETTINGS
@given(cases(), ALPHAS)
def test_topk_with_tail_approaches_full_vocab(c: Case, alpha) -> None:
    s, q = logprobs(c.s), logprobs(c.q)
    full = sdpo.divergence(s, q, alpha=alpha)
    v = c.dims[2]
    top = sdpo.teacher_topk(q, v)
    by_k = [
        sdpo.divergence(s, TeacherTopK(top.logprobs[..., :k], top.ids[..., :k]), alpha=alpha)
        for k in range(1, v + 1)
    ]
    torch.testing.assert_close(by_k[-1], full, rtol=1e-9, atol=1e-12)
    # Lumping the tail is a coarse-graining: D_K <= D_{K+1} <= D_full (data processing).
    # Slack: a tiny teacher tail 1 - sum(top-K) keeps only ~eps / tail relative precision.
    for smaller, larger in itertools.pairwise(by_k):
        assert (smaller <= larger * (1 + 1e-6) + 1e-12).all()
    no_tail = sdpo.divergence(s, top, alpha=alpha, add_tail=False)
    torch.testing.assert_close(no_tail, full, rtol=1e-9, atol=1e-12)


def test_tail_stays_finite_when_topk_holds_all_mass() -> None:
    q = torch.tensor([[[0.0, -200.0, -200.0]]]).log_softmax(-1)
    s = torch.tensor([[[0.0, -1.0, -2.0]]]).log_softmax(-1)
    s.requires_grad_(True)
    d = sdpo.divergence(s, sdpo.teacher_topk(q, 1), alpha=0.5)
    d.sum().backward()
    assert torch.isfinite(d).all() and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("alpha", [0.0, 0.5])
def test_teacher_with_zero_probability_tokens_is_finite(alpha: float) -> None:
    q = torch.tensor([[[0.0, float("-inf"), -1.0]]]).log_softmax(-1)
    s = torch.tensor([[[0.5, -1.0, 0.0]]], requires_grad=True)
    d = sdpo.divergence(s.log_softmax(-1), q, alpha=alpha)
    d.sum().backward()
    assert torch.isfinite(d).all() and torch.isfinite(s.grad).all()


@pytest.mark.parametrize("topk", [False, True])
def test_gradients_reach_only_the_student(topk: bool) -> None:
    g = torch.Generator().manual_seed(0)
    s_logits = torch.randn(2, 3, 7, generator=g, requires_grad=True)
    q = torch.randn(2, 3, 7, generator=g).log_softmax(-1).requires_grad_(True)
    ids = torch.randint(0, 7, (2, 3), generator=g)
    teacher: Tensor | TeacherTopK = q
    if topk:
        top = sdpo.teacher_topk(q, 3, sampled_ids=ids)
        teacher = TeacherTopK(*(t.detach().requires_grad_(t.is_floating_point()) for t in top))
    base, old = torch.randn(2, 3, requires_grad=True), torch.randn(2, 3, requires_grad=True)
    for kind in ("divergence", "token"):
        loss, _ = sdpo.sdpo_loss(
            s_logits,
            teacher,
            ids,
            torch.ones(2, 3),
            loss=kind,
            base_token_logprobs=base,
            kl_beta=0.5,
            old_logprobs=old,
        )
        loss.backward()
    leaves = [teacher] if not topk else [teacher.logprobs, teacher.token_logprobs]
    assert all(t.grad is None for t in [*leaves, base, old])
    assert s_logits.grad is not None and s_logits.grad.abs().sum() > 0


# ---- the full loss ---------------------------------------------------------------------------


def make_teacher(c: Case, kind: str, k: int) -> Tensor | TeacherTopK:
    q = logprobs(c.q)
    return q if kind == "full" else sdpo.teacher_topk(q, k, sampled_ids=c.ids)


LOSS_KW = st.fixed_dictionaries(
    {
        "alpha": ALPHAS,
        "add_tail": st.booleans(),
        "loss": st.sampled_from(sdpo.LOSS_KINDS),
        "is_clip": st.sampled_from([0.5, 2.0]),
        "kl_beta": st.sampled_from([0.0, 0.3]),
    }
)


def loss_and_grads(fn: Any, inputs: tuple[Tensor, ...], *args: Any, **kw: Any):
    loss, metrics = fn(*inputs, *args, **kw)
    return loss, torch.autograd.grad(loss, inputs), metrics


@SETTINGS
@given(cases(), LOSS_KW, st.sampled_from(["full", "topk"]), st.integers(1, 3), st.booleans())
def test_chunked_equals_unchunked(c: Case, kw, teacher_kind, chunk, weighted) -> None:
    teacher = make_teacher(c, teacher_kind, 4)
    extra = {"old_logprobs": c.old if weighted else None, "base_token_logprobs": c.base}
    args = (teacher, c.ids, c.mask)
    logits = c.s.clone().requires_grad_(True)
    plain = loss_and_grads(sdpo.sdpo_loss, (logits,), *args, **kw, **extra)
    chunked = loss_and_grads(sdpo.sdpo_loss, (logits,), *args, **kw, **extra, chunk_size=chunk)
    torch.testing.assert_close(chunked[0], plain[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(chunked[1], plain[1], rtol=1e-12, atol=1e-12)
    assert chunked[2] == pytest.approx(plain[2], rel=1e-9, abs=1e-12)


@SETTINGS
@given(
    cases(),
    LOSS_KW,
    st.sampled_from(["full", "topk"]),
    st.sampled_from([1, 2, 3, 4, 10_000]),  # 10_000: one chunk, logits kept for backward
    st.booleans(),
)
def test_from_hidden_equals_logits_path(c: Case, kw, teacher_kind, chunk, bias) -> None:
    b, t, v = c.dims
    g = torch.Generator().manual_seed(1)
    hidden = torch.randn(b, t, 3, generator=g, dtype=F64, requires_grad=True)
    weight = torch.randn(v, 3, generator=g, dtype=F64, requires_grad=True)
    b_v = torch.randn(v, generator=g, dtype=F64, requires_grad=True) if bias else None
    inputs = (hidden, weight) + ((b_v,) if b_v is not None else ())
    teacher = make_teacher(c, teacher_kind, 5)
    extra = {"old_logprobs": c.old, "base_token_logprobs": c.base, **kw}

    def from_logits(h: Tensor, w: Tensor, bb: Tensor | None = None, **rest: Any):
        return sdpo.sdpo_loss(torch.nn.functional.linear(h, w, bb), **rest)

    ref = loss_and_grads(
        from_logits, inputs, teacher=teacher, response_ids=c.ids, mask=c.mask, **extra
    )
    got = loss_and_grads(
        lambda h, w, bb=None, **rest: sdpo.sdpo_loss_from_hidden(h, w, lm_head_bias=bb, **rest),
        inputs,
        teacher=teacher,
        response_ids=c.ids,
        mask=c.mask,
        chunk_size=chunk,
        **extra,
    )
    torch.testing.assert_close(got[0], ref[0], rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got[1], ref[1], rtol=1e-10, atol=1e-12)


@pytest.mark.parametrize("chunk", [None, 2])
@pytest.mark.parametrize("kind", sdpo.LOSS_KINDS)
@pytest.mark.parametrize("t", [0, 3])
def test_all_masked_batch_gives_finite_zero(chunk: int | None, kind: str, t: int) -> None:
    logits = torch.randn(2, t, 5, requires_grad=True)
    q = torch.randn(2, t, 5).log_softmax(-1)
    ids = torch.full((2, t), -100)  # padding ids at masked positions are fine
    loss, metrics = sdpo.sdpo_loss(
        logits,
        q,
        ids,
        torch.zeros(2, t),
        loss=kind,
        chunk_size=chunk,
        old_logprobs=torch.zeros(2, t),
        base_token_logprobs=torch.zeros(2, t),
        kl_beta=0.1,
    )
    assert loss.item() == 0.0 and loss.requires_grad
    loss.backward()
    assert logits.grad is not None and (logits.grad == 0).all()
    assert metrics["tokens"] == 0.0 and metrics["loss"] == 0.0


def test_masked_mean_and_metrics() -> None:
    g = torch.Generator().manual_seed(3)
    logits, q = torch.randn(2, 4, 6, generator=g), torch.randn(2, 4, 6, generator=g)
    q = q.log_softmax(-1)
    ids = torch.randint(0, 6, (2, 4), generator=g)
    mask = torch.tensor([[1, 1, 0, 0], [1, 0, 0, 0]])
    loss, m = sdpo.sdpo_loss(logits, q, ids, mask)
    d = sdpo.divergence(logits.log_softmax(-1), q, alpha=0.5)
    assert loss.item() == pytest.approx((d[0, 0] + d[0, 1] + d[1, 0]).item() / 3, rel=1e-6)
    assert set(m) == {
        "loss",
        "distill_loss",
        "kl_to_base",
        "is_ratio_mean",
        "is_clip_frac",
        "tokens",
    }
    assert m["tokens"] == 3.0 and m["loss"] == pytest.approx(m["distill_loss"])
    assert (m["kl_to_base"], m["is_ratio_mean"], m["is_clip_frac"]) == (0.0, 1.0, 0.0)


def test_importance_weights_clip_and_metrics() -> None:
    student = torch.zeros(1, 4, requires_grad=True)
    old = -torch.tensor([[math.log(0.5), math.log(3.0), 100.0, -100.0]])
    w, clipped = sdpo.importance_weights(student, old, clip=2.0)
    expected = torch.tensor([[0.5, 2.0, 2.0, math.exp(-20.0)]])
    torch.testing.assert_close(w, expected)
    assert clipped.tolist() == [[False, True, True, False]] and not w.requires_grad
    # In the loss: the clip fraction is over masked tokens only.
    logits = torch.zeros(1, 4, 3)
    ids = torch.zeros(1, 4, dtype=torch.long)
    old_tok = old + logits.log_softmax(-1)[..., 0]
    mask = torch.tensor([[1, 1, 1, 0]])
    _, m = sdpo.sdpo_loss(logits, logits.log_softmax(-1), ids, mask, old_logprobs=old_tok)
    assert m["is_clip_frac"] == pytest.approx(2 / 3)
    assert m["is_ratio_mean"] == pytest.approx((0.5 + 3.0 + math.exp(20.0)) / 3)


def test_importance_weights_scale_the_per_token_loss() -> None:
    g = torch.Generator().manual_seed(5)
    logits, q = torch.randn(1, 3, 4, generator=g), torch.randn(1, 3, 4, generator=g)
    q, ids, mask = q.log_softmax(-1), torch.tensor([[0, 1, 2]]), torch.ones(1, 3)
    s_tok = logits.log_softmax(-1).gather(-1, ids[..., None])[..., 0]
    old = s_tok - torch.tensor([[0.0, 0.5, 5.0]])  # ratios 1, e^0.5, e^5 (clipped to 2)
    loss, _ = sdpo.sdpo_loss(logits, q, ids, mask, old_logprobs=old, is_clip=2.0)
    d = sdpo.divergence(logits.log_softmax(-1), q, alpha=0.5)[0]
    expected = (d[0] + math.exp(0.5) * d[1] + 2.0 * d[2]) / 3
    assert loss.item() == pytest.approx(expected.item(), rel=1e-6)


@SETTINGS
@given(cases())
def test_k3_is_non_negative_zero_at_equal_and_grads_only_the_student(c: Case) -> None:
    s = logprobs(c.s).gather(-1, c.ids[..., None])[..., 0].requires_grad_(True)
    base = c.base.clone().requires_grad_(True)
    k3 = sdpo.kl_to_base_k3(s, base)
    assert (k3 >= 0).all()
    assert (sdpo.kl_to_base_k3(s, s.detach()) == 0).all()
    k3.sum().backward()
    assert base.grad is None
    torch.testing.assert_close(s.grad, 1 - (c.base - s.detach()).exp())


@SETTINGS
@given(cases())
def test_token_level_gradient_is_minus_advantage_times_score(c: Case) -> None:
    v = c.dims[2]
    logits = c.s.clone().requires_grad_(True)
    q = logprobs(c.q)
    loss, _ = sdpo.sdpo_loss(logits, q, c.ids, c.mask, loss="token")
    loss.backward()
    s = logprobs(c.s)
    advantage = (q - s).gather(-1, c.ids[..., None])  # [B, T, 1]
    score = torch.nn.functional.one_hot(c.ids, v).to(F64) - s.exp()  # grad of log s(y)
    n = c.mask.sum().clamp(min=1)
    expected = -advantage * score * c.mask[..., None] / n
    torch.testing.assert_close(logits.grad, expected)
    top = sdpo.teacher_topk(q, 2, sampled_ids=c.ids)
    torch.testing.assert_close(sdpo.sdpo_loss(c.s, top, c.ids, c.mask, loss="token")[0], loss)


@SETTINGS
@given(cases(), st.integers(1, 14), st.integers(1, 7), st.booleans())
def test_teacher_topk_from_hidden_matches_full_logits(c: Case, k, chunk, bias) -> None:
    b, t, v = c.dims
    g = torch.Generator().manual_seed(2)
    hidden = torch.randn(b, t, 4, generator=g, dtype=F64)
    weight = torch.randn(v, 4, generator=g, dtype=F64)
    b_v = torch.randn(v, generator=g, dtype=F64) if bias else None
    got = sdpo.teacher_topk_from_hidden(
        hidden, weight, k, sampled_ids=c.ids, chunk_size=chunk, lm_head_bias=b_v
    )
    q = torch.nn.functional.linear(hidden, weight, b_v).log_softmax(-1)
    ref = sdpo.teacher_topk(q, k, sampled_ids=c.ids)
    assert got.ids.shape == (b, t, min(k, v)) and torch.equal(got.ids, ref.ids)
    torch.testing.assert_close(got.logprobs, ref.logprobs, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(got.token_logprobs, ref.token_logprobs, rtol=1e-12, atol=1e-12)
    assert sdpo.teacher_topk_from_hidden(hidden.float(), weight.float(), k).token_logprobs is None


def test_teacher_topk_from_hidden_keeps_bfloat16_matmul_and_float32_softmax() -> None:
    g = torch.Generator().manual_seed(3)
    hidden = torch.randn(2, 5, 8, generator=g).bfloat16()
    weight = torch.randn(40, 8, generator=g).bfloat16()
    got = sdpo.teacher_topk_from_hidden(hidden, weight, 6, chunk_size=3)
    logits = torch.nn.functional.linear(hidden, weight)  # the bfloat16 matmul
    ref = sdpo.teacher_topk(logits.float().log_softmax(-1), 6)
    assert got.logprobs.dtype == torch.float32
    assert torch.equal(got.ids, ref.ids)
    torch.testing.assert_close(got.logprobs, ref.logprobs, rtol=0, atol=1e-6)


def test_teacher_topk_is_descending_clamped_and_detached() -> None:
    q = torch.randn(2, 3, 5).log_softmax(-1).requires_grad_(True)
    ids = torch.randint(0, 5, (2, 3))
    top = sdpo.teacher_topk(q, 99, sampled_ids=ids)
    assert top.logprobs.shape == (2, 3, 5) and top.ids.dtype == torch.int64
    assert (top.logprobs[..., :-1] >= top.logprobs[..., 1:]).all()
    assert not top.logprobs.requires_grad
    torch.testing.assert_close(top.token_logprobs, q.gather(-1, ids[..., None])[..., 0])


def test_bf16_inputs_give_float32_close_to_float32_path() -> None:
    g = torch.Generator().manual_seed(4)
    logits, q = torch.randn(2, 5, 12, generator=g), torch.randn(2, 5, 12, generator=g)
    q, ids, mask = q.log_softmax(-1), torch.randint(0, 12, (2, 5), generator=g), torch.ones(2, 5)
    s16, q16 = logits.log_softmax(-1).bfloat16(), q.bfloat16()
    d16 = sdpo.divergence(s16, q16, alpha=0.5)
    assert d16.dtype == torch.float32
    torch.testing.assert_close(d16, sdpo.divergence(s16.float(), q16.float(), alpha=0.5))
    torch.testing.assert_close(
        d16, sdpo.divergence(logits.log_softmax(-1), q, alpha=0.5), rtol=0.05, atol=5e-3
    )
    x16 = logits.bfloat16().requires_grad_(True)
    loss16, _ = sdpo.sdpo_loss(x16, sdpo.teacher_topk(q16, 4), ids, mask, chunk_size=3)
    loss16.backward()
    assert loss16.dtype == torch.float32 and x16.grad is not None
    assert x16.grad.dtype == torch.bfloat16
    loss32, _ = sdpo.sdpo_loss(logits, sdpo.teacher_topk(q, 4), ids, mask)
    torch.testing.assert_close(loss16, loss32, rtol=0.05, atol=5e-3)


class _LargestFloat32(TorchDispatchMode):
    """Records the largest float32 tensor any op produces (forward and backward)."""

    def __init__(self) -> None:
        super().__init__()
        self.largest = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, Tensor) and t.dtype == torch.float32:
                self.largest = max(self.largest, t.numel())
        return out


@pytest.mark.parametrize("chunk", [None, 2])
def test_chunks_bound_the_float32_log_softmax(chunk: int | None) -> None:
    b, t, v, c = 2, 8, 12, 2
    logits = torch.randn(b, t, v).bfloat16().requires_grad_(True)
    q = torch.randn(b, t, v).log_softmax(-1).bfloat16()
    ids = torch.randint(0, v, (b, t))
    with _LargestFloat32() as mode:
        loss, _ = sdpo.sdpo_loss(logits, q, ids, torch.ones(b, t), chunk_size=chunk)
        loss.backward()
    assert (mode.largest <= c * v) == (chunk is not None)


def test_from_hidden_never_builds_full_float32_logits() -> None:
    b, t, v, d, c = 2, 8, 12, 3, 2
    hidden = torch.randn(b, t, d, requires_grad=True)
    weight = torch.randn(v, d, requires_grad=True)
    top = sdpo.teacher_topk(torch.randn(b, t, v).log_softmax(-1), 3)
    with _LargestFloat32() as mode:
        loss, _ = sdpo.sdpo_loss_from_hidden(
            hidden, weight, top, torch.randint(0, v, (b, t)), torch.ones(b, t), chunk_size=c
        )
        loss.backward()
        sdpo.teacher_topk_from_hidden(hidden.detach(), weight.detach(), 3, chunk_size=c)
    assert mode.largest <= max(c * v, v * d, b * t * d)


@pytest.mark.parametrize(("chunk", "head_passes"), [(2, 3), (256, 2)])
def test_one_chunk_keeps_its_logits_instead_of_recomputing(chunk: int, head_passes: int) -> None:
    from torch.utils.flop_counter import FlopCounterMode

    b, t, v, d = 2, 8, 50, 16
    hidden = torch.randn(b, t, d, requires_grad=True)
    weight = torch.randn(v, d)  # frozen: the head costs forward + input gradient
    top = sdpo.teacher_topk(torch.randn(b, t, v).log_softmax(-1), 3)
    ids, mask = torch.randint(0, v, (b, t)), torch.ones(b, t)
    with FlopCounterMode(display=False) as counter:
        loss, _ = sdpo.sdpo_loss_from_hidden(hidden, weight, top, ids, mask, chunk_size=chunk)
        loss.backward()
    assert counter.get_total_flops() == head_passes * 2 * b * t * d * v
    # Both ways give the same gradient.
    grad = hidden.grad.clone()
    hidden.grad = None
    loss, _ = sdpo.sdpo_loss_from_hidden(hidden, weight, top, ids, mask, chunk_size=3)
    loss.backward()
    torch.testing.assert_close(hidden.grad, grad)


class _FullSizeStorages(TorchDispatchMode):
    """Records the distinct storages of the tensors of at least ``numel`` elements ops return."""

    def __init__(self, numel: int) -> None:
        super().__init__()
        self.numel = numel
        self.storages: set[int] = set()

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):  # type: ignore[override]
        out = func(*args, **(kwargs or {}))
        for t in out if isinstance(out, tuple | list) else (out,):
            if isinstance(t, Tensor) and t.numel() >= self.numel:
                self.storages.add(t.untyped_storage().data_ptr())
        return out


@pytest.mark.parametrize("from_hidden", [False, True])
def test_chunked_backward_fills_one_input_gradient(from_hidden: bool) -> None:
    # Per-chunk slicing under autograd would build a zero-filled full-size gradient per chunk.
    b, t, v, d, c = 2, 8, 12, 3, 2
    top = sdpo.teacher_topk(torch.randn(b, t, v).log_softmax(-1), 3)
    ids, mask = torch.randint(0, v, (b, t)), torch.ones(b, t)
    x = torch.randn(b, t, d if from_hidden else v, requires_grad=True)
    if from_hidden:
        weight = torch.randn(v, d, requires_grad=True)
        loss, _ = sdpo.sdpo_loss_from_hidden(x, weight, top, ids, mask, chunk_size=c)
    else:
        loss, _ = sdpo.sdpo_loss(x, top, ids, mask, chunk_size=c)
    with _FullSizeStorages(x.numel()) as mode:
        loss.backward()
    assert len(mode.storages) == 1


# ---- argument validation ---------------------------------------------------------------------


def _call(**overrides: Any) -> Any:
    kw: dict[str, Any] = {
        "student_logits": torch.zeros(1, 2, 4),
        "teacher": torch.zeros(1, 2, 4).log_softmax(-1),
        "response_ids": torch.zeros(1, 2, dtype=torch.long),
        "mask": torch.ones(1, 2),
    }
    kw.update(overrides)
    return sdpo.sdpo_loss(**kw)


@pytest.mark.parametrize(
    ("overrides", "match"),
    [
        ({"alpha": 1.5}, "alpha"),
        ({"alpha": -0.1}, "alpha"),
        ({"loss": "ppo"}, "loss"),
        ({"is_clip": 0.0}, "is_clip"),
        ({"kl_beta": -1.0}, "kl_beta"),
        ({"kl_beta": 0.1}, "base_token_logprobs"),
        ({"chunk_size": 0}, "chunk_size"),
        ({"mask": torch.ones(1, 3)}, "mask"),
        ({"teacher": torch.zeros(1, 2, 5)}, "teacher"),
        ({"old_logprobs": torch.zeros(2, 2)}, "old_logprobs"),
        ({"response_ids": torch.full((1, 2), 4)}, "outside"),
        ({"student_logits": torch.zeros(2, 4)}, "student_logits"),
        ({"teacher": TeacherTopK(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2))}, "ids"),
        ({"teacher": TeacherTopK(torch.zeros(1, 2, 5), torch.zeros(1, 2, 5).long())}, "K=5"),
        (
            {
                "teacher": TeacherTopK(torch.zeros(1, 2, 2), torch.zeros(1, 2, 2).long()),
                "loss": "token",
            },
            "token_logprobs",
        ),
    ],
)
def test_bad_arguments_raise_value_error(overrides: dict[str, Any], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        _call(**overrides)


def test_bad_arguments_of_the_small_functions_raise_value_error() -> None:
    q = torch.zeros(1, 2, 4)
    with pytest.raises(ValueError, match="k=0"):
        sdpo.teacher_topk(q, 0)
    with pytest.raises(ValueError, match="alpha"):
        sdpo.divergence(q, q, alpha=2.0)
    with pytest.raises(ValueError, match="teacher"):
        sdpo.divergence(q, torch.zeros(1, 2, 3), alpha=0.5)
    with pytest.raises(ValueError, match="is_clip"):
        sdpo.importance_weights(q[..., 0], q[..., 0], clip=-1.0)
    with pytest.raises(ValueError, match="lm_head_weight"):
        sdpo.teacher_topk_from_hidden(q, torch.zeros(5, 3), 2)


# ---- module layout ---------------------------------------------------------------------------


def test_public_names_are_defined_in_sdpo_and_the_chunked_module_does_not_import_it() -> None:
    import ast
    import inspect

    from claas import _sdpo_chunked

    # The reference page documents ``claas.sdpo``: its public names must live there.
    defined = [getattr(sdpo, name) for name in sdpo.__all__ if name != "LOSS_KINDS"]
    assert {obj.__module__ for obj in defined} == {"claas.sdpo"}
    # The chunked autograd sits below the math: it takes the terms as arguments.
    tree = ast.parse(inspect.getsource(_sdpo_chunked))
    imported = {n.module for n in ast.walk(tree) if isinstance(n, ast.ImportFrom)}
    assert not any(module and module.startswith("claas") for module in imported)
