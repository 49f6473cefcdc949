"""Batched greedy answers and batched scoring, for short checks such as the guard's.

One left-padded batch decodes every prompt at once (greedy, KV-cached), and one
right-padded forward pass scores every (prompt, response) pair: a handful of
short probes then costs about as much as one of them alone.

:func:`greedy_from_drafts` answers prompts of which a draft answer is known (the
guard's candidate, with its parent's answers): one scoring pass over every prompt
with its draft says how many leading draft tokens are the model's own greedy
choices, and gives the model's own token where it first departs from the draft.
A row whose draft holds up to its end-of-turn token (or the length limit) is
answered without decoding; the others are decoded on from that point only.

Short prompts of one chat template share most of their tokens (the system prompt
and the turn markers: 24 of about 37 for the guard's probes on SmolLM2), so that
shared prefix is run once and its KV cache repeated for every row; and the LM head
(a vocabulary-wide matmul) is applied only at the positions whose logits are read.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch

from claas.inference._decode import _cache_keyword, last_position
from claas.inference._lookup_decode import Row, decode_on
from claas.inference._packed_attention import KEYWORD, Segments
from claas.inference._settled import Settled, settled_at
from claas.models import autocast_context

__all__ = ["greedy_batch", "greedy_from_drafts", "score_batch"]


_MIN_SHARED = 8  # a shorter shared prefix is not worth a separate forward pass


def greedy_batch(
    model: Any,
    prompts: Sequence[Sequence[int]],
    *,
    max_tokens: int,
    eos_ids: frozenset[int],
    pad_id: int,
    device: str,
    autocast: bool = False,
) -> list[tuple[list[int], list[float]]]:
    """Greedy-decode every prompt together; per prompt, its token ids and their logprobs.

    A row stops at an end-of-turn token (kept) or after ``max_tokens``.
    """
    with torch.inference_mode(), autocast_context(device, autocast):
        cache, shared = _prefix_cache(model, prompts, device=device)
        # The rest of each prompt is left-padded, so every row's next token is last.
        rest = [p[shared:] for p in prompts]
        ids_BL, mask_BL = _padded(rest, shared, pad_id=pad_id, device=device, left=True)
        positions_BL = (mask_BL.cumsum(-1) - 1).clamp(min=0)[:, shared:]
        out = model(
            input_ids=ids_BL,
            attention_mask=mask_BL,
            position_ids=positions_BL,
            use_cache=True,
            logits_to_keep=last_position(ids_BL),
            **cache,
        )
        best_B, first_B = torch.log_softmax(out.logits[:, -1].float(), dim=-1).max(dim=-1)
        rows = [
            Row(
                ids=[token],
                logprobs=[logprob],
                last=token,
                position=len(prompt),
                budget=max_tokens,
                sources=[prompt],
                done=token in eos_ids,
            )
            for prompt, token, logprob in zip(
                prompts, first_B.tolist(), best_B.tolist(), strict=True
            )
        ]
        decode_on(model, cache, mask_BL, rows, eos_ids=eos_ids)
    return [(row.ids, row.logprobs) for row in rows]


def score_batch(
    model: Any,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    device: str,
    autocast: bool = False,
) -> list[list[float]]:
    """Logprob of each response token given its prompt, for every pair in one forward pass."""
    rows = _score_pairs(model, pairs, device=device, autocast=autocast)
    return [row.logprobs for row in rows]


def greedy_from_drafts(
    model: Any,
    prompts: Sequence[Sequence[int]],
    drafts: Sequence[Sequence[int]],
    *,
    max_tokens: int,
    eos_ids: frozenset[int],
    device: str,
    autocast: bool = False,
    lookup: Sequence[Sequence[Sequence[int]]] = (),
    settled: Sequence[Settled | None] = (),
) -> list[tuple[list[int], list[float]]]:
    """Greedy answers, as :func:`greedy_batch` gives them, checking each draft first.

    Equal to decoding from scratch but for exact ties and last-bit differences
    between one batched forward pass and token-by-token decoding. The rows whose
    draft did not hold are decoded on from the scoring pass's own KV cache, so no
    prompt is run twice, guessing ahead (:mod:`._lookup_decode`) from their draft,
    from ``lookup`` (other known answers, per prompt) and from their prompt.

    ``settled`` (per prompt, optional) ends an answer early: at its fewest leading
    tokens it accepts (:func:`~claas.inference._settled.settled_at`), as
    cutting the full greedy answer there would.
    """
    pairs = [(p, d[:max_tokens]) for p, d in zip(prompts, drafts, strict=True)]
    with torch.inference_mode(), autocast_context(device, autocast):
        checked, packed = _forced(model, pairs, device=device)
        rows: list[Row] = []
        for row, ((prompt, draft), found) in enumerate(zip(pairs, checked, strict=True)):
            ids, logprobs = list(draft[: found.agreed]), found.logprobs[: found.agreed]
            if found.own is not None:  # where the model departs from the draft
                ids.append(found.own[0])
                logprobs.append(found.own[1])
            known = lookup[row] if row < len(lookup) else ()
            enough = settled[row] if row < len(settled) else None
            cut = settled_at(ids, enough)
            if cut is not None:
                ids, logprobs = ids[:cut], logprobs[:cut]
            rows.append(
                Row(
                    ids=ids,
                    logprobs=logprobs,
                    last=ids[-1] if ids else prompt[-1],
                    position=len(prompt) + len(ids) - 1,
                    budget=max_tokens,
                    sources=[draft, *known, prompt],
                    done=cut is not None or (bool(ids) and ids[-1] in eos_ids),
                    settled=enough,
                )
            )
        pending = [b for b, row in enumerate(rows) if not (row.done or len(row.ids) >= max_tokens)]
        if pending:
            chosen = [rows[b] for b in pending]
            _decode_after_drafts(model, packed, chosen, pending, eos_ids=eos_ids, device=device)
    return [(row.ids, row.logprobs) for row in rows]


def _decode_after_drafts(
    model: Any,
    packed: _Packed,
    rows: list[Row],
    indices: Sequence[int],
    *,
    eos_ids: frozenset[int],
    device: str,
) -> None:
    """Decode on ``rows`` (rows ``indices`` of a :func:`_forced` pass).

    Their cache holds each row's prompt and draft (a column is a position). Each
    row's last token so far is fed again at its own position, and the columns from
    that position on (the draft tokens the model did not keep, or padding) are
    masked out.
    """
    cache, width = packed.unpacked(indices, device)
    mask_BC = torch.zeros((len(rows), width), dtype=torch.long, device=device)
    for b, row in enumerate(rows):
        mask_BC[b, : row.position] = 1
    decode_on(model, cache, mask_BC, rows, eos_ids=eos_ids)


@attrs.frozen
class _Forced:
    """One (prompt, response) pair scored: logprobs, greedy prefix, the model's own token."""

    logprobs: list[float]
    agreed: int  # leading response tokens that are the model's greedy choices
    own: tuple[int, float] | None  # its greedy token (and logprob) where it first departs


def _score_pairs(
    model: Any,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    device: str,
    autocast: bool,
) -> list[_Forced]:
    with torch.inference_mode(), autocast_context(device, autocast):
        return _forced(model, pairs, device=device)[0]


def _forced(
    model: Any,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    device: str,
) -> tuple[list[_Forced], _Packed]:
    """Score every pair in one packed pass; also that pass's KV cache.

    The prompts' shared prefix and then each row's rest of prompt and response run
    as one sequence, each row attending to the prefix and to itself only (a 4-D
    mask), so no position is padding and the prefix is not a pass of its own. A
    response's last token is predicted but never read, so it is not run.
    """
    packed = _Packed.of(pairs, _cache_keyword(model), device)
    wanted = [
        range(start + len(p) - packed.shared - 1, start + len(p) - packed.shared - 1 + len(r))
        for start, (p, r) in zip(packed.starts, pairs, strict=True)
    ]
    keep = torch.tensor([i for span in wanted for i in span], dtype=torch.long)
    out = model(
        input_ids=packed.ids[None].to(device),
        attention_mask=_as_model_takes(model, packed.mask()[None, None].to(device)),
        position_ids=packed.positions[None].to(device),
        use_cache=True,
        logits_to_keep=keep.to(device),
        **{KEYWORD: packed.segments},
        **packed.cache,
    )
    rows = []
    read = 0
    for (_, response), span in zip(pairs, wanted, strict=True):
        logp_TV = torch.log_softmax(out.logits[0, read : read + len(span)].float(), dim=-1)
        read += len(span)
        ids_T = torch.tensor(list(response), dtype=torch.long, device=device)
        picked = logp_TV.gather(-1, ids_T[:, None])[:, 0]
        best_T, greedy_T = logp_TV.max(dim=-1)
        agreed = int((greedy_T == ids_T).long().cumprod(dim=0).sum()) if len(response) else 0
        own = None
        if agreed < len(response):
            own = (int(greedy_T[agreed]), float(best_T[agreed]))
        rows.append(_Forced(logprobs=[float(x) for x in picked], agreed=agreed, own=own))
    return rows, packed


@attrs.frozen
class _Packed:
    """Several rows that share a prefix, laid out as one sequence (see :func:`_forced`)."""

    ids: torch.Tensor  # [L]: the prefix, then every row's own tokens
    positions: torch.Tensor  # [L]: each token's position in its own row
    row_of: torch.Tensor  # [L]: the row a token belongs to, -1 for the prefix
    starts: list[int]  # where each row's own tokens begin
    segments: Segments  # the same layout, for the packed attention
    keyword: str  # the model's name for its cache argument
    cache: dict[str, Any]  # filled by the forward pass

    @classmethod
    def of(
        cls, pairs: Sequence[tuple[Sequence[int], Sequence[int]]], keyword: str, device: str
    ) -> _Packed:
        """The prompts' shared prefix, then each row's rest of prompt and its response
        but for the response's last token."""
        from transformers.cache_utils import DynamicCache

        shared = _shared([p for p, _ in pairs])
        ids, positions = list(pairs[0][0][:shared]), list(range(shared))
        row_of, starts, lengths = [-1] * shared, [], []
        for row, (prompt, response) in enumerate(pairs):
            part = [*prompt[shared:], *response[:-1]]
            starts.append(len(ids))
            lengths.append(len(part))
            ids.extend(part)
            positions.extend(range(shared, shared + len(part)))
            row_of.extend([row] * len(part))
        return cls(
            ids=torch.tensor(ids, dtype=torch.long),
            positions=torch.tensor(positions, dtype=torch.long),
            row_of=torch.tensor(row_of, dtype=torch.long),
            starts=starts,
            segments=Segments.of(shared, starts, lengths, device),
            keyword=keyword,
            cache={keyword: DynamicCache()},
        )

    @property
    def shared(self) -> int:
        """Length of the shared prefix."""
        return self.segments.prefix

    def mask(self) -> torch.Tensor:
        """``[L, L]``: causal, and a row's tokens see the prefix and their own row only."""
        index = torch.arange(len(self.ids))
        causal = index[None, :] <= index[:, None]
        visible = (self.row_of[None, :] == -1) | (self.row_of[None, :] == self.row_of[:, None])
        return causal & visible

    def unpacked(self, rows: Sequence[int], device: str) -> tuple[dict[str, Any], int]:
        """A batched cache of ``rows`` (prefix and own tokens, right-padded), and its width.

        In it a row's column is its position, as in a cache of right-padded rows.
        """
        from transformers.cache_utils import DynamicCache

        chosen = torch.tensor(list(rows), device=device)
        own = int(self.segments.valid_BW[chosen].sum(-1).max())
        prefix_RP = torch.arange(self.shared, device=device).expand(len(rows), -1)
        index_RW = torch.cat([prefix_RP, self.segments.index_BW[chosen, :own]], dim=-1)
        packed = next(iter(self.cache.values()))
        layers = [
            (
                layer.keys[0][:, index_RW].transpose(0, 1),
                layer.values[0][:, index_RW].transpose(0, 1),
            )
            for layer in packed.layers
        ]
        return {self.keyword: DynamicCache(layers)}, index_RW.shape[1]


def _as_model_takes(model: Any, allowed: torch.Tensor) -> torch.Tensor:
    """A boolean 4-D mask as the model's attention takes it: as it is for ``sdpa`` and
    the attentions built on it; for ``eager``, which adds the mask to its scores, as
    0 where allowed and the dtype's lowest value elsewhere."""
    if model.config._attn_implementation != "eager":
        return allowed
    dtype = model.get_input_embeddings().weight.dtype
    blocked = torch.zeros(allowed.shape, dtype=dtype, device=allowed.device)
    return blocked.masked_fill(~allowed, torch.finfo(dtype).min)


def _padded(
    parts: Sequence[Sequence[int]], shared: int, *, pad_id: int, device: str, left: bool
) -> tuple[torch.Tensor, torch.Tensor]:
    """``parts`` padded into ``[B, L]`` ids, and their ``[B, shared + L]`` attention mask.

    The mask also covers the ``shared`` cached prefix positions before them.
    """
    width = max(len(part) for part in parts)
    ids_BL = torch.full((len(parts), width), pad_id, dtype=torch.long, device=device)
    mask_BL = torch.zeros((len(parts), shared + width), dtype=torch.long, device=device)
    mask_BL[:, :shared] = 1
    for row, part in enumerate(parts):
        start = width - len(part) if left else 0
        ids_BL[row, start : start + len(part)] = torch.tensor(list(part), device=device)
        mask_BL[row, shared + start : shared + start + len(part)] = 1
    return ids_BL, mask_BL


def _prefix_cache(
    model: Any, prompts: Sequence[Sequence[int]], *, device: str
) -> tuple[dict[str, Any], int]:
    """The KV cache of the prompts' shared prefix, repeated per row, and its length.

    The prefix is :func:`_shared`. Returns an empty cache (and 0) when the shared
    part is too short to be worth its own pass.
    """
    from transformers.cache_utils import DynamicCache

    cache = DynamicCache()
    keyword = {_cache_keyword(model): cache}
    shared = _shared(prompts)
    if len(prompts) < 2 or shared < _MIN_SHARED:
        return keyword, 0
    prefix = torch.tensor([list(prompts[0][:shared])], dtype=torch.long, device=device)
    model(input_ids=prefix, use_cache=True, logits_to_keep=last_position(prefix), **keyword)
    cache.batch_repeat_interleave(len(prompts))
    return keyword, shared


def _shared(prompts: Sequence[Sequence[int]]) -> int:
    """How many leading tokens the prompts share, stopping one before the shortest ends.

    Every row then still runs its last prompt token, whose logits predict its first
    answer token.
    """
    limit = min(len(p) for p in prompts) - 1
    shared = 0
    while shared < limit and all(p[shared] == prompts[0][shared] for p in prompts):
        shared += 1
    return shared
