"""SDPO loss: distill a feedback-conditioned teacher into the student, position by position.

Pure tensor functions: no model, no I/O, no state. Notation, per response position t
(``y_1..y_T`` are the sampled response ids, exactly as served):

- ``s`` student log-probs ``log pi_theta(. | x, y<t)``, ``[B, T, V]``;
- ``q`` teacher log-probs ``log pi_T(. | x + feedback, y<t)``, ``[B, T, V]``, or the
  teacher's top-K as a :class:`TeacherTopK` (``[B, T, K]`` log-probs and ids);
- ``mask`` ``[B, T]``, 1 for a real response token.

Divergence ``D_t`` with interpolation ``alpha`` in [0, 1]:

- ``alpha == 0``: forward KL(q || s) = sum q (log q - log s);
- ``alpha == 1``: reverse KL(s || q);
- ``0 < alpha < 1``: generalized JSD with ``m = alpha q + (1 - alpha) s`` (probabilities,
  mixed in log space), ``D = alpha KL(q || m) + (1 - alpha) KL(s || m)``.

The JSD tends to 0 at both endpoints, so the endpoints are dispatched explicitly.
On a top-K support the student is gathered at the teacher's ids; with ``add_tail`` both
sides get a (K+1)-th atom ``log(1 - sum_topK p)``, otherwise both are renormalized on K.

Token-level variant (teacher gives only ``log q_t(y_t)``): ``A_t = sg(log q_t(y_t) -
log s_t(y_t))``, loss ``-A_t log s_t(y_t)``. The per-token loss is
``l_t = w_t D_t + beta k3_t`` with the detached off-policy weight
``w_t = min(exp(log s_t(y_t) - log s_old(y_t)), c)`` and ``k3_t = exp(r) - 1 - r``,
``r = log b(y_t) - log s_t(y_t)``. The loss is the masked token mean over the whole batch,
``sum(l mask) / max(sum(mask), 1)``: an all-masked batch gives exactly 0.

All math runs in float32 or better; teacher inputs are detached. With ``chunk_size`` the
float32 log-softmax exists for at most C positions at a time, in forward and backward:
the chunked autograd that does this lives in :mod:`claas._sdpo_chunked`, which takes the
per-position terms defined here as arguments.
"""

from __future__ import annotations

import math
from functools import partial
from typing import Any, NamedTuple, get_args

import torch
import torch.nn.functional as F
from torch import Tensor

from claas._sdpo_chunked import chunked_terms, chunked_topk_terms, float_dtype, linear, slices
from claas.errors import InvalidConfig, InvalidRequest
from claas.types import LossKind

__all__ = [
    "LOSS_KINDS",
    "TeacherTopK",
    "divergence",
    "importance_weights",
    "kl_to_base_k3",
    "sdpo_loss",
    "sdpo_loss_from_hidden",
    "teacher_topk",
    "teacher_topk_from_hidden",
    "token_level_loss",
]

LOSS_KINDS = get_args(LossKind)
_LOG_RATIO_CLAMP = 20.0


class TeacherTopK(NamedTuple):
    """The teacher's top-K next-token distribution at each response position.

    Attributes:
        logprobs: ``[B, T, K]`` teacher log-probs (normalized over the full vocabulary) of
            its K most likely tokens, descending.
        ids: ``[B, T, K]`` int64 token ids of those tokens.
        token_logprobs: ``[B, T]`` teacher log-prob of the sampled response token, or None;
            required by the token-level loss.
    """

    logprobs: Tensor
    ids: Tensor
    token_logprobs: Tensor | None = None


Teacher = Tensor | TeacherTopK


def _check_shape(t: Tensor, shape: tuple[int, ...] | torch.Size, name: str) -> None:
    if tuple(t.shape) != tuple(shape):
        raise InvalidRequest(f"{name} has shape {tuple(t.shape)}, expected {tuple(shape)}")


def _check_rank(t: Tensor, rank: int, name: str, dims: str) -> None:
    if t.dim() != rank:
        raise InvalidRequest(f"{name} must be {dims}, got shape {tuple(t.shape)}")


def _require(ok: bool, message: str, error: type[ValueError] = InvalidConfig) -> None:
    if not ok:
        raise error(message)


def _check_teacher(teacher: Teacher, b: int, t: int, v: int, *, loss: str) -> None:
    """Check a teacher against student dims ``[B, T, V]`` for the given loss kind."""
    if not isinstance(teacher, TeacherTopK):
        _check_shape(teacher, (b, t, v), "teacher log-probs")
        return
    _check_rank(teacher.logprobs, 3, "TeacherTopK.logprobs", "[B, T, K]")
    k = teacher.logprobs.shape[-1]
    _check_shape(teacher.logprobs, (b, t, k), "TeacherTopK.logprobs")
    _check_shape(teacher.ids, (b, t, k), "TeacherTopK.ids")
    _require(not teacher.ids.is_floating_point(), "TeacherTopK.ids must be ids", InvalidRequest)
    _require(1 <= k <= v, f"TeacherTopK holds K={k} tokens, need 1 <= K <= V={v}", InvalidRequest)
    if teacher.token_logprobs is not None:
        _check_shape(teacher.token_logprobs, (b, t), "TeacherTopK.token_logprobs")
    msg = "loss='token' needs TeacherTopK.token_logprobs (got None)"
    _require(loss != "token" or teacher.token_logprobs is not None, msg, InvalidRequest)


def teacher_topk(
    teacher_logprobs: Tensor, k: int, *, sampled_ids: Tensor | None = None
) -> TeacherTopK:
    """Keep the teacher's K most likely tokens per position.

    Args:
        teacher_logprobs: ``[B, T, V]`` log-softmaxed teacher distribution.
        k: Number of tokens to keep; clamped to V.
        sampled_ids: ``[B, T]`` sampled response ids; fills ``token_logprobs`` if given.

    Returns:
        A detached :class:`TeacherTopK`, log-probs descending.

    Raises:
        ValueError: ``k < 1`` or a shape mismatch.
    """
    _require(k >= 1, f"k={k!r}: the number of teacher tokens must be >= 1")
    _check_rank(teacher_logprobs, 3, "teacher_logprobs", "[B, T, V]")
    q = teacher_logprobs.detach()
    values, ids = q.topk(min(k, q.shape[-1]), dim=-1)
    token_logprobs = None
    if sampled_ids is not None:
        _check_shape(sampled_ids, q.shape[:2], "sampled_ids")
        token_logprobs = q.gather(-1, sampled_ids.long().unsqueeze(-1)).squeeze(-1)
    return TeacherTopK(values, ids, token_logprobs)


@torch.no_grad()
def teacher_topk_from_hidden(
    hidden: Tensor,
    lm_head_weight: Tensor,
    k: int,
    *,
    sampled_ids: Tensor | None = None,
    chunk_size: int = 256,
    lm_head_bias: Tensor | None = None,
) -> TeacherTopK:
    """Top-K teacher from final hidden states, without materializing ``[B, T, V]``.

    Logits are computed C positions at a time in the inputs' promoted dtype, as
    ``hidden @ W.T`` would (so bfloat16 inputs use a bfloat16 matmul); the log-softmax
    runs in float32, or float64 if an input is float64.

    Args:
        hidden: ``[B, T, D]`` teacher hidden states before the LM head.
        lm_head_weight: ``[V, D]`` LM head weight.
        k: Number of tokens to keep; clamped to V.
        sampled_ids: ``[B, T]`` sampled response ids; fills ``token_logprobs`` if given.
        chunk_size: Positions (over the flattened ``B * T``) per chunk.
        lm_head_bias: ``[V]`` LM head bias, if the head has one.

    Returns:
        Same as ``teacher_topk(log_softmax(hidden @ W.T + b), k, sampled_ids=...)``.

    Raises:
        ValueError: ``k < 1``, ``chunk_size < 1`` or a shape mismatch.
    """
    _require(chunk_size >= 1, f"chunk_size={chunk_size!r}: must be >= 1")
    b, t, _ = _check_head(hidden, lm_head_weight, lm_head_bias)
    if sampled_ids is not None:
        _check_shape(sampled_ids, (b, t), "sampled_ids")
    weight = lm_head_weight
    h = hidden.flatten(0, 1)
    ids = torch.zeros(b * t, dtype=torch.long, device=h.device)
    ids = ids if sampled_ids is None else sampled_ids.flatten()
    parts: list[Any] = []
    for sl in slices(max(b * t, 1), chunk_size):  # one (empty) chunk when B * T == 0
        logits = linear(h[sl], weight, lm_head_bias)
        q = F.log_softmax(logits, dim=-1, dtype=float_dtype(logits))
        parts.append(teacher_topk(q[None], k, sampled_ids=ids[sl][None]))
    kk = min(k, weight.shape[0])
    logprobs, top_ids, token = (torch.cat(p, dim=1) for p in zip(*parts, strict=True))
    tok = None if sampled_ids is None else token.view(b, t)
    return TeacherTopK(logprobs.view(b, t, kk), top_ids.view(b, t, kk), tok)


def _kl(logp: Tensor, logr: Tensor) -> Tensor:
    """KL(p || r) over the last dim; atoms with p == 0 contribute exactly 0."""
    terms = logp.exp() * (logp - logr)
    return torch.where(torch.isneginf(logp), 0.0, terms).sum(-1)


def _interpolated(s: Tensor, q: Tensor, alpha: float) -> Tensor:
    """D(s, q) over the last dim; both already normalized over the same atoms."""
    if alpha == 0.0:
        return _kl(q, s)
    if alpha == 1.0:
        return _kl(s, q)
    m = torch.logaddexp(q + math.log(alpha), s + math.log1p(-alpha))
    return alpha * _kl(q, m) + (1.0 - alpha) * _kl(s, m)


def _with_tail(logp: Tensor) -> Tensor:
    """Append the atom ``log(1 - sum exp(logp))``, computed stably: ``[..., K] -> [..., K+1]``."""
    lse = logp.logsumexp(-1, keepdim=True)
    # Rounding can push the top-K mass to (or past) 1; keep the tail finite and positive.
    lse = lse.clamp(max=-torch.finfo(logp.dtype).eps)
    return torch.cat([logp, torch.log(-torch.expm1(lse))], dim=-1)


def _renormalized(logp: Tensor) -> Tensor:
    return logp - logp.logsumexp(-1, keepdim=True)


def _on_support(s_K: Tensor, q_K: Tensor, alpha: float, add_tail: bool) -> Tensor:
    """D on the teacher's top-K support from both sides' log-probs there: ``[..., K] -> [...]``."""
    support = _with_tail if add_tail else _renormalized
    return _interpolated(support(s_K), support(q_K), alpha)


def _divergence(s: Tensor, teacher: Teacher, *, alpha: float, add_tail: bool) -> Tensor:
    """Unchecked :func:`divergence` over any leading dims: ``[..., V] -> [...]``."""
    if isinstance(teacher, TeacherTopK):
        dtype = float_dtype(s, teacher.logprobs)
        s_K = s.to(dtype).gather(-1, teacher.ids.long())
        return _on_support(s_K, teacher.logprobs.detach().to(dtype), alpha, add_tail)
    dtype = float_dtype(s, teacher)
    return _interpolated(s.to(dtype), teacher.detach().to(dtype), alpha)


def divergence(
    student_logprobs: Tensor, teacher: Teacher, *, alpha: float, add_tail: bool = True
) -> Tensor:
    """Per-position divergence between student and teacher next-token distributions.

    Args:
        student_logprobs: ``[B, T, V]`` log-softmaxed student distribution.
        teacher: ``[B, T, V]`` teacher log-probs (exact, full vocabulary) or a
            :class:`TeacherTopK` (the divergence on the teacher's top-K support).
        alpha: 0 forward KL(q || s), 1 reverse KL(s || q), between: generalized JSD.
        add_tail: On a top-K support, add the (K+1)-th tail atom to both sides; if False,
            renormalize both on the K ids.

    Returns:
        ``[B, T]`` divergence in float32 (float64 if an input is float64). Gradients flow
        only into the student.

    Raises:
        ValueError: ``alpha`` outside [0, 1] or a shape mismatch.
    """
    _require(0.0 <= alpha <= 1.0, f"alpha={alpha!r}: must lie in [0, 1]")
    _check_rank(student_logprobs, 3, "student_logprobs", "[B, T, V]")
    _check_teacher(teacher, *student_logprobs.shape, loss="divergence")
    return _divergence(student_logprobs, teacher, alpha=alpha, add_tail=add_tail)


def _log_ratio(student_token_logprobs: Tensor, old_logprobs: Tensor) -> Tensor:
    dtype = float_dtype(student_token_logprobs, old_logprobs)
    diff = student_token_logprobs.detach().to(dtype) - old_logprobs.detach().to(dtype)
    return diff.clamp(-_LOG_RATIO_CLAMP, _LOG_RATIO_CLAMP)


def importance_weights(
    student_token_logprobs: Tensor, old_logprobs: Tensor, *, clip: float
) -> tuple[Tensor, Tensor]:
    """Clipped off-policy weights ``min(exp(log s - log s_old), clip)``, detached.

    Args:
        student_token_logprobs: ``[B, T]`` current student log-probs of the sampled tokens.
        old_logprobs: ``[B, T]`` log-probs recorded when the response was served.
        clip: Upper bound c > 0 on the weight.

    Returns:
        ``(weights [B, T], clipped [B, T] bool)``; the log-ratio is clamped to [-20, 20].

    Raises:
        ValueError: ``clip <= 0`` or a shape mismatch.
    """
    _require(clip > 0, f"is_clip={clip!r}: the importance-weight clip must be > 0")
    _check_shape(old_logprobs, student_token_logprobs.shape, "old_logprobs")
    ratio = _log_ratio(student_token_logprobs, old_logprobs).exp()
    return ratio.clamp(max=clip), ratio > clip


def kl_to_base_k3(student_token_logprobs: Tensor, base_token_logprobs: Tensor) -> Tensor:
    """k3 estimator of KL(student || base) on the sampled tokens.

    Args:
        student_token_logprobs: ``[B, T]`` student log-probs of the sampled tokens.
        base_token_logprobs: ``[B, T]`` base-policy log-probs of the same tokens.

    Returns:
        ``[B, T]`` ``exp(r) - 1 - r >= 0`` with ``r = base - student``; gradient flows
        through the student only.
    """
    _check_shape(base_token_logprobs, student_token_logprobs.shape, "base_token_logprobs")
    dtype = float_dtype(student_token_logprobs, base_token_logprobs)
    r = base_token_logprobs.detach().to(dtype) - student_token_logprobs.to(dtype)
    return (torch.expm1(r) - r).clamp(min=0.0)


def token_level_loss(student_token_logprobs: Tensor, teacher_token_logprobs: Tensor) -> Tensor:
    """Policy-gradient form of reverse KL on the sampled tokens.

    Args:
        student_token_logprobs: ``[B, T]`` student log-probs of the sampled tokens.
        teacher_token_logprobs: ``[B, T]`` teacher log-probs of the same tokens.

    Returns:
        ``[B, T]`` ``-A * log s`` with the detached advantage ``A = q - s``.
    """
    _check_shape(teacher_token_logprobs, student_token_logprobs.shape, "teacher token logprobs")
    dtype = float_dtype(student_token_logprobs, teacher_token_logprobs)
    s = student_token_logprobs.to(dtype)
    advantage = teacher_token_logprobs.detach().to(dtype) - s.detach()
    return -advantage * s


# ---- the full loss ------------------------------------------------------------------------


class _Options(NamedTuple):
    """The keywords of :func:`sdpo_loss`, shared by both entry points."""

    alpha: float
    add_tail: bool
    loss: str
    old: Tensor | None
    is_clip: float
    base: Tensor | None
    kl_beta: float
    chunk_size: int | None

    def check(self, response_ids: Tensor, mask: Tensor) -> None:
        _require(0.0 <= self.alpha <= 1.0, f"alpha={self.alpha!r}: must lie in [0, 1]")
        msg = f"chunk_size={self.chunk_size!r}: must be >= 1 or None"
        _require(self.chunk_size is None or self.chunk_size >= 1, msg)
        _require(self.loss in LOSS_KINDS, f"loss={self.loss!r}: must be one of {LOSS_KINDS}")
        _require(self.is_clip > 0, f"is_clip={self.is_clip!r}: must be > 0")
        _require(self.kl_beta >= 0, f"kl_beta={self.kl_beta!r}: must be >= 0")
        msg = "kl_beta > 0 needs base_token_logprobs (got None)"
        _require(self.kl_beta == 0 or self.base is not None, msg)
        _check_rank(response_ids, 2, "response_ids", "[B, T]")
        msg = f"response_ids must be integer ids, got {response_ids.dtype}"
        _require(not response_ids.is_floating_point(), msg, InvalidRequest)
        extras = {"mask": mask, "old_logprobs": self.old, "base_token_logprobs": self.base}
        for name, t in extras.items():
            if t is not None:
                _check_shape(t, response_ids.shape, name)


def _check_head(hidden: Tensor, weight: Tensor, bias: Tensor | None) -> tuple[int, int, int]:
    """Validate ``hidden [B, T, D]``, ``weight [V, D]``, ``bias [V]``; return ``(B, T, V)``."""
    _check_rank(hidden, 3, "hidden", "[B, T, D]")
    _check_rank(weight, 2, "lm_head_weight", "[V, D]")
    _check_shape(weight, (weight.shape[0], hidden.shape[-1]), "lm_head_weight")
    if bias is not None:
        _check_shape(bias, (weight.shape[0],), "lm_head_bias")
    return hidden.shape[0], hidden.shape[1], weight.shape[0]


def _flat_teacher(teacher: Teacher, ids: Tensor, loss: str) -> Teacher:
    """Flatten ``[B, T, ...]`` to ``[N, ...]``; for the token loss keep only ``log q(y_t)``."""
    if loss == "token":
        if isinstance(teacher, TeacherTopK):
            assert teacher.token_logprobs is not None  # checked by _check_teacher
            return teacher.token_logprobs.reshape(-1)
        return teacher.detach().gather(-1, ids.unsqueeze(-1)).reshape(-1)
    if isinstance(teacher, TeacherTopK):
        return TeacherTopK(teacher.logprobs.flatten(0, 1), teacher.ids.flatten(0, 1))
    return teacher.flatten(0, 1)


def _position_terms(
    x: Tensor, teacher: Teacher, ids: Tensor, *head: Tensor, o: _Options
) -> tuple[Tensor, Tensor]:
    """Distillation term and student log-prob of the sampled token: ``[N, X] -> [N], [N]``.

    ``x`` holds logits, or hidden states when ``head`` gives the LM head's weight (and bias).
    """
    logits = linear(x, *head) if head else x
    s = F.log_softmax(logits, dim=-1, dtype=float_dtype(logits))
    s_tok = s.gather(-1, ids.unsqueeze(-1)).squeeze(-1)
    if o.loss == "token":
        assert isinstance(teacher, Tensor)
        return token_level_loss(s_tok, teacher), s_tok
    return _divergence(s, teacher, alpha=o.alpha, add_tail=o.add_tail), s_tok


def _sdpo(
    x: Tensor,
    teacher: Teacher,
    response_ids: Tensor,
    mask: Tensor,
    o: _Options,
    vocab: int,
    head: tuple[Tensor, ...],
) -> tuple[Tensor, dict[str, float]]:
    """Shared body of :func:`sdpo_loss` (``x`` = logits) and :func:`sdpo_loss_from_hidden`."""
    o.check(response_ids, mask)
    _check_teacher(teacher, response_ids.shape[0], response_ids.shape[1], vocab, loss=o.loss)
    # Masked positions may hold any id (padding, -100); they must still be gatherable.
    ids = response_ids.masked_fill(mask == 0, 0).long()
    bad = ids.numel() > 0 and bool((ids.min() < 0) | (ids.max() >= vocab))
    _require(not bad, f"response_ids outside [0, {vocab}) at unmasked positions", InvalidRequest)
    args = (x.flatten(0, 1), _flat_teacher(teacher, ids, o.loss), ids.flatten())
    fn = partial(_position_terms, o=o)
    if o.chunk_size is None or ids.numel() == 0:
        d, s_tok = fn(*args, *head)
    else:
        x_flat, flat_teacher, flat_ids = args
        if isinstance(flat_teacher, TeacherTopK) and o.loss == "divergence":
            q_K, q_ids = flat_teacher.logprobs.detach(), flat_teacher.ids.long()
            support = partial(_on_support, alpha=o.alpha, add_tail=o.add_tail)
            d, s_tok = chunked_topk_terms(
                support, o.chunk_size, q_K, q_ids, flat_ids, x_flat, *head
            )
        else:
            d, s_tok = chunked_terms(fn, o.chunk_size, flat_teacher, flat_ids, x_flat, *head)
    return _aggregate(d.view_as(ids), s_tok.view_as(ids), mask, o)


def _aggregate(d: Tensor, s_tok: Tensor, mask: Tensor, o: _Options) -> tuple[Tensor, dict]:
    """Weight, add the KL to base, take the masked token mean; compute the metrics."""
    m = mask.to(d.dtype)
    denom = m.sum().clamp(min=1.0)

    def mean(v: Tensor) -> Tensor:
        return torch.where(m != 0, v * m, 0.0).sum() / denom

    per_token = d
    if o.old is not None:
        weights, clipped = importance_weights(s_tok, o.old, clip=o.is_clip)
        per_token = weights * d
    k3 = None if o.base is None else kl_to_base_k3(s_tok, o.base)
    if k3 is not None and o.kl_beta > 0:
        per_token = per_token + o.kl_beta * k3
    total = mean(per_token)
    with torch.no_grad():
        metrics = {
            "loss": float(total.detach()),
            "distill_loss": float(mean(d)),
            "kl_to_base": 0.0 if k3 is None else float(mean(k3)),
            "is_ratio_mean": 1.0 if o.old is None else float(mean(_log_ratio(s_tok, o.old).exp())),
            "is_clip_frac": 0.0 if o.old is None else float(mean(clipped.to(d.dtype))),
            "tokens": float(m.sum()),
        }
    return total, metrics


def sdpo_loss(
    student_logits: Tensor,
    teacher: Teacher,
    response_ids: Tensor,
    mask: Tensor,
    *,
    alpha: float = 0.5,
    add_tail: bool = True,
    loss: str = "divergence",
    old_logprobs: Tensor | None = None,
    is_clip: float = 2.0,
    base_token_logprobs: Tensor | None = None,
    kl_beta: float = 0.0,
    chunk_size: int | None = None,
) -> tuple[Tensor, dict[str, float]]:
    """The SDPO loss for a batch of responses.

    Args:
        student_logits: ``[B, T, V]`` student logits at the response positions, any float
            dtype (the log-softmax runs in float32 or better).
        teacher: ``[B, T, V]`` teacher log-probs or a :class:`TeacherTopK`. For
            ``loss="token"`` it must give the sampled tokens' log-probs (a full tensor, or
            a TeacherTopK with ``token_logprobs``).
        response_ids: ``[B, T]`` sampled response ids; masked positions may hold any id.
        mask: ``[B, T]`` bool or float, 1 for a real response token.
        alpha: Divergence interpolation in [0, 1] (see the module docstring).
        add_tail: Tail atom on a top-K support (else renormalize on K).
        loss: ``"divergence"`` or ``"token"`` (the token-level variant).
        old_logprobs: ``[B, T]`` log-probs recorded at serving; enables the IS weights.
        is_clip: Upper clip of the IS weights.
        base_token_logprobs: ``[B, T]`` base-policy log-probs of the sampled tokens.
        kl_beta: Weight of the k3 KL to base (needs ``base_token_logprobs`` when > 0).
        chunk_size: None for one pass; else positions per checkpointed chunk (same value
            and gradient, float32 log-softmax memory O(C V) instead of O(B T V)).

    Returns:
        ``(loss, metrics)``: the scalar masked token mean (0 for an all-masked batch) and
        python floats ``loss``, ``distill_loss`` (unweighted masked mean of the distillation
        term), ``kl_to_base`` (0.0 without base log-probs), ``is_ratio_mean`` (mean
        unclipped ratio, 1.0 without old log-probs), ``is_clip_frac``, ``tokens``.

    Raises:
        ValueError: A bad hyperparameter, a shape mismatch, or an id outside the vocabulary.
    """
    _check_rank(student_logits, 3, "student_logits", "[B, T, V]")
    _check_shape(student_logits, (*response_ids.shape, student_logits.shape[-1]), "student_logits")
    o = _Options(
        alpha, add_tail, loss, old_logprobs, is_clip, base_token_logprobs, kl_beta, chunk_size
    )
    return _sdpo(student_logits, teacher, response_ids, mask, o, student_logits.shape[-1], ())


def sdpo_loss_from_hidden(
    hidden: Tensor,
    lm_head_weight: Tensor,
    teacher: Teacher,
    response_ids: Tensor,
    mask: Tensor,
    *,
    chunk_size: int = 256,
    lm_head_bias: Tensor | None = None,
    alpha: float = 0.5,
    add_tail: bool = True,
    loss: str = "divergence",
    old_logprobs: Tensor | None = None,
    is_clip: float = 2.0,
    base_token_logprobs: Tensor | None = None,
    kl_beta: float = 0.0,
) -> tuple[Tensor, dict[str, float]]:
    """:func:`sdpo_loss` on ``hidden @ W.T (+ b)`` without ever holding ``[B, T, V]``.

    The LM head runs inside each checkpointed chunk, in the inputs' promoted dtype as
    ``hidden @ W.T`` would, so logits exist for at most ``chunk_size`` positions. The
    other arguments, the result and the errors are those of :func:`sdpo_loss`.

    Args:
        hidden: ``[B, T, D]`` student hidden states before the LM head.
        lm_head_weight: ``[V, D]`` LM head weight; gets a gradient if it requires one.
        chunk_size: Positions per checkpointed chunk.
        lm_head_bias: ``[V]`` LM head bias, if any.
    """
    b, t, vocab = _check_head(hidden, lm_head_weight, lm_head_bias)
    _check_shape(response_ids, (b, t), "response_ids")
    head = (lm_head_weight,) if lm_head_bias is None else (lm_head_weight, lm_head_bias)
    o = _Options(
        alpha, add_tail, loss, old_logprobs, is_clip, base_token_logprobs, kl_beta, chunk_size
    )
    return _sdpo(hidden, teacher, response_ids, mask, o, vocab, head)
