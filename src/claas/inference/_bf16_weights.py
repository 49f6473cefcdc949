"""bfloat16 copies of a float32 model's frozen linear weights, swapped in for one call.

Local inference on a CPU decodes chats in float32 (see :mod:`claas.precision`),
but the guard's batched checks are matmul-bound: one pass over every probe and its
draft answer runs about 200 tokens through every layer, and bfloat16 matmuls of
that size run about four times as fast as float32 ones on CPUs that compute them
natively (420 against 100 GFLOP/s on one AVX512-BF16 core; the whole pass 0.4
against 0.9 s). Under autocast a float32 weight is cast again at every call, which
costs more than the matmul saves, so the copies are made once, kept beside the
float32 weights, and put in place of them (``module._parameters``) only while such
a check runs, under the backend's model lock. LoRA weights are left as they are (float32, as the
training engine keeps them).

Written here rather than with ``torch.func.functional_call``: a check makes many
forward calls (the shared prefix, the scoring pass, each decoded token), and one
swap around all of them keeps the model callable as it is.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from typing import Any

import torch

__all__ = ["BFloat16Weights"]


class BFloat16Weights:
    """The bfloat16 copies of one base model's frozen float32 linear weights."""

    def __init__(self) -> None:
        # id -> (the float32 weight, its copy): holding the weight keeps its id unique.
        self._copies: dict[int, tuple[torch.nn.Parameter, torch.nn.Parameter]] = {}
        # id -> (the model, its frozen linear layers): adapters loaded later add only
        # LoRA layers, so the list found once stays right.
        self._layers: dict[int, tuple[Any, list[torch.nn.Linear]]] = {}

    @contextlib.contextmanager
    def swapped_in(self, model: Any) -> Iterator[None]:
        """Run ``model``'s frozen float32 linear layers (head included) with the copies."""
        known = self._layers.get(id(model))
        if known is None:
            known = self._layers[id(model)] = (model, list(_frozen_linears(model)))
        layers = known[1]
        originals = [layer._parameters["weight"] for layer in layers]
        try:
            for layer, weight in zip(layers, originals, strict=True):
                assert weight is not None  # a frozen linear layer has its weight
                layer._parameters["weight"] = self._copy(weight)
            yield
        finally:
            for layer, weight in zip(layers, originals, strict=True):
                layer._parameters["weight"] = weight

    def _copy(self, weight: torch.nn.Parameter) -> torch.nn.Parameter:
        # Keyed by the float32 parameter's identity: the base weights never change,
        # and a tied LM head shares its one copy with nothing else (the embedding
        # itself stays float32).
        known = self._copies.get(id(weight))
        if known is None:
            copy = torch.nn.Parameter(weight.detach().to(torch.bfloat16), requires_grad=False)
            known = self._copies[id(weight)] = (weight, copy)
        return known[1]


def _frozen_linears(model: Any) -> Iterator[torch.nn.Linear]:
    """The base model's linear layers holding frozen float32 weights (not LoRA's own)."""
    for name, module in model.named_modules():
        if not isinstance(module, torch.nn.Linear):
            continue
        if any(part.startswith("lora_") for part in name.split(".")):
            continue
        weight = module.weight
        if weight.dtype == torch.float32 and not weight.requires_grad:
            yield module
