"""Padding a list of DistillSamples into the tensors of one training batch."""

from __future__ import annotations

from collections.abc import Sequence

import attrs
import torch

from claas.sdpo import TeacherTopK
from claas.teacher import DistillSample
from claas.types import TeacherTopKLists

__all__ = ["Batch", "collate", "remote_teacher_topk"]


@attrs.frozen(kw_only=True)
class Batch:
    """Right-padded student and teacher sequences and their response positions.

    Shapes: ``B`` samples, ``Ls``/``Lt`` padded sequence lengths, ``T`` the
    longest response. ``*_positions[b, t]`` is the position whose next-token
    distribution predicts response token ``t`` of sample ``b``.
    """

    student_ids: torch.Tensor  # [B, Ls]
    student_attention: torch.Tensor  # [B, Ls]
    student_positions: torch.Tensor  # [B, T]
    teacher_ids: torch.Tensor  # [B, Lt]
    teacher_attention: torch.Tensor  # [B, Lt]
    teacher_positions: torch.Tensor  # [B, T]
    response_ids: torch.Tensor  # [B, T]
    response_mask: torch.Tensor  # [B, T] bool
    old_logprobs: torch.Tensor | None  # [B, T]

    @staticmethod
    def gather(hidden_BLD: torch.Tensor, positions_BT: torch.Tensor) -> torch.Tensor:
        """Pick ``hidden[b, positions[b, t]]`` -> ``[B, T, D]``."""
        index = positions_BT[..., None].expand(-1, -1, hidden_BLD.shape[-1])
        return hidden_BLD.gather(1, index)


def _pad(rows: Sequence[Sequence[int]], value: int, device: str) -> torch.Tensor:
    width = max(len(r) for r in rows)
    return torch.tensor([list(r) + [value] * (width - len(r)) for r in rows], device=device)


def collate(samples: Sequence[DistillSample], *, device: str) -> Batch:
    """Build a :class:`Batch` (old logprobs only when every sample has them)."""
    longest = max(s.response_len for s in samples)

    def positions(prompt_len: int, length: int) -> list[int]:
        return [prompt_len - 1 + t for t in range(length)] + [0] * (longest - length)

    old = None
    if all(s.old_logprobs is not None for s in samples):
        old = torch.tensor(
            [list(s.old_logprobs or ()) + [0.0] * (longest - s.response_len) for s in samples],
            device=device,
        )
    mask = [[True] * s.response_len + [False] * (longest - s.response_len) for s in samples]
    return Batch(
        student_ids=_pad([s.student_ids for s in samples], 0, device),
        student_attention=_pad([[1] * len(s.student_ids) for s in samples], 0, device),
        student_positions=_pad(
            [positions(s.student_prompt_len, s.response_len) for s in samples], 0, device
        ),
        teacher_ids=_pad([s.teacher_ids for s in samples], 0, device),
        teacher_attention=_pad([[1] * len(s.teacher_ids) for s in samples], 0, device),
        teacher_positions=_pad(
            [positions(s.teacher_prompt_len, s.response_len) for s in samples], 0, device
        ),
        response_ids=_pad([s.response_ids for s in samples], 0, device),
        response_mask=torch.tensor(mask, device=device),
        old_logprobs=old,
    )


def remote_teacher_topk(
    teachers: Sequence[TeacherTopKLists], batch: Batch, *, device: str
) -> TeacherTopK:
    """Turn per-sample teacher lists (e.g. from vLLM prompt logprobs) into a TeacherTopK."""
    size, longest = batch.response_ids.shape
    if len(teachers) != size:
        raise ValueError(f"{len(teachers)} teacher results for a batch of {size}")
    k = min(len(row) for t in teachers for row in t.ids)
    ids = torch.zeros(size, longest, k, dtype=torch.long, device=device)
    logprobs = torch.full((size, longest, k), -1e4, device=device)
    tokens = torch.zeros(size, longest, device=device)
    for b, teacher in enumerate(teachers):
        length = len(teacher.ids)
        ids[b, :length] = torch.tensor([row[:k] for row in teacher.ids], device=device)
        logprobs[b, :length] = torch.tensor([row[:k] for row in teacher.logprobs], device=device)
        tokens[b, :length] = torch.tensor(teacher.token_logprobs, device=device)
    return TeacherTopK(logprobs=logprobs, ids=ids, token_logprobs=tokens)
