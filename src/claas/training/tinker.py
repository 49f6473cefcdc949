"""The Tinker training engine: SDPO updates on Tinker's hosted LoRA training.

Each adapter lineage is a Tinker LoRA training client. An update restores the
parent version's training state (weights + AdamW moments) on the service, or
reuses the client that still holds it, scores the teacher with a Tinker
sampling client (``topk_prompt_logprobs``), runs ``config.steps`` steps of the
chosen loss variant (:mod:`claas.training._tinker_loss`), and saves the new
training state and sampler weights. The version directory then holds only
``tinker.json`` with those service-side paths (:class:`~claas._tinker.TinkerCheckpoint`),
so a rollback simply points at an older version's paths. Deleted versions'
checkpoints are deleted on the service (:meth:`TinkerTrainer.on_deleted`).

The API key comes from ``TINKER_API_KEY`` (read by the SDK), never from settings.
"""

from __future__ import annotations

import math
import secrets
import threading
import time
import uuid
import warnings
from collections import OrderedDict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from claas._tinker import TinkerCheckpoint, import_tinker, sample_teacher, service_call
from claas.config import Settings
from claas.errors import InvalidConfig, NonFiniteUpdate, StorageError, TrainingError
from claas.sdpo import TeacherTopK
from claas.teacher import DistillSample
from claas.training import _tinker_loss as losses
from claas.training._batch import Batch, collate, remote_teacher_topk
from claas.training._tinker_index import CheckpointIndex
from claas.types import AdapterVersion, DistillConfig, DistillResult, LoraSpec, TeacherTopKLists

__all__ = ["TinkerTrainer"]

# torch.optim.AdamW's default, which the local engine uses; Tinker's own default differs.
_ADAM_EPS = 1e-8


def _client_key(checkpoint: TinkerCheckpoint) -> str:
    """Names the weights a training client holds: a saved state, or a seeded fresh LoRA."""
    if checkpoint.state_path is not None:
        return checkpoint.state_path
    flags = f"{checkpoint.train_attn:d}{checkpoint.train_mlp:d}{checkpoint.train_unembed:d}"
    return f"init:{checkpoint.base_model}:r{checkpoint.rank}:s{checkpoint.seed}:{flags}"


def _finite(metrics: dict[str, float]) -> bool:
    return all(math.isfinite(v) for v in metrics.values())


class TinkerTrainer:
    """Run SDPO updates on the Tinker training service.

    Args:
        settings: ``base_model`` is the Tinker model name (e.g. ``Qwen/Qwen3-8B``);
            ``tinker.loss`` picks the divergence variant; ``adapter_cache_size``
            bounds the training clients kept between updates; the checkpoint
            index lives under ``data_dir``.
        service: A ``tinker.ServiceClient`` (or a stand-in with its methods) to
            use instead of ``tinker.ServiceClient()``.
        rest: A ``tinker.RestClient`` (or stand-in) for deleting checkpoints.

    Raises:
        MissingDependency: If the ``tinker`` extra is not installed.
    """

    name = "tinker"

    def __init__(self, settings: Settings, *, service: Any = None, rest: Any = None) -> None:
        self._tinker = import_tinker()
        self.settings = settings
        self._service = service
        self._rest = rest
        self._owns_service = service is None
        self._clients: OrderedDict[str, Any] = OrderedDict()
        self._samplers: OrderedDict[str, Any] = OrderedDict()
        self._lock = threading.Lock()
        self.index = CheckpointIndex(settings.data_dir / "tinker")

    @property
    def service(self) -> Any:
        """The Tinker service client (created on first use; reads ``TINKER_API_KEY``)."""
        with self._lock:
            if self._service is None:
                with service_call("connecting"):
                    self._service = self._tinker.ServiceClient()
            return self._service

    @property
    def rest(self) -> Any:
        """The Tinker REST client used to delete checkpoints."""
        with self._lock:
            if self._rest is None:
                with service_call("connecting"):
                    self._rest = self._tinker.RestClient()
            return self._rest

    # -- clients ------------------------------------------------------------------------

    def _take_client(self, checkpoint: TinkerCheckpoint) -> Any:
        """A training client holding ``checkpoint``'s weights, owned by the caller until kept."""
        with self._lock:
            client = self._clients.pop(_client_key(checkpoint), None)
        if client is not None:
            return client
        with service_call("creating a training client"):
            if checkpoint.state_path is None:
                return self.service.create_lora_training_client(
                    base_model=checkpoint.base_model,
                    rank=checkpoint.rank,
                    seed=checkpoint.seed,
                    train_mlp=checkpoint.train_mlp,
                    train_attn=checkpoint.train_attn,
                    train_unembed=checkpoint.train_unembed,
                    user_metadata={"created_by": "claas"},
                ).result()
            return self.service.create_training_client_from_state_with_optimizer(
                checkpoint.state_path
            ).result()

    def _keep_client(self, checkpoint: TinkerCheckpoint, client: Any) -> None:
        with self._lock:
            self._clients[_client_key(checkpoint)] = client
            while len(self._clients) > self.settings.adapter_cache_size:
                self._clients.popitem(last=False)

    def _sampler(self, checkpoint: TinkerCheckpoint, *, current: bool) -> Any:
        """The base model's sampler, or (``current``) the one of the checkpoint's weights."""
        path = checkpoint.sampler_path if current else None
        key = path or f"base:{checkpoint.base_model}"
        with self._lock:
            if key in self._samplers:
                self._samplers.move_to_end(key)
                return self._samplers[key]
        with service_call("creating a sampling client"):
            if path is None:
                sampler = self.service.create_sampling_client(
                    base_model=checkpoint.base_model
                ).result()
            else:
                sampler = self.service.create_sampling_client(model_path=path).result()
        with self._lock:
            self._samplers[key] = sampler
            while len(self._samplers) > self.settings.adapter_cache_size:
                self._samplers.popitem(last=False)
        return sampler

    # -- the engine protocol ------------------------------------------------------------

    def init_adapter(self, lora: LoraSpec, out_dir: Path) -> None:
        """Create a seeded LoRA training client and record version 0 (no checkpoint yet).

        Tinker sets the LoRA scale itself and places LoRA on whole layer kinds,
        so ``alpha``, ``dropout`` and the exact module list are not sent.

        Raises:
            InvalidConfig: If no target module is an attention, MLP or output projection.
            BackendUnavailable: If the service cannot be reached.
            TrainingError: If the service refuses the model or rank.
        """
        checkpoint = TinkerCheckpoint.for_modules(
            self.settings.base_model, lora.rank, secrets.randbelow(2**31), lora.target_modules
        )
        if not (checkpoint.train_attn or checkpoint.train_mlp or checkpoint.train_unembed):
            raise InvalidConfig(
                f"LoraSpec.target_modules={list(lora.target_modules)!r} is invalid for Tinker: "
                "name attention (q/k/v/o_proj), MLP (gate/up/down_proj) or lm_head modules"
            )
        # Creating the client now checks model and rank, and the first update reuses it.
        self._keep_client(checkpoint, self._take_client(checkpoint))
        checkpoint.write(out_dir)

    def distill(
        self,
        samples: Sequence[DistillSample],
        *,
        parent: AdapterVersion,
        config: DistillConfig,
        out_dir: Path,
        remote_teacher: Sequence[TeacherTopKLists] | None = None,
    ) -> DistillResult:
        """Run ``config.steps`` SDPO steps on Tinker from ``parent``; record the result.

        Raises:
            NonFiniteUpdate: A step's loss was not finite; nothing is saved.
            TrainingError: The update cannot be computed or the service refused it.
            BackendUnavailable: The service cannot be reached.
            InvalidConfig: ``tinker.loss='cross_entropy'`` with ``alpha != 0``.
        """
        if not samples:
            raise TrainingError("an update needs at least one sample")
        parent_ckpt = TinkerCheckpoint.read(Path(parent.path))
        if parent_ckpt.base_model != self.settings.base_model:
            raise TrainingError(
                f"{parent.ref} was trained on {parent_ckpt.base_model!r}, but "
                f"Settings.base_model is {self.settings.base_model!r}"
            )
        variant = losses.select_variant(config, self.settings.tinker.loss)
        batch = collate(samples, device="cpu")
        teacher = remote_teacher_topk(
            self._teacher(samples, parent_ckpt, config, remote_teacher), batch, device="cpu"
        )
        base = self._base_token_logprobs(samples, parent_ckpt) if config.kl_beta > 0 else None
        client = self._take_client(parent_ckpt)
        started = time.perf_counter()
        metrics = self._run_steps(client, variant, samples, batch, teacher, config, base)
        metrics["step_seconds"] = (time.perf_counter() - started) / config.steps
        metrics[f"variant_{variant}"] = 1.0
        child = self._save(client, parent, parent_ckpt, variant)
        child.write(out_dir)
        self._keep_client(child, client)
        tokens = int(metrics["tokens"])
        return DistillResult(metrics=metrics, steps=config.steps, tokens=tokens)

    def _teacher(
        self,
        samples: Sequence[DistillSample],
        checkpoint: TinkerCheckpoint,
        config: DistillConfig,
        remote: Sequence[TeacherTopKLists] | None,
    ) -> Sequence[TeacherTopKLists]:
        if remote is not None:
            return remote
        if config.teacher == "remote":
            raise TrainingError(
                "teacher='remote' needs teacher logprobs from the inference backend"
            )
        # 'current' is the parent's sampler: the teacher stays fixed over the update's steps.
        sampler = self._sampler(checkpoint, current=config.teacher == "current")
        with service_call("scoring the teacher"):
            return sample_teacher(sampler, samples, k=config.top_k)

    def _base_token_logprobs(
        self, samples: Sequence[DistillSample], checkpoint: TinkerCheckpoint
    ) -> torch.Tensor:
        """``[B, T]`` base-model logprobs of the sampled tokens (for the KL to base)."""
        types = self._tinker.types
        sampler = self._sampler(checkpoint, current=False)
        with service_call("scoring the base model"):
            futures = [
                sampler.compute_logprobs(types.ModelInput.from_ints(list(s.student_ids)))
                for s in samples
            ]
            rows = [torch.tensor([lp or 0.0 for lp in f.result()][1:]) for f in futures]
        return losses.stack_rows(rows, samples, fill=0.0)

    def _run_steps(
        self,
        client: Any,
        variant: str,
        samples: Sequence[DistillSample],
        batch: Batch,
        teacher: TeacherTopK,
        config: DistillConfig,
        base: torch.Tensor | None,
    ) -> dict[str, float]:
        types = self._tinker.types
        adam = types.AdamParams(
            learning_rate=config.learning_rate,
            beta1=config.adam_betas[0],
            beta2=config.adam_betas[1],
            eps=_ADAM_EPS,
            weight_decay=config.weight_decay,
            grad_clip_norm=config.max_grad_norm,
        )
        first: dict[str, float] = {}
        metrics: dict[str, float] = {}
        for step in range(config.steps):
            with service_call(f"step {step + 1} ({variant})"):
                metrics = self._step(client, variant, samples, batch, teacher, config, base)
                if not _finite(metrics):
                    # The client's gradients are now poisoned: it is dropped, never kept.
                    raise NonFiniteUpdate(
                        f"step {step + 1}: the loss is {metrics.get('loss')}; refused"
                    )
                optim = client.optim_step(adam).result()
            optim_metrics = dict(getattr(optim, "metrics", None) or {})
            if not _finite(optim_metrics):
                raise NonFiniteUpdate(f"step {step + 1}: the optimizer reported {optim_metrics}")
            metrics.update({f"optim/{k}": float(v) for k, v in optim_metrics.items()})
            if step == 0:
                first = dict(metrics)
        metrics["first_distill_loss"] = first["distill_loss"]
        return metrics

    def _step(
        self,
        client: Any,
        variant: str,
        samples: Sequence[DistillSample],
        batch: Batch,
        teacher: TeacherTopK,
        config: DistillConfig,
        base: torch.Tensor | None,
    ) -> dict[str, float]:
        """One forward/backward of ``variant``; returns the step's metrics."""
        types = self._tinker.types
        mask = batch.response_mask
        if variant == "topk_sdpo":
            seen: dict[str, float] = {}
            loss_fn = losses.sdpo_loss_fn(
                samples,
                teacher,
                mask,
                config=config,
                old_BT=batch.old_logprobs,
                base_BT=base,
                seen=seen,
            )
            data = losses.sdpo_datums(types, samples, teacher)
            client.forward_backward_custom(data, loss_fn).result()
            return seen
        if variant == "topk_cross_entropy":
            tokens = float(mask.sum())
            data = losses.cross_entropy_datums(types, samples, teacher, tokens)
            out = client.forward_backward(data, "cross_entropy").result()
            student = losses.stack_rows(_logprobs(out), samples, fill=0.0)
            return {**losses.topk_forward_kl(student, teacher.logprobs, mask), **_loss_sum(out)}
        current = _logprobs(client.forward(losses.plain_datums(types, samples), "cross_entropy"))
        assert teacher.token_logprobs is not None  # remote_teacher_topk always fills it
        adv, metrics = losses.advantages(
            losses.stack_rows(current, samples, fill=0.0),
            teacher.token_logprobs,
            mask,
            config=config,
            old_BT=batch.old_logprobs,
            base_BT=base,
        )
        data = losses.importance_datums(types, samples, current, adv)
        out = client.forward_backward(data, "importance_sampling").result()
        return {**metrics, **_loss_sum(out)}

    def _save(
        self,
        client: Any,
        parent: AdapterVersion,
        parent_ckpt: TinkerCheckpoint,
        variant: str,
    ) -> TinkerCheckpoint:
        """Save training state and sampler weights under a fresh name."""
        name = f"claas-{uuid.uuid4().hex[:20]}"
        labels = {"claas_adapter": parent.adapter_id, "claas_parent": str(parent.version)}
        with service_call("saving the update"):
            state = client.save_state(name, user_metadata=labels).result().path
            sampler = client.save_weights_for_sampler(name, user_metadata=labels).result().path
        return parent_ckpt.evolve(state_path=state, sampler_path=sampler, loss_variant=variant)

    def on_published(self, version: AdapterVersion) -> None:
        """Index the published version's checkpoints, so they can be deleted with it."""
        try:
            checkpoint = TinkerCheckpoint.read(Path(version.path))
        except (TrainingError, StorageError):
            return
        self.index.add(version, checkpoint)

    def on_deleted(self, versions: Sequence[AdapterVersion]) -> None:
        """Delete the service-side checkpoints of versions the store deleted.

        A checkpoint the service no longer has is skipped; one it fails to
        delete is reported with a warning (the store's deletion stands).
        """
        for version in versions:
            checkpoint = self.index.get(version) or _read_if_present(Path(version.path))
            if checkpoint is None:
                continue
            for path in checkpoint.paths:
                self._delete_checkpoint(path)
            with self._lock:
                self._clients.pop(_client_key(checkpoint), None)
                if checkpoint.sampler_path is not None:
                    self._samplers.pop(checkpoint.sampler_path, None)
            self.index.forget(version)

    def _delete_checkpoint(self, path: str) -> None:
        try:
            self.rest.delete_checkpoint_from_tinker_path(path).result()
        except self._tinker.NotFoundError:
            return
        except self._tinker.TinkerError as exc:
            warnings.warn(f"could not delete Tinker checkpoint {path}: {exc}", stacklevel=3)

    def close(self) -> None:
        """Forget cached clients and finish the session this engine opened."""
        with self._lock:
            self._clients.clear()
            self._samplers.clear()
            service, self._service = self._service, None
        if service is not None and self._owns_service:
            with service_call("closing the session"):
                service.close("success").result()


def _logprobs(output: Any) -> list[torch.Tensor]:
    """The per-datum ``logprobs`` outputs of a forward(_backward) result (or its future)."""
    result = output.result() if hasattr(output, "result") else output
    return [o["logprobs"].to_torch().float() for o in result.loss_fn_outputs]


def _loss_sum(output: Any) -> dict[str, float]:
    value = output.metrics.get("loss:sum")
    return {} if value is None else {"service_loss": float(value)}


def _read_if_present(directory: Path) -> TinkerCheckpoint | None:
    try:
        return TinkerCheckpoint.read(directory)
    except (TrainingError, StorageError):
        return None
