"""Chunked autograd for the SDPO loss: per-position terms C rows at a time, forward and backward.

The loss of :mod:`claas.sdpo` is a sum of per-position terms over ``N = B * T`` rows.
Its full-vocabulary float32 log-softmax is ``[N, V]``; here it exists for at most C rows
at a time, in forward and in backward, with the same value and gradient:

- :func:`chunked_terms` recomputes any per-row function chunk by chunk in backward
  (like checkpointing each chunk);
- :func:`chunked_topk_terms` takes the top-K divergence's gradient in closed form, so
  forward never builds a ``[C, V]`` log-softmax.

This module holds no SDPO math: callers pass the per-row function (or the divergence on
the top-K support) in. It also holds the small tensor helpers both modules share.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from functools import reduce
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor
from torch.autograd.function import once_differentiable

__all__ = ["chunked_terms", "chunked_topk_terms", "float_dtype", "linear", "rows", "slices"]

# Callables of this module return ``(d [N], s_tok [N])``: the distillation term and the
# student log-prob of the sampled token, per row.
Terms = tuple[Tensor, Tensor]


def float_dtype(*tensors: Tensor) -> torch.dtype:
    """The dtype math runs in: float32, or wider if an input is wider (float64)."""
    return reduce(torch.promote_types, (t.dtype for t in tensors), torch.float32)


def linear(x: Tensor, weight: Tensor, bias: Tensor | None = None) -> Tensor:
    """``x @ W.T (+ b)`` in the inputs' promoted dtype, as the LM head would compute it."""
    dtype = torch.promote_types(x.dtype, weight.dtype)
    b = None if bias is None else bias.to(dtype)
    return F.linear(x.to(dtype), weight.to(dtype), b)


def slices(n: int, size: int) -> Iterator[slice]:
    """Consecutive slices of ``size`` rows covering ``range(n)``."""
    return (slice(i, i + size) for i in range(0, n, size))


def rows(x: Any, sl: slice) -> Any:
    """Rows ``sl`` of a tensor, of each field of a named tuple of tensors, or None."""
    if isinstance(x, tuple):
        return type(x)(*(rows(field, sl) for field in x))
    return None if x is None else x[sl]


def chunked_terms(
    fn: Callable[..., Terms], size: int, teacher: Any, ids: Tensor, x: Tensor, *head: Tensor
) -> Terms:
    """``fn(x, teacher, ids, *head)`` evaluated ``size`` rows at a time.

    Args:
        fn: Per-row terms ``(x [C, X], teacher rows, ids [C], *head) -> ([C], [C])``.
        size: Rows per chunk, >= 1.
        teacher: ``[N, ...]`` tensor, named tuple of such tensors, or None; not differentiated.
        ids: ``[N]`` sampled ids.
        x: ``[N, X]`` logits, or hidden states when ``head`` is given.
        head: The LM head's weight (and bias), if ``x`` holds hidden states.

    Returns:
        ``(d [N], s_tok [N])``, differentiable in ``x`` and ``head``.
    """
    return _Chunked.apply(fn, size, teacher, ids, x, *head)


def chunked_topk_terms(
    support: Callable[[Tensor, Tensor], Tensor],
    size: int,
    q_K: Tensor,
    q_ids: Tensor,
    ids: Tensor,
    x: Tensor,
    *head: Tensor,
) -> Terms:
    """The divergence on the teacher's top-K support, ``size`` rows at a time.

    Args:
        support: ``(s_K [C, K], q_K [C, K]) -> [C]``, the divergence from both sides'
            log-probs at the K teacher ids.
        size: Rows per chunk, >= 1.
        q_K: ``[N, K]`` teacher log-probs, detached.
        q_ids: ``[N, K]`` int64 teacher ids.
        ids: ``[N]`` sampled ids.
        x: ``[N, V]`` logits, or ``[N, D]`` hidden states when ``head`` is given.
        head: The LM head's weight (and bias), if ``x`` holds hidden states.

    Returns:
        ``(d [N], s_tok [N])``, differentiable in ``x`` and ``head``.
    """
    return _ChunkedTopK.apply(support, size, q_K, q_ids, ids, x, *head)


class _Chunked(torch.autograd.Function):
    """Per-row terms C rows at a time, recomputed chunk by chunk in backward.

    Like checkpointing each chunk, no pass holds more than C rows of activations. Each
    chunk's input gradient is written into one preallocated ``[N, X]`` buffer: slicing
    the input per chunk would make autograd build a zero-filled full-size gradient for
    every chunk (O(N^2 X / C) work and twice the memory).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        fn: Callable[..., Terms],
        size: int,
        teacher: Any,
        ids: Tensor,
        x: Tensor,
        *head: Tensor,
    ) -> Terms:
        ctx.fn, ctx.size, ctx.teacher = fn, size, teacher
        ctx.save_for_backward(ids, x, *head)
        parts = [fn(x[sl], rows(teacher, sl), ids[sl], *head) for sl in slices(ids.numel(), size)]
        d, s_tok = (torch.cat(p) for p in zip(*parts, strict=True))
        return d, s_tok

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_d: Tensor, grad_tok: Tensor) -> tuple[Tensor | None, ...]:
        ids, x, *head = ctx.saved_tensors
        wanted = ctx.needs_input_grad[4:]
        grad_x, grad_head = _grad_buffers(x, head, wanted)
        for sl in slices(ids.numel(), ctx.size):
            with torch.enable_grad():
                leaves = _chunk_leaves(x, head, sl, wanted)
                outputs = ctx.fn(leaves[0], rows(ctx.teacher, sl), ids[sl], *leaves[1:])
                grads = torch.autograd.grad(
                    outputs,
                    [t for t in leaves if t.requires_grad],
                    (grad_d[sl], grad_tok[sl]),
                    materialize_grads=True,
                )
            _add_chunk_grads(grads, sl, grad_x, grad_head)
        return (None, None, None, None, grad_x, *grad_head)


class _ChunkedTopK(torch.autograd.Function):
    """The top-K divergence C rows at a time, with its gradient in closed form.

    Forward needs only each row's log-normalizer and the log-probs at the K teacher ids
    and the sampled id, never a ``[C, V]`` log-softmax. With ``p = softmax(z)`` for logits
    ``z``, upstream gradients ``a`` (of ``d``) and ``b`` (of ``s_tok``), and
    ``g = a dd/ds_K``, the gradient of a row is
    ``scatter(g at the K ids) + b onehot(y) - p (sum(g) + b)``: backward builds one
    ``[C, V]`` tensor per chunk and runs autograd only on ``[C, K]`` (and the LM head).
    When every row fits in one chunk, forward keeps that chunk's logits and their LM
    head graph for backward instead of recomputing them: the same peak, one head
    matmul fewer (a feedback step on a chat answer is usually one chunk).
    """

    @staticmethod
    def forward(  # type: ignore[override]
        ctx: Any,
        support: Callable[[Tensor, Tensor], Tensor],
        size: int,
        q_K: Tensor,
        q_ids: Tensor,
        ids: Tensor,
        x: Tensor,
        *head: Tensor,
    ) -> Terms:
        ctx.support, ctx.size, ctx.kept = support, size, None
        wanted = ctx.needs_input_grad[5:]
        dtype = float_dtype(q_K, x, *head)
        d, s_tok, lse, s_K = [], [], [], []
        chunks = list(slices(ids.numel(), size))
        keep = bool(head) and len(chunks) == 1 and any(wanted)
        for sl in chunks:
            if keep:
                with torch.enable_grad():
                    ctx.kept = _head_graph(x, head, sl, wanted)
                z = ctx.kept[1].detach()
            else:
                z = linear(x[sl], *head) if head else x[sl]
            norm = torch.logsumexp(z.to(dtype), dim=-1, keepdim=True)
            picked = z.gather(-1, torch.cat([q_ids[sl], ids[sl, None]], -1)).to(dtype) - norm
            d.append(support(picked[:, :-1], q_K[sl].to(dtype)))
            s_tok.append(picked[:, -1])
            lse.append(norm)
            s_K.append(picked[:, :-1])
        ctx.save_for_backward(q_K, q_ids, ids, x, torch.cat(lse), torch.cat(s_K), *head)
        return torch.cat(d), torch.cat(s_tok)

    @staticmethod
    @once_differentiable
    def backward(ctx: Any, grad_d: Tensor, grad_tok: Tensor) -> tuple[Tensor | None, ...]:
        q_K, q_ids, ids, x, lse, s_K, *head = ctx.saved_tensors
        wanted = ctx.needs_input_grad[5:]
        grad_x, grad_head = _grad_buffers(x, head, wanted)
        for sl in slices(ids.numel(), ctx.size):
            with torch.enable_grad():
                leaf = s_K[sl].detach().requires_grad_(True)
                d = ctx.support(leaf, q_K[sl].to(lse.dtype))
                (g,) = torch.autograd.grad(d, leaf, grad_d[sl].to(lse.dtype))
                if ctx.kept is not None:
                    (leaves, z), ctx.kept = ctx.kept, None
                elif head:
                    leaves, z = _head_graph(x, head, sl, wanted)
                else:
                    z = x[sl]
            b = grad_tok[sl].to(lse.dtype)
            grad_z = (z.detach().to(lse.dtype) - lse[sl]).exp_().mul_(-(g.sum(-1) + b)[:, None])
            grad_z.scatter_add_(-1, q_ids[sl], g).scatter_add_(-1, ids[sl, None], b[:, None])
            if not head:
                if grad_x is not None:
                    grad_x[sl] = grad_z
                continue
            needed = [t for t in leaves if t.requires_grad]
            _add_chunk_grads(
                torch.autograd.grad(z, needed, grad_z.to(z.dtype)), sl, grad_x, grad_head
            )
        return (None, None, None, None, None, grad_x, *grad_head)


def _chunk_leaves(
    x: Tensor, head: Sequence[Tensor], sl: slice, wanted: Sequence[bool]
) -> list[Tensor]:
    """Rows ``sl`` of ``x`` and the head, detached, requiring grad where ``wanted``."""
    return [t.detach().requires_grad_(w) for t, w in zip((x[sl], *head), wanted, strict=True)]


def _head_graph(
    x: Tensor, head: Sequence[Tensor], sl: slice, wanted: Sequence[bool]
) -> tuple[list[Tensor], Tensor]:
    """Logits of rows ``sl``, with their graph back to :func:`_chunk_leaves`."""
    leaves = _chunk_leaves(x, head, sl, wanted)
    return leaves, linear(*leaves)


def _grad_buffers(
    x: Tensor, head: Sequence[Tensor], wanted: Sequence[bool]
) -> tuple[Tensor | None, list[Tensor | None]]:
    """One gradient buffer for ``x`` (filled chunk by chunk) and one per head tensor."""
    grad_x = torch.empty_like(x) if wanted[0] else None
    grad_head = [torch.zeros_like(p) if w else None for p, w in zip(head, wanted[1:], strict=True)]
    return grad_x, grad_head


def _add_chunk_grads(
    grads: Sequence[Tensor], sl: slice, grad_x: Tensor | None, grad_head: list[Tensor | None]
) -> None:
    """Write a chunk's input gradient into rows ``sl``; add its head gradients."""
    found = iter(grads)
    if grad_x is not None:
        grad_x[sl] = next(found)
    for total in grad_head:
        if total is not None:
            total += next(found)
