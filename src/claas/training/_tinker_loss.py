"""The Tinker engine's three loss variants: data in the SDK's types, math from claas.sdpo.

Every sample becomes one ``Datum`` over its student sequence with the usual
next-token alignment: ``model_input`` is ``student_ids[:-1]`` (``N`` positions)
and row ``Ps - 1 + t`` of each ``(N, ...)`` input predicts response token ``t``.

- ``topk_sdpo``: ``forward_backward_custom`` with ``target_tokens`` ``(N, K+1)``
  (the teacher's top-K ids, then the sampled id). The service returns the
  student's logprobs at those ids; the SDPO objective of :mod:`claas.sdpo` (any
  alpha, tail atom, importance weights, KL to base) is computed on them here.
- ``topk_cross_entropy``: the built-in ``cross_entropy`` with ``(N, K)`` soft
  targets, weights = teacher probabilities: forward KL on the top-K (alpha 0,
  no tail, no importance weight), one pass.
- ``token_importance_sampling``: the token-level variant through the built-in
  ``importance_sampling``. With the current logprobs ``s`` as its sampling
  logprobs the ratio is 1 and its gradient is that of ``-A log s``, with
  ``A = w (log q(y) - s) + beta (exp(log b(y) - s) - 1)`` (the last term is the
  gradient of the k3 KL to base), ``w`` the clipped importance weight.

Losses the service sums are divided by the number of response tokens, so every
variant minimizes the masked token mean the local engine minimizes.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch

from claas import sdpo
from claas.config import TinkerLoss
from claas.errors import InvalidConfig
from claas.sdpo import TeacherTopK
from claas.teacher import DistillSample
from claas.types import DistillConfig

__all__ = [
    "VARIANTS",
    "advantages",
    "cross_entropy_datums",
    "importance_datums",
    "plain_datums",
    "response_rows",
    "sdpo_datums",
    "sdpo_loss_fn",
    "select_variant",
    "stack_rows",
    "topk_forward_kl",
    "topk_sdpo_objective",
]

VARIANTS = ("topk_sdpo", "topk_cross_entropy", "token_importance_sampling")
# Student logprob written into padded positions: finite, and leaves a tail atom for any K.
_PAD_LOGPROB = -30.0
CustomLoss = Callable[[list[Any], list[torch.Tensor]], tuple[torch.Tensor, dict[str, float]]]


def select_variant(config: DistillConfig, tinker_loss: TinkerLoss) -> str:
    """The loss variant an update uses, decided by the config alone.

    Raises:
        InvalidConfig: ``cross_entropy`` asked for with ``alpha != 0`` or a KL to base.
    """
    if config.loss == "token":
        return "token_importance_sampling"
    if tinker_loss == "cross_entropy":
        if config.alpha != 0.0 or config.kl_beta > 0.0:
            raise InvalidConfig(
                "Settings.tinker.loss='cross_entropy' is forward KL only: it needs "
                f"DistillConfig.alpha=0 and kl_beta=0 (got alpha={config.alpha}, "
                f"kl_beta={config.kl_beta}); use tinker.loss='sdpo' otherwise"
            )
        return "topk_cross_entropy"
    return "topk_sdpo"


def response_rows(sample: DistillSample) -> slice:
    """The datum rows that predict the ``T`` response tokens."""
    start = sample.student_prompt_len - 1
    return slice(start, start + sample.response_len)


def _model_input(types: Any, sample: DistillSample) -> Any:
    return types.ModelInput.from_ints(list(sample.student_ids[:-1]))


def _rows_len(sample: DistillSample) -> int:
    return len(sample.student_ids) - 1


def stack_rows(
    per_sample: Sequence[torch.Tensor], samples: Sequence[DistillSample], *, fill: float
) -> torch.Tensor:
    """Pick each sample's response rows of ``(N, ...)`` tensors into ``[B, T, ...]``.

    Gradients flow back into ``per_sample``; padding rows hold ``fill``.
    """
    longest = max(s.response_len for s in samples)
    tail = tuple(per_sample[0].shape[1:])
    out = torch.full((len(samples), longest, *tail), fill, dtype=per_sample[0].dtype)
    for b, (values, sample) in enumerate(zip(per_sample, samples, strict=True)):
        out[b, : sample.response_len] = values[response_rows(sample)]
    return out


def sdpo_datums(types: Any, samples: Sequence[DistillSample], teacher: TeacherTopK) -> list[Any]:
    """Datums asking for the student's logprobs at the teacher's top-K ids and the sampled id."""
    k = teacher.ids.shape[-1]
    data = []
    for b, sample in enumerate(samples):
        targets = torch.zeros(_rows_len(sample), k + 1, dtype=torch.long)
        rows, length = response_rows(sample), sample.response_len
        targets[rows, :k] = teacher.ids[b, :length]
        targets[rows, k] = torch.tensor(sample.response_ids)
        # Dense on purpose: the SDK's client-side custom loss pairs the targets with
        # zero weights of the same flat length, which a sparse encoding would break.
        inputs = {"target_tokens": types.TensorData.from_torch(targets)}
        data.append(types.Datum(model_input=_model_input(types, sample), loss_fn_inputs=inputs))
    return data


def cross_entropy_datums(
    types: Any, samples: Sequence[DistillSample], teacher: TeacherTopK, tokens: float
) -> list[Any]:
    """Datums with ``(N, K)`` soft targets weighted by the teacher's probabilities / tokens."""
    k = teacher.ids.shape[-1]
    data = []
    for b, sample in enumerate(samples):
        targets = torch.zeros(_rows_len(sample), k, dtype=torch.long)
        weights = torch.zeros(_rows_len(sample), k, dtype=torch.float32)
        rows, length = response_rows(sample), sample.response_len
        targets[rows] = teacher.ids[b, :length]
        weights[rows] = teacher.logprobs[b, :length].float().exp() / tokens
        inputs = {"target_tokens": targets, "weights": weights}
        data.append(types.Datum(model_input=_model_input(types, sample), loss_fn_inputs=inputs))
    return data


def plain_datums(types: Any, samples: Sequence[DistillSample]) -> list[Any]:
    """Zero-weight cross-entropy datums: a ``forward`` with them returns current logprobs."""
    data = []
    for sample in samples:
        targets = torch.tensor(sample.student_ids[1:], dtype=torch.long)
        inputs = {"target_tokens": targets, "weights": torch.zeros(len(targets))}
        data.append(types.Datum(model_input=_model_input(types, sample), loss_fn_inputs=inputs))
    return data


def importance_datums(
    types: Any,
    samples: Sequence[DistillSample],
    current: Sequence[torch.Tensor],
    advantages_BT: torch.Tensor,
) -> list[Any]:
    """``importance_sampling`` datums with the current ``(N,)`` logprobs as sampling logprobs."""
    data = []
    for b, sample in enumerate(samples):
        adv = torch.zeros(_rows_len(sample), dtype=torch.float32)
        adv[response_rows(sample)] = advantages_BT[b, : sample.response_len].float()
        inputs = {
            "target_tokens": torch.tensor(sample.student_ids[1:], dtype=torch.long),
            "logprobs": current[b].detach().float(),
            "advantages": adv,
        }
        data.append(types.Datum(model_input=_model_input(types, sample), loss_fn_inputs=inputs))
    return data


def _masked_mean(values_BT: torch.Tensor, mask_BT: torch.Tensor) -> torch.Tensor:
    m = mask_BT.to(values_BT.dtype)
    return torch.where(m != 0, values_BT * m, 0.0).sum() / m.sum().clamp(min=1.0)


def _weights(
    student_token_BT: torch.Tensor, old_BT: torch.Tensor | None, config: DistillConfig
) -> tuple[torch.Tensor, torch.Tensor]:
    if old_BT is None:
        ones = torch.ones_like(student_token_BT)
        return ones, torch.zeros_like(student_token_BT, dtype=torch.bool)
    return sdpo.importance_weights(student_token_BT, old_BT, clip=config.is_clip)


def _metrics(
    total: torch.Tensor,
    distill_BT: torch.Tensor,
    student_token_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    old_BT: torch.Tensor | None,
    clipped_BT: torch.Tensor,
    k3_BT: torch.Tensor | None,
) -> dict[str, float]:
    """The metric names and meanings of :func:`claas.sdpo.sdpo_loss`."""
    with torch.no_grad():
        ratio = 1.0
        if old_BT is not None:
            log_ratio = (student_token_BT - old_BT).clamp(-20.0, 20.0)
            ratio = float(_masked_mean(log_ratio.exp(), mask_BT))
        return {
            "loss": float(total.detach()),
            "distill_loss": float(_masked_mean(distill_BT.detach(), mask_BT)),
            "kl_to_base": 0.0 if k3_BT is None else float(_masked_mean(k3_BT, mask_BT)),
            "is_ratio_mean": ratio,
            "is_clip_frac": float(_masked_mean(clipped_BT.to(distill_BT.dtype), mask_BT)),
            "tokens": float(mask_BT.sum()),
        }


def topk_sdpo_objective(
    student_topk_BTK: torch.Tensor,
    student_token_BT: torch.Tensor,
    teacher_logprobs_BTK: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    config: DistillConfig,
    old_BT: torch.Tensor | None = None,
    base_BT: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """The SDPO loss from the student's logprobs at the teacher's top-K ids.

    Equals :func:`claas.sdpo.sdpo_loss` on the full student distribution with a
    :class:`~claas.sdpo.TeacherTopK` teacher: the divergence only reads the
    student at the teacher's ids (and their total mass, for the tail atom), and
    the importance weight and KL to base only at the sampled token.

    Args:
        student_topk_BTK: ``[B, T, K]`` student logprobs at the teacher's top-K ids.
        student_token_BT: ``[B, T]`` student logprob of the sampled token.
        teacher_logprobs_BTK: ``[B, T, K]`` the teacher's top-K logprobs.
        mask_BT: ``[B, T]`` 1 for a real response token.
        config: alpha, add_tail, is_clip and kl_beta are used.
        old_BT: ``[B, T]`` logprobs the response was served with, if known.
        base_BT: ``[B, T]`` base-model logprobs of the sampled tokens (for kl_beta).

    Returns:
        ``(loss, metrics)`` as :func:`claas.sdpo.sdpo_loss` returns them.
    """
    b, t, k = student_topk_BTK.shape
    # The student tensor already holds the teacher's ids in order: its own index is the id.
    support = torch.arange(k).expand(b, t, k)
    distill = sdpo.divergence(
        student_topk_BTK,
        TeacherTopK(teacher_logprobs_BTK, support),
        alpha=config.alpha,
        add_tail=config.add_tail,
    )
    weights, clipped = _weights(student_token_BT, old_BT, config)
    per_token = weights * distill
    k3 = None if base_BT is None else sdpo.kl_to_base_k3(student_token_BT, base_BT)
    if k3 is not None and config.kl_beta > 0:
        per_token = per_token + config.kl_beta * k3
    total = _masked_mean(per_token, mask_BT)
    metrics = _metrics(
        total, distill, student_token_BT, mask_BT, old_BT=old_BT, clipped_BT=clipped, k3_BT=k3
    )
    return total, metrics


def sdpo_loss_fn(
    samples: Sequence[DistillSample],
    teacher: TeacherTopK,
    mask_BT: torch.Tensor,
    *,
    config: DistillConfig,
    old_BT: torch.Tensor | None,
    base_BT: torch.Tensor | None,
    seen: dict[str, float],
) -> CustomLoss:
    """The loss function ``forward_backward_custom`` calls with the ``(N, K+1)`` logprobs.

    ``seen`` receives the metrics of the last call.
    """
    k = teacher.ids.shape[-1]

    def loss_fn(data: list[Any], logprobs: list[torch.Tensor]) -> tuple[torch.Tensor, dict]:
        student = stack_rows(logprobs, samples, fill=_PAD_LOGPROB).float()
        total, metrics = topk_sdpo_objective(
            student[..., :k],
            student[..., k],
            teacher.logprobs,
            mask_BT,
            config=config,
            old_BT=old_BT,
            base_BT=base_BT,
        )
        seen.clear()
        seen.update(metrics)
        return total, {f"claas/{name}:mean": value for name, value in metrics.items()}

    return loss_fn


def topk_forward_kl(
    student_topk_BTK: torch.Tensor, teacher_logprobs_BTK: torch.Tensor, mask_BT: torch.Tensor
) -> dict[str, float]:
    """Metrics of the ``cross_entropy`` variant: forward KL on the top-K ids, no tail.

    Up to the teacher's entropy (a constant) this is the loss the service minimized.
    """
    q = teacher_logprobs_BTK.float()
    kl = float(_masked_mean((q.exp() * (q - student_topk_BTK.float())).sum(-1), mask_BT))
    return {
        "loss": kl,
        "distill_loss": kl,
        "kl_to_base": 0.0,
        "is_ratio_mean": 1.0,
        "is_clip_frac": 0.0,
        "tokens": float(mask_BT.sum()),
    }


def advantages(
    student_token_BT: torch.Tensor,
    teacher_token_BT: torch.Tensor,
    mask_BT: torch.Tensor,
    *,
    config: DistillConfig,
    old_BT: torch.Tensor | None = None,
    base_BT: torch.Tensor | None = None,
) -> tuple[torch.Tensor, dict[str, float]]:
    """Per-token advantages of the token-level variant, divided by the token count.

    Returns:
        ``([B, T] advantages, metrics)``; the metrics are those of
        :func:`claas.sdpo.sdpo_loss` with ``loss="token"``.
    """
    s = student_token_BT.detach()
    weights, clipped = _weights(s, old_BT, config)
    distill = sdpo.token_level_loss(s, teacher_token_BT)
    adv = weights * (teacher_token_BT.to(s.dtype) - s)
    per_token = weights * distill
    k3 = None if base_BT is None else sdpo.kl_to_base_k3(s, base_BT)
    if k3 is not None and config.kl_beta > 0:
        assert base_BT is not None
        adv = adv + config.kl_beta * torch.expm1(base_BT.to(s.dtype) - s)
        per_token = per_token + config.kl_beta * k3
    total = _masked_mean(per_token, mask_BT)
    metrics = _metrics(total, distill, s, mask_BT, old_BT=old_BT, clipped_BT=clipped, k3_BT=k3)
    scaled = torch.where(mask_BT, adv, 0.0) / mask_BT.sum().clamp(min=1)
    return scaled, metrics
