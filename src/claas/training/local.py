"""The local SDPO training engine (torch + peft, CPU or CUDA).

The base model is loaded once and keeps its LoRA layers injected between
requests; each update loads the parent version's weights and AdamW state
(unless they are already the ones in memory), runs the update, and writes the
new PEFT files and optimizer state. Teacher and KL-to-base passes run with the
adapter disabled, so the frozen teacher really is the base model.
"""

from __future__ import annotations

import contextlib
import json
import threading
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from claas import sdpo
from claas._fast_forward import forget_weight_copies, install_attention, install_lora_forward
from claas.config import Settings
from claas.errors import NonFiniteUpdate, TrainingError
from claas.models import (
    autocast_context,
    load_model,
    resolve_device,
)
from claas.precision import autocast_choice
from claas.teacher import DistillSample
from claas.training._batch import Batch, collate, remote_teacher_topk
from claas.types import AdapterVersion, DistillConfig, DistillResult, LoraSpec, TeacherTopKLists

__all__ = ["LocalTrainer", "lora_parameters"]

WEIGHTS_FILE = "adapter_model.safetensors"
OPTIMIZER_FILE = "optimizer.pt"


def _spec_key(lora: LoraSpec) -> str:
    return f"r{lora.rank}_a{lora.alpha:g}_d{lora.dropout:g}_" + "_".join(lora.target_modules)


def lora_parameters(peft: Any, slot: str) -> list[tuple[str, torch.nn.Parameter]]:
    """The LoRA parameters of adapter ``slot``, made trainable; every other one frozen."""
    params = []
    for name, param in peft.named_parameters():
        mine = f".{slot}." in name
        param.requires_grad_(mine)
        if mine:
            params.append((name, param))
    return params


class LocalTrainer:
    """Run SDPO updates on an in-process model.

    Args:
        settings: Model name, device and dtype.
        model: An already loaded base model for this engine's exclusive use (from
            ``load_model(..., autocast=engine.autocast.enabled)``).
        fast_forward: Run LoRA layers and attention through :mod:`claas._fast_forward`
            (the default); ``False`` keeps PEFT's and transformers' own, for comparisons.

    Attributes:
        autocast: Whether it computes under bfloat16 autocast, resolved from
            ``settings.autocast`` for its device.
    """

    name = "local"

    def __init__(self, settings: Settings, *, model: Any = None, fast_forward: bool = True) -> None:
        self.settings = settings
        self.fast_forward = fast_forward
        self._device = resolve_device(settings.device)
        self.autocast = autocast_choice(settings.autocast, self._device)
        self._base = model
        self._peft: Any = None
        self._slots: dict[str, str] = {}
        self._lock = threading.Lock()
        self._optimizer: torch.optim.AdamW | None = None
        self._loaded: tuple[str, int] | None = None
        self._pending: tuple[str, int] | None = None

    def _base_model(self) -> Any:
        if self._base is None:
            self._base = load_model(
                self.settings.base_model,
                models_dir=self.settings.models_dir,
                device=self._device,
                dtype=self.settings.dtype,
                autocast=self.autocast.enabled,
            )
        return self._base

    def _slot(self, lora: LoraSpec) -> str:
        """The PEFT adapter slot for a LoRA shape, created on first use."""
        from peft import LoraConfig, get_peft_model

        key = _spec_key(lora)
        if key in self._slots:
            name = self._slots[key]
        else:
            name = f"slot{len(self._slots)}"
            config = LoraConfig(
                r=lora.rank,
                # PEFT annotates lora_alpha as int but computes alpha / r in floats.
                lora_alpha=lora.alpha,  # type: ignore[arg-type]
                lora_dropout=lora.dropout,
                target_modules=list(lora.target_modules),
                bias="none",
                task_type="CAUSAL_LM",
            )
            # autocast_adapter_dtype: LoRA weights are float32 master weights even
            # next to bfloat16 base layers.
            if self._peft is None:
                self._peft = get_peft_model(
                    self._base_model(), config, adapter_name=name, autocast_adapter_dtype=True
                )
            else:
                self._peft.add_adapter(name, config, autocast_adapter_dtype=True)
            if self.fast_forward:
                install_lora_forward(self._peft)
                install_attention(self._base_model())
            self._slots[key] = name
        self._peft.set_adapter(name)
        # Dropout stays off: the teacher shares these weights (FACTS §1).
        self._peft.eval()
        return name

    def init_adapter(self, lora: LoraSpec, out_dir: Path) -> None:
        """Write a fresh adapter (LoRA B = 0, so it equals the base model)."""
        with self._lock:
            slot = self._slot(lora)
            fresh = {k: v for k, v in self._peft.state_dict().items() if f".{slot}." in k}
            for key, value in fresh.items():
                if "lora_B" in key:
                    value.zero_()
                else:
                    torch.nn.init.kaiming_uniform_(value, a=5**0.5)
            self._save(slot, out_dir)
            self._invalidate()

    def _save(self, slot: str, out_dir: Path, optimizer: Any = None) -> None:
        from peft import get_peft_model_state_dict
        from safetensors.torch import save_file

        out_dir.mkdir(parents=True, exist_ok=True)
        # Only the LoRA tensors: the embeddings are the base model's, never trained.
        state = get_peft_model_state_dict(
            self._peft, adapter_name=slot, save_embedding_layers=False
        )
        save_file(
            {k: v.detach().contiguous().cpu() for k, v in state.items()}, out_dir / WEIGHTS_FILE
        )
        config = self._peft.peft_config[slot].to_dict()
        config["base_model_name_or_path"] = self.settings.base_model
        config["target_modules"] = sorted(config["target_modules"])
        (out_dir / "adapter_config.json").write_text(json.dumps(config, indent=2, default=str))
        if optimizer is not None:
            torch.save(optimizer, out_dir / OPTIMIZER_FILE)

    def _load_parent(self, parent: AdapterVersion, slot: str, config: DistillConfig) -> None:
        """Put the parent's weights and AdamW state in place (skipped if already there)."""
        from peft import set_peft_model_state_dict
        from safetensors.torch import load_file

        params = lora_parameters(self._peft, slot)
        if self._loaded != (parent.adapter_id, parent.version) or self._optimizer is None:
            weights = load_file(str(Path(parent.path) / WEIGHTS_FILE), device=self._device)
            result = set_peft_model_state_dict(self._peft, weights, adapter_name=slot)
            if getattr(result, "unexpected_keys", None):
                raise TrainingError(f"version {parent.ref} does not fit the model's LoRA layers")
            # The fused kernel updates all LoRA tensors in one call (CPU and CUDA);
            # the loop it replaces is hundreds of small ops per step.
            fused = self._device.split(":")[0] in ("cpu", "cuda") or None
            self._optimizer = torch.optim.AdamW(
                [p for _, p in params], lr=config.learning_rate, fused=fused
            )
            state_file = Path(parent.path) / OPTIMIZER_FILE
            if state_file.exists():
                saved = torch.load(state_file, map_location=self._device, weights_only=True)
                if saved.get("param_names") == [n for n, _ in params]:
                    self._optimizer.load_state_dict(saved["state"])
        # Restored state must not override the hyperparameters asked for now.
        for group in self._optimizer.param_groups:
            group.update(
                lr=config.learning_rate,
                betas=config.adam_betas,
                weight_decay=config.weight_decay,
            )
        self._loaded = None

    def distill(
        self,
        samples: Sequence[DistillSample],
        *,
        parent: AdapterVersion,
        config: DistillConfig,
        out_dir: Path,
        remote_teacher: Sequence[TeacherTopKLists] | None = None,
    ) -> DistillResult:
        """Run ``config.steps`` SDPO steps from ``parent``; write the result to ``out_dir``."""
        if not samples:
            raise TrainingError("an update needs at least one sample")
        if config.teacher == "remote" and remote_teacher is None:
            raise TrainingError(
                "teacher='remote' needs teacher logprobs from the inference backend"
            )
        with self._lock:
            self._pending = None
            lora = LoraSpec(**parent.lora) if parent.lora else LoraSpec()
            slot = self._slot(lora)
            self._load_parent(parent, slot, config)
            batch = collate(samples, device=self._device)
            params = [p for _, p in lora_parameters(self._peft, slot)]
            started = time.perf_counter()
            try:
                metrics = self._run_steps(batch, config, params, remote_teacher)
            except NonFiniteUpdate:
                self._invalidate()
                raise
            except RuntimeError as exc:
                # Torch reports numeric and device failures as RuntimeError; the
                # weights in memory may be half-updated either way.
                self._invalidate()
                raise TrainingError(f"the update failed: {exc}") from exc
            if self._device.startswith("cuda"):
                torch.cuda.synchronize(self._device)  # the clock stops when the GPU is done
            metrics["step_seconds"] = (time.perf_counter() - started) / config.steps
            names = [n for n, _ in lora_parameters(self._peft, slot)]
            assert self._optimizer is not None
            self._save(
                slot,
                out_dir,
                {"state": self._optimizer.state_dict(), "param_names": names},
            )
            self._pending = (parent.adapter_id, parent.version)
            return DistillResult(metrics=metrics, steps=config.steps, tokens=int(metrics["tokens"]))

    def divergence(
        self,
        samples: Sequence[DistillSample],
        *,
        parent: AdapterVersion,
        config: DistillConfig,
        remote_teacher: Sequence[TeacherTopKLists] | None = None,
        reference: Sequence[DistillSample] | None = None,
    ) -> float:
        """The skip pre-check's divergence, from forward passes only (see the protocol)."""
        with self._lock:
            lora = LoraSpec(**parent.lora) if parent.lora else LoraSpec()
            slot = self._slot(lora)
            self._load_parent(parent, slot, config)
            batch = collate(samples, device=self._device)
            with torch.no_grad():
                teacher = (
                    remote_teacher_topk(remote_teacher, batch, device=self._device)
                    if remote_teacher is not None
                    else self._teacher_topk(batch, config)
                )
                if reference is None:
                    _, metrics = self._loss(batch, teacher, config, None)
                else:
                    metrics = self._reference_divergence(reference, teacher, config)
            # Nothing changed the weights: the next distill from this parent reuses them.
            self._loaded = (parent.adapter_id, parent.version)
            return metrics["distill_loss"]

    def _reference_divergence(
        self, reference: Sequence[DistillSample], teacher: sdpo.TeacherTopK, config: DistillConfig
    ) -> dict[str, float]:
        """The divergence of ``teacher`` from the teacher shown the reference text."""
        batch = collate(reference, device=self._device)
        frozen = config.teacher != "current"
        context = self._peft.disable_adapter() if frozen else contextlib.nullcontext()
        weight, bias = self._lm_head()
        with context:
            hidden = self._hidden(batch.teacher_ids, batch.teacher_attention)
        picked = batch.gather(hidden, batch.teacher_positions)
        _, metrics = sdpo.sdpo_loss_from_hidden(
            picked.to(weight.dtype),
            weight,
            teacher,
            batch.response_ids,
            batch.response_mask,
            chunk_size=config.chunk_size,
            lm_head_bias=bias,
            alpha=config.alpha,
            add_tail=config.add_tail,
            loss=config.loss,
        )
        return metrics

    def _run_steps(
        self,
        batch: Batch,
        config: DistillConfig,
        params: list[torch.nn.Parameter],
        remote_teacher: Sequence[TeacherTopKLists] | None,
    ) -> dict[str, float]:
        assert self._optimizer is not None
        teacher = None
        if remote_teacher is not None:
            teacher = remote_teacher_topk(remote_teacher, batch, device=self._device)
        base_logprobs = self._base_token_logprobs(batch) if config.kl_beta > 0 else None
        first: dict[str, float] = {}
        metrics: dict[str, float] = {}
        for step in range(config.steps):
            if teacher is None or config.teacher == "current":
                teacher = self._teacher_topk(batch, config)
            self._optimizer.zero_grad(set_to_none=True)
            loss, metrics = self._loss(batch, teacher, config, base_logprobs)
            if not torch.isfinite(loss):
                self._invalidate()
                raise NonFiniteUpdate(f"step {step + 1}: the loss is {loss.item()}; refused")
            loss.backward()
            norm = torch.nn.utils.clip_grad_norm_(params, config.max_grad_norm)
            if not torch.isfinite(norm):
                self._invalidate()
                raise NonFiniteUpdate(
                    f"step {step + 1}: the gradient norm is {norm.item()}; refused"
                )
            self._optimizer.step()
            forget_weight_copies(self._peft)
            metrics["grad_norm"] = float(norm)
            if step == 0:
                first = dict(metrics)
        metrics["first_distill_loss"] = first.get("distill_loss", metrics["distill_loss"])
        return metrics

    def _invalidate(self) -> None:
        # Weights in memory may be half-updated: reload from disk next time.
        self._loaded = None
        self._optimizer = None

    def _hidden(self, ids: torch.Tensor, attention: torch.Tensor) -> torch.Tensor:
        base = self._peft.get_base_model()
        backbone = getattr(base, base.base_model_prefix)
        with autocast_context(self._device, self.autocast.enabled):
            return backbone(input_ids=ids, attention_mask=attention).last_hidden_state

    def _lm_head(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The frozen output projection's weight ``[V, D]`` and bias in the head's dtype.

        Float32, or bfloat16 under autocast, where ``load_model`` already holds it in
        bfloat16 (the log-softmax after it is float32 either way).
        """
        dtype = torch.bfloat16 if self.autocast.enabled else torch.float32
        head = self._peft.get_base_model().get_output_embeddings()
        bias = getattr(head, "bias", None)
        return head.weight.detach().to(dtype), bias.detach().to(dtype) if bias is not None else None

    def _teacher_topk(self, batch: Batch, config: DistillConfig) -> sdpo.TeacherTopK:
        frozen = config.teacher == "base"
        context = self._peft.disable_adapter() if frozen else contextlib.nullcontext()
        weight, bias = self._lm_head()
        with torch.no_grad(), context:
            hidden = self._hidden(batch.teacher_ids, batch.teacher_attention)
            picked = batch.gather(hidden, batch.teacher_positions)
            return sdpo.teacher_topk_from_hidden(
                picked.to(weight.dtype),
                weight,
                config.top_k,
                sampled_ids=batch.response_ids,
                chunk_size=config.chunk_size,
                lm_head_bias=bias,
            )

    def _base_token_logprobs(self, batch: Batch) -> torch.Tensor:
        weight, bias = self._lm_head()
        with torch.no_grad(), self._peft.disable_adapter():
            hidden = batch.gather(
                self._hidden(batch.student_ids, batch.student_attention), batch.student_positions
            )
            logits = torch.nn.functional.linear(hidden.to(weight.dtype), weight, bias)
            logprobs = torch.log_softmax(logits, dim=-1, dtype=torch.float32)
            return logprobs.gather(-1, batch.response_ids[..., None])[..., 0]

    def _loss(
        self,
        batch: Batch,
        teacher: sdpo.TeacherTopK,
        config: DistillConfig,
        base_logprobs: torch.Tensor | None,
    ) -> tuple[torch.Tensor, dict[str, float]]:
        weight, bias = self._lm_head()
        hidden = self._hidden(batch.student_ids, batch.student_attention)
        picked = batch.gather(hidden, batch.student_positions)
        return sdpo.sdpo_loss_from_hidden(
            picked.to(weight.dtype),
            weight,
            teacher,
            batch.response_ids,
            batch.response_mask,
            chunk_size=config.chunk_size,
            lm_head_bias=bias,
            alpha=config.alpha,
            add_tail=config.add_tail,
            loss=config.loss,
            old_logprobs=batch.old_logprobs,
            is_clip=config.is_clip,
            base_token_logprobs=base_logprobs,
            kl_beta=config.kl_beta,
        )

    def on_published(self, version: AdapterVersion) -> None:
        """Keep the in-memory weights as ``version`` if they are the last update's."""
        with self._lock:
            if self._pending is not None and self._pending[0] == version.adapter_id:
                self._loaded = (version.adapter_id, version.version)
            self._pending = None

    def on_deleted(self, versions: Sequence[AdapterVersion]) -> None:
        """Nothing to do: a local version lives only in the store."""

    def close(self) -> None:
        """Drop the model and optimizer state."""
        with self._lock:
            self._peft = None
            self._base = None
            self._slots.clear()
            self._invalidate()
