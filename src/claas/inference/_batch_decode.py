"""Batched greedy answers and batched scoring, for short checks such as the guard's.

One left-padded batch decodes every prompt at once (greedy, KV-cached), and one
right-padded forward pass scores every (prompt, response) pair: a handful of
short probes then costs about as much as one of them alone. The same pass also
says how many leading tokens of each response are the model's own greedy choices
(:func:`greedy_agreement`): where all are, the model's greedy answer is that
response, found without decoding token by token.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch

from claas.inference._decode import _cache_keyword
from claas.models import autocast_context

__all__ = ["greedy_agreement", "greedy_batch", "score_batch"]


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
    from transformers.cache_utils import DynamicCache

    width = max(len(p) for p in prompts)
    ids_BL = torch.full((len(prompts), width), pad_id, dtype=torch.long, device=device)
    mask_BL = torch.zeros((len(prompts), width), dtype=torch.long, device=device)
    for row, prompt in enumerate(prompts):
        ids_BL[row, width - len(prompt) :] = torch.tensor(list(prompt), device=device)
        mask_BL[row, width - len(prompt) :] = 1
    positions_BL = (mask_BL.cumsum(-1) - 1).clamp(min=0)
    cache = {_cache_keyword(model): DynamicCache()}
    tokens: list[list[int]] = [[] for _ in prompts]
    logprobs: list[list[float]] = [[] for _ in prompts]
    done = [False] * len(prompts)
    inputs = ids_BL
    with torch.inference_mode(), autocast_context(device, autocast):
        for _ in range(max_tokens):
            out = model(
                input_ids=inputs,
                attention_mask=mask_BL,
                position_ids=positions_BL,
                use_cache=True,
                **cache,
            )
            logp_BV = torch.log_softmax(out.logits[:, -1].float(), dim=-1)
            next_B = torch.argmax(logp_BV, dim=-1)
            for row, token in enumerate(next_B.tolist()):
                if not done[row]:
                    tokens[row].append(token)
                    logprobs[row].append(float(logp_BV[row, token]))
                    done[row] = token in eos_ids
            if all(done):
                break
            inputs = next_B[:, None]
            mask_BL = torch.cat([mask_BL, torch.ones_like(mask_BL[:, :1])], dim=-1)
            positions_BL = positions_BL[:, -1:] + 1
    return list(zip(tokens, logprobs, strict=True))


def score_batch(
    model: Any,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int,
    device: str,
    autocast: bool = False,
) -> list[list[float]]:
    """Logprob of each response token given its prompt, for every pair in one forward pass."""
    rows = _forced(model, pairs, pad_id=pad_id, device=device, autocast=autocast)
    return [logprobs for logprobs, _ in rows]


def greedy_agreement(
    model: Any,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int,
    device: str,
    autocast: bool = False,
) -> list[tuple[list[float], int]]:
    """Per pair: its response tokens' logprobs, and how many leading ones are greedy choices.

    A response all of whose tokens agree is what greedy decoding from its prompt
    yields, up to its length (ties and last-bit differences between a batched forward
    and token-by-token decoding aside).
    """
    return _forced(model, pairs, pad_id=pad_id, device=device, autocast=autocast)


def _forced(
    model: Any,
    pairs: Sequence[tuple[Sequence[int], Sequence[int]]],
    *,
    pad_id: int,
    device: str,
    autocast: bool,
) -> list[tuple[list[float], int]]:
    sequences = [[*prompt, *response] for prompt, response in pairs]
    width = max(len(s) for s in sequences)
    ids_BL = torch.full((len(pairs), width), pad_id, dtype=torch.long, device=device)
    mask_BL = torch.zeros((len(pairs), width), dtype=torch.long, device=device)
    for row, sequence in enumerate(sequences):
        ids_BL[row, : len(sequence)] = torch.tensor(sequence, device=device)
        mask_BL[row, : len(sequence)] = 1
    with torch.inference_mode(), autocast_context(device, autocast):
        logits_BLV = model(input_ids=ids_BL, attention_mask=mask_BL).logits
    rows = []
    for row, (prompt, response) in enumerate(pairs):
        start, end = len(prompt), len(prompt) + len(response)
        logp_TV = torch.log_softmax(logits_BLV[row, start - 1 : end - 1].float(), dim=-1)
        picked = logp_TV.gather(-1, ids_BL[row, start:end, None])[:, 0]
        greedy_T = (logp_TV.argmax(dim=-1) == ids_BL[row, start:end]).long()
        agreed = int(greedy_T.cumprod(dim=0).sum()) if len(response) else 0
        rows.append(([float(x) for x in picked], agreed))
    return rows
