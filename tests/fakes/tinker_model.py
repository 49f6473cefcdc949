"""The model side of the FAKE Tinker service: the embedded model with LoRA
slots, checkpoints, the SDK's errors, and the checks the service applies to a
``Datum`` for a built-in loss. The clients are in :mod:`fakes.tinker`.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any, ClassVar

import attrs
import httpx
import tinker
import torch
from tinker import types

from claas import Settings
from claas.inference._decode import eos_token_ids
from claas.models import load_model, load_tokenizer
from claas.training.local import lora_parameters

FAKE_LORA_ALPHA = 32.0
_ATTENTION = ("q_proj", "k_proj", "v_proj", "o_proj")
_MLP = ("gate_proj", "up_proj", "down_proj")
_LOSS_INPUTS = {
    "cross_entropy": {"target_tokens": "int64", "weights": "float32"},
    "importance_sampling": {
        "target_tokens": "int64",
        "logprobs": "float32",
        "advantages": "float32",
    },
}


def _request(status: int, message: str, cls: type[tinker.APIStatusError]) -> Exception:
    response = httpx.Response(status, request=httpx.Request("POST", "https://fake.tinker/api"))
    return cls(message, response=response, body=None)


def bad_request(message: str) -> Exception:
    """The SDK's ``BadRequestError``, as the service raises it for an invalid request."""
    return _request(400, message, tinker.BadRequestError)


def not_found(message: str) -> Exception:
    """The SDK's ``NotFoundError``."""
    return _request(404, message, tinker.NotFoundError)


def conflict(message: str) -> Exception:
    """The SDK's ``ConflictError``."""
    return _request(409, message, tinker.ConflictError)


@attrs.frozen
class LoraShape:
    """The LoRA of one training run, as ``create_lora_training_client`` describes it."""

    rank: int
    seed: int | None
    train_mlp: bool
    train_attn: bool
    train_unembed: bool

    def config(self) -> Any:
        from peft import LoraConfig

        modules = [
            *(_ATTENTION if self.train_attn else ()),
            *(_MLP if self.train_mlp else ()),
            *(("lm_head",) if self.train_unembed else ()),
        ]
        return LoraConfig(
            r=self.rank,
            lora_alpha=FAKE_LORA_ALPHA,  # type: ignore[arg-type]
            lora_dropout=0.0,
            target_modules=modules,
            bias="none",
            task_type="CAUSAL_LM",
        )


@attrs.define
class Checkpoint:
    """One saved checkpoint: slot weights (names with ``{}`` for the slot) and optimizer state."""

    kind: str  # "weights" (training state) or "sampler_weights"
    run_id: str
    name: str
    shape: LoraShape
    weights: dict[str, torch.Tensor]
    optimizer: dict[str, Any] | None
    user_metadata: dict[str, str] | None
    created: datetime = attrs.field(factory=lambda: datetime.now(UTC))

    @property
    def path(self) -> str:
        return f"tinker://{self.run_id}/{self.kind}/{self.name}"


class FakeTinkerModel:
    """The embedded model with LoRA slots; one per test session (peft edits it in place)."""

    _shared: ClassVar[dict[tuple[str, str], FakeTinkerModel]] = {}

    @classmethod
    def shared(cls, settings: Settings) -> FakeTinkerModel:
        """One model per base model and cache directory for the whole test session."""
        key = (settings.base_model, str(settings.models_dir))
        if key not in cls._shared:
            cls._shared[key] = cls(settings)
        return cls._shared[key]

    def __init__(self, settings: Settings) -> None:
        self.base_model = settings.base_model
        self.model = load_model(settings.base_model, models_dir=settings.models_dir)
        self.tokenizer = load_tokenizer(settings.base_model, models_dir=settings.models_dir)
        self.vocab = self.model.get_output_embeddings().weight.shape[0]
        self.eos = eos_token_ids(self.tokenizer, self.model)
        self.lock = threading.RLock()
        self.peft: Any = None

    def new_slot(self, shape: LoraShape, weights: dict[str, torch.Tensor] | None = None) -> str:
        """Add a LoRA slot (seeded fresh init, or ``weights``) and return its name."""
        from peft import get_peft_model

        name = f"s{uuid.uuid4().hex[:10]}"
        with self.lock, torch.random.fork_rng():
            torch.manual_seed(shape.seed if shape.seed is not None else 0)
            if self.peft is None:
                self.peft = get_peft_model(self.model, shape.config(), adapter_name=name)
            else:
                self.peft.add_adapter(name, shape.config())
            self.peft.eval()
            if weights is not None:
                params = dict(self.peft.named_parameters())
                with torch.no_grad():
                    for key, value in weights.items():
                        params[key.format(name)].copy_(value)
        return name

    def parameters(self, slot: str) -> list[tuple[str, torch.nn.Parameter]]:
        """The slot's LoRA parameters (made trainable; every other one frozen)."""
        return lora_parameters(self.peft, slot)

    def weights(self, slot: str) -> dict[str, torch.Tensor]:
        return {
            key.replace(f".{slot}.", ".{}."): param.detach().clone()
            for key, param in self.parameters(slot)
        }

    def logprobs(self, slot: str | None, ids: Sequence[int], *, grad: bool) -> torch.Tensor:
        """``[N, V]`` next-token logprobs after each of ``ids`` under the slot (None = base)."""
        inputs = torch.tensor([list(ids)])
        with torch.set_grad_enabled(grad):
            if slot is None:
                if self.peft is None:
                    logits = self.model(input_ids=inputs).logits[0]
                else:
                    with self.peft.disable_adapter():
                        logits = self.peft(input_ids=inputs).logits[0]
            else:
                self.peft.set_adapter(slot)
                self.parameters(slot)
                logits = self.peft(input_ids=inputs).logits[0]
            return torch.log_softmax(logits.float(), dim=-1)


def _check_tensor(name: str, data: Any, dtype: str, n: int) -> torch.Tensor:
    if not isinstance(data, types.TensorData):
        raise bad_request(f"loss_fn_inputs[{name!r}] must be TensorData, got {type(data)}")
    if data.dtype != dtype:
        raise bad_request(f"loss_fn_inputs[{name!r}] must be {dtype}, got {data.dtype}")
    tensor = data.to_torch()
    if tensor.dim() not in (1, 2) or tensor.shape[0] != n:
        raise bad_request(
            f"loss_fn_inputs[{name!r}] has shape {list(tensor.shape)}, needs ({n}, ...)"
        )
    return tensor


def check_datum(datum: Any, loss_fn: str, vocab: int) -> dict[str, torch.Tensor]:
    """Validate one datum for a built-in loss; return its inputs as tensors."""
    if not isinstance(datum, types.Datum) or not isinstance(datum.model_input, types.ModelInput):
        raise bad_request(f"data must hold tinker.types.Datum objects, got {type(datum)}")
    expected = _LOSS_INPUTS.get(loss_fn)
    if expected is None:
        raise bad_request(f"loss_fn {loss_fn!r} is not served by this fake")
    if set(datum.loss_fn_inputs) != set(expected):
        raise bad_request(
            f"{loss_fn} takes loss_fn_inputs {sorted(expected)}, got {sorted(datum.loss_fn_inputs)}"
        )
    n = datum.model_input.length
    inputs = {
        key: _check_tensor(key, datum.loss_fn_inputs[key], dtype, n)
        for key, dtype in expected.items()
    }
    shape = inputs["target_tokens"].shape
    if loss_fn != "cross_entropy" and len(shape) != 1:
        raise bad_request(f"{loss_fn} needs 1-D target_tokens, got {list(shape)}")
    if any(t.shape != shape for t in inputs.values()):
        raise bad_request(
            f"loss_fn_inputs shapes differ: { {k: list(v.shape) for k, v in inputs.items()} }"
        )
    targets = inputs["target_tokens"]
    if targets.numel() and (targets.min() < 0 or targets.max() >= vocab):
        raise bad_request("target_tokens hold ids outside the vocabulary")
    return inputs


def gather(logprobs_NV: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
    """Logprobs at ``targets`` ``(N,)`` or ``(N, K)`` from ``[N, V]``."""
    index = targets.long() if targets.dim() == 2 else targets.long()[:, None]
    picked = logprobs_NV.gather(-1, index)
    return picked if targets.dim() == 2 else picked[:, 0]
