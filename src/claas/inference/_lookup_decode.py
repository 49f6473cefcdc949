"""Greedy decoding that guesses ahead from known token sequences and checks the guesses.

Prompt-lookup decoding: the tokens that followed an answer's last few tokens in a
sequence already known (the draft answer it departed from, earlier versions'
answers to the same prompt, the prompt itself) are fed after the answer's last
token in the same forward pass. The model's greedy choices at those positions say
how many of the guessed tokens it keeps, and give its own token where it departs,
so an answer that returns to a known one after a changed word takes one pass
instead of one per token. A wrong guess costs only a few more positions in a pass
that was needed anyway: there are never more passes than tokens decoded.

Written here rather than taken from transformers' ``prompt_lookup_num_tokens``:
``generate`` guesses from the prompt only, one row at a time, and cannot continue
from the guard's scoring-pass cache.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import attrs
import torch

from claas.inference._settled import Settled

__all__ = ["Row", "decode_on"]

_NGRAM = 3  # longest answer tail looked up; shorter tails are tried after it


@attrs.define
class Row:
    """One answer being decoded, fed from its last token on.

    Attributes:
        ids: Its tokens so far (those the model chose).
        logprobs: Their logprobs.
        last: The token fed next (the answer's last, or the prompt's last).
        position: That token's position.
        budget: Most tokens the answer may have.
        sources: Known token sequences to guess continuations from, best first.
        settled: Whether the tokens so far are answer enough (it then stops there).
    """

    ids: list[int]
    logprobs: list[float]
    last: int
    position: int
    budget: int
    sources: Sequence[Sequence[int]] = ()
    done: bool = False
    settled: Settled | None = None


def decode_on(
    model: Any,
    cache: dict[str, Any],
    mask_BC: torch.Tensor,
    rows: list[Row],
    *,
    eos_ids: frozenset[int],
) -> None:
    """Decode every row on until its end-of-turn token (kept) or its budget.

    ``cache`` holds one row per entry of ``rows``; ``mask_BC`` marks, per row, the
    cache columns its answer attends to. The rows are extended in place.
    """
    for row in rows:
        row.done = row.done or len(row.ids) >= row.budget
    active = list(range(len(rows)))
    device = mask_BC.device
    while True:
        still = [i for i in active if not rows[i].done]
        if not still:
            return
        if still != active:  # drop finished rows from the cache and the mask
            keep = torch.tensor([active.index(i) for i in still], device=device)
            next(iter(cache.values())).batch_select_indices(keep)
            mask_BC = mask_BC[keep]
            active = still
        batch = [rows[i] for i in active]
        guesses = [_guess(row, limit=row.budget - len(row.ids) - 1) for row in batch]
        width = 1 + max(len(g) for g in guesses)
        ids_BW = torch.zeros((len(batch), width), dtype=torch.long, device=device)
        fed_BW = torch.zeros_like(ids_BW)
        for b, (row, guess) in enumerate(zip(batch, guesses, strict=True)):
            fed = [row.last, *guess]
            ids_BW[b, : len(fed)] = torch.tensor(fed, device=device)
            fed_BW[b, : len(fed)] = 1
        positions_BW = torch.tensor([row.position for row in batch], device=device)[:, None]
        out = model(
            input_ids=ids_BW,
            attention_mask=torch.cat([mask_BC, fed_BW], dim=-1),
            position_ids=positions_BW + torch.arange(width, device=device),
            use_cache=True,
            logits_to_keep=torch.arange(width, device=device),
            **cache,
        )
        logp_BWV = torch.log_softmax(out.logits.float(), dim=-1)
        best_BW, greedy_BW = logp_BWV.max(dim=-1)
        for b, (row, guess) in enumerate(zip(batch, guesses, strict=True)):
            kept = _take(row, guess, greedy_BW[b].tolist(), best_BW[b].tolist(), eos_ids)
            fed_BW[b, kept + 1 :] = 0  # guessed tokens the model did not keep
            row.position += kept + 1
            row.last = row.ids[-1]
        mask_BC = torch.cat([mask_BC, fed_BW], dim=-1)


def _take(
    row: Row, guess: Sequence[int], greedy: list[int], best: list[float], eos: frozenset[int]
) -> int:
    """Append the model's tokens to ``row``; returns how many guessed tokens it kept."""
    kept = 0
    while True:
        token = greedy[kept]
        row.ids.append(token)
        row.logprobs.append(best[kept])
        row.done = (
            token in eos
            or len(row.ids) >= row.budget
            or (row.settled is not None and row.settled(row.ids))
        )
        if row.done or kept >= len(guess) or guess[kept] != token:
            return kept
        kept += 1


def _guess(row: Row, *, limit: int) -> list[int]:
    """What followed the answer's last tokens in the first source holding them (longest first)."""
    if limit <= 0:
        return []
    for size in range(min(_NGRAM, len(row.ids)), 0, -1):
        tail = row.ids[-size:]
        for source in row.sources:
            for start in range(len(source) - size):
                if list(source[start : start + size]) == tail:
                    return list(source[start + size : start + size + limit])
    return []
