"""Fewer per-op steps in the local model's forward: LoRA layers and attention.

Two replacements, each computing what it replaces to within the rounding of the dtype
it runs in (``tests/test_fast_forward.py`` checks loss and gradients against the plain
PEFT and transformers path):

- :func:`install_lora_forward`: a PEFT LoRA ``Linear`` computes
  ``base(x) + B(A(dropout(x))) * scaling`` as separate ops, and casts ``x`` to the
  LoRA weights' float32 first; under bfloat16 autocast the base and the LoRA matmul
  then each cast ``x`` to bfloat16 again. Here ``x`` is cast once to the autocast dtype
  (not at all when it arrives in it, as the attention and MLP outputs do) and the
  scaling is folded into ``B`` (a ``[out, r]`` weight instead of a ``[tokens, out]``
  activation). Anything unusual (merged weights, mixed-batch adapter names, LoRA
  variants such as DoRA, active dropout) takes PEFT's own forward. A call of a few
  rows under CPU autocast (a decoding step) runs the LoRA matmuls in float32
  instead (:func:`_few_rows_forward`). A gradient-free call on the CPU with more rows
  (the guard's scoring pass) uses copies of ``A`` and the scaled ``B`` in the compute
  dtype, made once per version of the weights, and adds the LoRA product with one
  ``addmm`` (:func:`_frozen_weights`). A writer that leaves the weights' version
  counters alone (the fused AdamW kernel) calls :func:`forget_weight_copies` after it.
- :func:`install_attention`: torch's CPU flash-attention kernel is slower in bfloat16
  than in float32 for backward (about 6.8 against 5.8 ms per layer at 239 tokens on an
  AVX512-BF16 CPU) but faster for forward. Attention whose inputs require grad (the
  student's training pass) runs in float32 on the CPU; gradient-free passes (teacher,
  decoding) keep bfloat16.
"""

from __future__ import annotations

import types
from typing import Any, NamedTuple

import torch
import torch.nn.functional as F

__all__ = [
    "ATTENTION",
    "forget_weight_copies",
    "install_attention",
    "install_lora_forward",
    "use_attention",
]

ATTENTION = "claas_sdpa"
_FEW_ROWS = 16  # rows up to which a LoRA layer under CPU autocast runs LoRA in float32
_MARK = "_claas_fast_forward"
_FROZEN = "_claas_frozen_lora"  # a LoRA layer's cached weight copies (see _frozen_weights)


def install_lora_forward(model: Any) -> int:
    """Give every PEFT LoRA ``Linear`` in ``model`` the fused forward; return how many got it.

    Idempotent: layers that have it already, and adapters added later to them, keep it.
    """
    from peft.tuners.lora.layer import Linear

    count = 0
    for module in model.modules():
        if type(module) is Linear and not getattr(module, _MARK, False):
            module.forward = types.MethodType(_lora_linear_forward, module)  # type: ignore[method-assign]
            setattr(module, _MARK, True)
            count += 1
    return count


def forget_weight_copies(model: Any) -> None:
    """Drop every LoRA layer's cached weight copies in ``model`` (see :func:`_frozen_weights`).

    For writes the version counters miss: ``torch.optim.AdamW(fused=True)`` updates
    the parameters in place without bumping them, so after its step a gradient-free
    pass (the next step's teacher, a guard check) would otherwise read the weights
    from before it.
    """
    for module in model.modules():
        module.__dict__.pop(_FROZEN, None)


def _plain(layer: Any, args: tuple[Any, ...], kwargs: dict[str, Any]) -> bool:
    """Whether this call needs PEFT's own forward."""
    if args or kwargs or layer.merged or layer.lora_variant:
        return True
    return any(
        isinstance(d, torch.nn.Dropout) and d.training and d.p > 0
        for d in layer.lora_dropout.values()
    )


def _lora_linear_forward(self: Any, x: torch.Tensor, *args: Any, **kwargs: Any) -> torch.Tensor:
    base = self.base_layer
    if self.disable_adapters and not self.merged and not args and not kwargs:
        return base(x)
    if _plain(self, args, kwargs):
        return type(self).forward(self, x, *args, **kwargs)
    active = [a for a in self.active_adapters if a in self.lora_A]
    if not active:
        return base(x)
    device = x.device.type
    if device == "cpu" and x.shape[:-1].numel() <= _FEW_ROWS and torch.is_autocast_enabled(device):
        return _few_rows_forward(self, x, active)
    if torch.is_autocast_enabled(device) and x.dtype == torch.float32:
        x = x.to(torch.get_autocast_dtype(device))
    flat = x.reshape(-1, x.shape[-1])
    out = F.linear(flat, base.weight, base.bias)
    frozen = device == "cpu" and not torch.is_grad_enabled()
    for name in active:
        if frozen:
            a, b = _frozen_weights(self, name, flat.dtype)
            out = torch.addmm(out, F.linear(flat, a), b.t())
            continue
        # Folding the scaling into B scales [out, r] numbers instead of [tokens, out].
        # (addmm would fold the add too, but with its bfloat16 CPU kernel the
        # gradient's error against float32 rose from 4.9 % to 8.3 % in one check.)
        b = self.lora_B[name].weight * self.scaling[name]
        out = out + F.linear(F.linear(flat, self.lora_A[name].weight), b)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def _frozen_weights(layer: Any, name: str, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
    """Adapter ``name``'s ``A`` and scaled ``B`` in ``dtype``, kept until the weights change.

    A gradient-free pass on the CPU (a guard check, a teacher pass) otherwise casts
    both float32 LoRA weights to the compute dtype and scales ``B`` again at every
    call: 210 layers on the bundled model. The copies are remade when a weight is
    replaced or written in place through an op that moves its version counter (a
    slot overwritten with another version's weights, a foreach optimizer step), and
    dropped by :func:`forget_weight_copies` after a write that does not (a fused one).
    """
    a, b, scale = layer.lora_A[name].weight, layer.lora_B[name].weight, layer.scaling[name]
    state = (a._version, b._version, scale, dtype)
    copies: dict[str, _Copies] = layer.__dict__.setdefault(_FROZEN, {})
    held = copies.get(name)
    if held is None or held.a is not a or held.b is not b or held.state != state:
        for gone in [n for n in copies if n not in layer.lora_A]:  # deleted adapters
            del copies[gone]
        with torch.autocast(a.device.type, enabled=False):
            held = _Copies(a, b, state, a.detach().to(dtype), (b.detach() * scale).to(dtype))
        copies[name] = held
    return held.a_copy, held.b_copy


class _Copies(NamedTuple):
    """One adapter's weight copies in a LoRA layer, and what they were made from."""

    a: torch.Tensor  # the weights themselves: compared by identity
    b: torch.Tensor
    state: tuple[Any, ...]  # their version counters, the scaling and the dtype
    a_copy: torch.Tensor
    b_copy: torch.Tensor  # scaled


def _few_rows_forward(self: Any, x: torch.Tensor, active: list[str]) -> torch.Tensor:
    """A decoding step's LoRA layer under CPU autocast: the LoRA matmuls in float32.

    With a few rows the matmuls are bound by their per-call cost, and the skinny
    LoRA ones (rank 32) take several times longer in bfloat16 than in float32
    (about 21 against 2-7 µs per matmul at one row, 576 -> 32 -> 1536, one core),
    before counting the casts of both LoRA weights that autocast makes at every
    call. Here they run in the LoRA weights' own float32 (no weight is cast, the
    scaling multiplies the ``[rows, out]`` result); the base matmul stays under autocast.
    """
    flat = x.reshape(-1, x.shape[-1])
    out = self.base_layer(flat)
    with torch.autocast("cpu", enabled=False):
        for name in active:
            a = self.lora_A[name].weight
            low = F.linear(F.linear(flat.to(a.dtype), a), self.lora_B[name].weight)
            out = out + (low * self.scaling[name]).to(out.dtype)
    return out.reshape(*x.shape[:-1], out.shape[-1])


def install_attention(model: Any) -> None:
    """Run ``model``'s attention through :func:`_attention` (registered as ``claas_sdpa``)."""
    use_attention(model, ATTENTION, _attention)


def use_attention(model: Any, name: str, forward: Any) -> None:
    """Register ``forward`` with transformers as attention ``name`` and run ``model`` on it.

    Its masks are built as for ``sdpa``. Transformers passes no mask at all to an
    attention without a registered mask builder, which attends to padding and masked
    cache columns: harmless for training's right-padded batches, wrong for cached decoding.
    """
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, sdpa_mask

    AttentionInterface.register(name, forward)
    AttentionMaskInterface.register(name, sdpa_mask)
    model.set_attn_implementation(name)


def _attention(
    module: Any,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    **kwargs: Any,
) -> tuple[torch.Tensor, Any]:
    from transformers.integrations.sdpa_attention import sdpa_attention_forward

    # Under autocast the rotary embedding hands over float32 queries and keys and autocast
    # casts them to bfloat16 for the kernel; for a pass that will be differentiated they
    # go in as float32 instead. The output is cast to what autocast would have given.
    reduced = torch.is_autocast_enabled("cpu") or value.dtype == torch.bfloat16
    if not (query.device.type == "cpu" and query.requires_grad and reduced):
        return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)
    if attention_mask is not None and attention_mask.is_floating_point():
        attention_mask = attention_mask.float()
    with torch.autocast("cpu", enabled=False):
        out, weights = sdpa_attention_forward(
            module, query.float(), key.float(), value.float(), attention_mask, **kwargs
        )
    return out.to(torch.bfloat16), weights
