"""Attention for packed rows: each row against the shared prefix and itself only.

The guard's scoring pass (:func:`claas.inference._batch_decode._forced`) runs the
probes' shared prompt prefix and every probe's own tokens as one sequence. Its
4-D mask is right, but torch's CPU attention kernel then computes all ``L x L``
scores (about 200 x 200, most of them masked): 1.4-1.7 ms per layer on the
bundled model, against 0.6 ms for the same rows batched. Here the prefix attends
to itself causally, and the rows' tokens are gathered into a padded batch that
attends to the prefix and to its own row, then scattered back.

Registered with transformers as ``claas_packed``. Any call without a
:class:`Segments` layout (chats, every other pass), or with a feature this does
not handle (dropout, sliding windows, soft-capping, sinks), goes to transformers' own
``sdpa`` attention with the mask it was given, so installing it changes nothing
else.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch
import torch.nn.functional as F

from claas._fast_forward import use_attention

__all__ = ["KEYWORD", "Segments", "install_packed_attention"]

ATTENTION = "claas_packed"
KEYWORD = "claas_segments"  # the forward keyword that carries the layout
_UNHANDLED = ("sliding_window", "softcap", "s_aux")


def install_packed_attention(model: Any) -> bool:
    """Use packed attention in ``model`` if it runs transformers' ``sdpa``; whether it does."""
    if model.config._attn_implementation != "sdpa":
        return False
    use_attention(model, ATTENTION, _attention)
    return True


@attrs.frozen
class Segments:
    """Where the rows of a packed sequence lie: after a ``prefix``, ``rows`` of their own.

    Attributes:
        prefix: Length of the shared prefix at the start.
        index_BW: Each row's token indices in the sequence, right-padded with 0.
        valid_BW: Which entries of ``index_BW`` are tokens.
        mask_B1WK: What each row's tokens attend to: the whole prefix, then their
            own row causally (not its padding); ``K = prefix + W``.
        tokens_N: The entries of ``index_BW`` (flattened) that are tokens.
    """

    prefix: int
    index_BW: torch.Tensor
    valid_BW: torch.Tensor
    mask_B1WK: torch.Tensor
    tokens_N: torch.Tensor

    @classmethod
    def of(
        cls, prefix: int, starts: Sequence[int], lengths: Sequence[int], device: str
    ) -> Segments:
        """The layout of rows at ``starts`` with ``lengths``, after a ``prefix``."""
        width = max(lengths)
        index_BW = torch.zeros((len(starts), width), dtype=torch.long)
        valid_BW = torch.zeros((len(starts), width), dtype=torch.bool)
        for b, (start, length) in enumerate(zip(starts, lengths, strict=True)):
            index_BW[b, :length] = torch.arange(start, start + length)
            valid_BW[b, :length] = True
        own_BWW = torch.ones((width, width), dtype=torch.bool).tril()[None] & valid_BW[:, None]
        prefix_BWP = torch.ones((len(starts), width, prefix), dtype=torch.bool)
        mask_B1WK = torch.cat([prefix_BWP, own_BWW], dim=-1)[:, None]
        tokens_N = valid_BW.flatten().nonzero()[:, 0]
        return cls(
            prefix,
            index_BW.to(device),
            valid_BW.to(device),
            mask_B1WK.to(device),
            tokens_N.to(device),
        )


def _attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    segments = kwargs.pop(KEYWORD, None)
    unhandled = kwargs.get("dropout") or any(kwargs.get(n) is not None for n in _UNHANDLED)
    if segments is None or unhandled or query.shape[0] != 1 or key.shape[2] != query.shape[2]:
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    return _packed(segments, query, key, value, kwargs.get("scaling")), None


def _packed(
    segments: Segments,
    query_1HLD: torch.Tensor,
    key_1KLD: torch.Tensor,
    value_1KLD: torch.Tensor,
    scaling: float | None,
) -> torch.Tensor:
    """Attention output ``[1, L, H, D]`` of the packed sequence (see the module docstring)."""
    groups = query_1HLD.shape[1] // key_1KLD.shape[1]
    key_1HLD = key_1KLD.repeat_interleave(groups, dim=1)
    value_1HLD = value_1KLD.repeat_interleave(groups, dim=1)
    prefix = segments.prefix
    rows = segments.index_BW.shape[0]
    index_BW = segments.index_BW

    def gathered(states_1HLD: torch.Tensor) -> torch.Tensor:
        return states_1HLD[0][:, index_BW].transpose(0, 1)  # [B, H, W, D]

    def with_prefix(states_1HLD: torch.Tensor) -> torch.Tensor:
        shared = states_1HLD[:, :, :prefix].expand(rows, -1, -1, -1)
        return torch.cat([shared, gathered(states_1HLD)], dim=2)

    out_BHWD = F.scaled_dot_product_attention(
        gathered(query_1HLD),
        with_prefix(key_1HLD),
        with_prefix(value_1HLD),
        attn_mask=segments.mask_B1WK,
        scale=scaling,
    )
    # In the dtype the kernel computed in (bfloat16 under autocast, whatever came in).
    out_HLD = query_1HLD.new_empty(query_1HLD.shape[1:], dtype=out_BHWD.dtype)
    if prefix:
        out_HLD[:, :prefix] = F.scaled_dot_product_attention(
            query_1HLD[:, :, :prefix],
            key_1HLD[:, :, :prefix],
            value_1HLD[:, :, :prefix],
            is_causal=True,
            scale=scaling,
        )[0]
    tokens = segments.tokens_N
    heads, dim = out_HLD.shape[0], out_HLD.shape[-1]
    out_HLD[:, index_BW.flatten()[tokens]] = out_BHWD.transpose(0, 1).reshape(heads, -1, dim)[
        :, tokens
    ]
    return out_HLD.transpose(0, 1)[None].contiguous()
