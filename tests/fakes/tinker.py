"""An in-process FAKE of the Tinker service, for tests without an API key.

It implements the part of ``tinker.ServiceClient`` / ``TrainingClient`` /
``SamplingClient`` / ``RestClient`` the CLaaS engine and backend use, accepts
and returns the real SDK types (``tinker.types.Datum``, ``ModelInput``,
``TensorData``, ``AdamParams``, ``SampleResponse`` ...) and checks them the
way the service would: a datum whose ``loss_fn_inputs`` keys, dtypes or shapes
do not fit the chosen loss is refused with the SDK's ``BadRequestError``.
Numbers come from the real embedded model with peft LoRA layers on the CPU:
training clients are LoRA slots with their own AdamW, checkpoints are copies
of slot weights (and optimizer state) under ``tinker://`` paths.

Futures are completed ``concurrent.futures.Future`` objects; errors surface
from ``.result()`` as with the SDK.
"""

from __future__ import annotations

import copy
import uuid
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

import numpy as np
import tinker
import torch
from tinker import types
from tinker.types.topk_logprobs import MASK_LOGPROB, TopkLogprobs

from claas import SamplingParams
from claas.inference._decode import decode_tokens
from fakes.tinker_model import (
    Checkpoint,
    FakeTinkerModel,
    LoraShape,
    bad_request,
    check_datum,
    conflict,
    gather,
    not_found,
)

__all__ = [
    "FakeRestClient",
    "FakeSamplingClient",
    "FakeTinkerModel",
    "FakeTinkerService",
    "FakeTrainingClient",
    "bad_request",
    "not_found",
]


def _future(fn: Callable[[], Any]) -> Future[Any]:
    future: Future[Any] = Future()
    try:
        future.set_result(fn())
    except (tinker.TinkerError, ValueError, TypeError) as exc:
        future.set_exception(exc)
    return future


class FakeTrainingClient:
    """A LoRA training run: forward(_backward), optim_step, save_state, save_weights_for_sampler."""

    def __init__(
        self,
        service: FakeTinkerService,
        shape: LoraShape,
        checkpoint: Checkpoint | None = None,
        *,
        with_optimizer: bool = True,
    ) -> None:
        self.service = service
        self.shape = shape
        self.model_id = f"run-{uuid.uuid4().hex[:12]}"
        self.slot = service.model.new_slot(shape, checkpoint.weights if checkpoint else None)
        params = [p for _, p in service.model.parameters(self.slot)]
        self.optimizer = torch.optim.AdamW(params)
        if checkpoint is not None and checkpoint.optimizer is not None and with_optimizer:
            self.optimizer.load_state_dict(copy.deepcopy(checkpoint.optimizer))
        self.steps = 0

    def _outputs(
        self, data: list[Any], loss_fn: str, *, backward: bool
    ) -> types.ForwardBackwardOutput:
        model = self.service.model
        outputs, total = [], 0.0
        with model.lock:
            checked = [check_datum(d, loss_fn, model.vocab) for d in data]
            for datum, inputs in zip(data, checked, strict=True):
                logprobs = model.logprobs(self.slot, datum.model_input.to_ints(), grad=backward)
                picked = gather(logprobs, inputs["target_tokens"])
                if loss_fn == "cross_entropy":
                    loss = -(picked * inputs["weights"]).sum()
                else:
                    ratio = torch.exp(picked - inputs["logprobs"])
                    loss = -(ratio * inputs["advantages"]).sum()
                if backward:
                    loss.backward()
                total += float(loss.detach())
                outputs.append({"logprobs": types.TensorData.from_torch(picked.detach().float())})
        return types.ForwardBackwardOutput(
            loss_fn_output_type="ArrayRecord", loss_fn_outputs=outputs, metrics={"loss:sum": total}
        )

    def forward(self, data: list[Any], loss_fn: str, loss_fn_config: Any = None) -> Future[Any]:
        return _future(lambda: self._outputs(data, loss_fn, backward=False))

    def forward_backward(
        self, data: list[Any], loss_fn: str, loss_fn_config: Any = None
    ) -> Future[Any]:
        return _future(lambda: self._outputs(data, loss_fn, backward=True))

    def forward_backward_custom(self, data: list[Any], loss_fn: Callable[..., Any]) -> Future[Any]:
        """As the SDK does it: forward with cross_entropy, the loss on detached logprobs,
        then a cross_entropy backward with weights = -dLoss/dlogprobs."""

        def run() -> types.ForwardBackwardOutput:
            forward_data = []
            for datum in data:
                targets = datum.loss_fn_inputs.get("target_tokens")
                if targets is None:
                    raise ValueError("target_tokens must be provided when using cross_entropy")
                weights = datum.loss_fn_inputs.get("weights")
                if weights is None:  # what the SDK sends: zeros of the targets' flat length
                    weights = types.TensorData(
                        data=[0.0] * len(targets.data), dtype="float32", shape=targets.shape
                    )
                inputs = {"target_tokens": targets, "weights": weights}
                forward_data.append(
                    types.Datum(model_input=datum.model_input, loss_fn_inputs=inputs)
                )
            first = self._outputs(forward_data, "cross_entropy", backward=False)
            leaves = [
                out["logprobs"].to_torch().float().requires_grad_(True)
                for out in first.loss_fn_outputs
            ]
            loss, metrics = loss_fn(data, leaves)
            loss.backward()
            if any(leaf.grad is None for leaf in leaves):
                raise ValueError("No gradient computed for logprob tensor")
            backward_data = [
                types.Datum(
                    model_input=d.model_input,
                    loss_fn_inputs={
                        "target_tokens": d.loss_fn_inputs["target_tokens"],
                        "weights": types.TensorData.from_torch(-leaf.grad),
                    },
                )
                for d, leaf in zip(forward_data, leaves, strict=True)
            ]
            out = self._outputs(backward_data, "cross_entropy", backward=True)
            return types.ForwardBackwardOutput(
                loss_fn_output_type=out.loss_fn_output_type,
                loss_fn_outputs=out.loss_fn_outputs,
                metrics={**out.metrics, **metrics, "loss:sum": float(loss.detach())},
            )

        return _future(run)

    def optim_step(self, optim_params: Any = None, *, adam_params: Any = None) -> Future[Any]:
        params = optim_params if optim_params is not None else adam_params
        if not isinstance(params, types.AdamParams):
            raise TypeError("Expected AdamParams or OptimParamsBase")

        def run() -> types.OptimStepResponse:
            with self.service.model.lock:
                for group in self.optimizer.param_groups:
                    group.update(
                        lr=params.learning_rate,
                        betas=(params.beta1, params.beta2),
                        eps=params.eps,
                        weight_decay=params.weight_decay,
                    )
                if params.grad_clip_norm > 0:
                    torch.nn.utils.clip_grad_norm_(
                        [p for g in self.optimizer.param_groups for p in g["params"]],
                        params.grad_clip_norm,
                    )
                self.optimizer.step()
                self.optimizer.zero_grad(set_to_none=True)
                self.steps += 1
            return types.OptimStepResponse(metrics=None)

        return _future(run)

    def _save(self, kind: str, name: str, user_metadata: dict[str, str] | None) -> Checkpoint:
        if not name or "/" in name:
            raise bad_request(f"invalid checkpoint name {name!r}")
        with self.service.model.lock:
            optimizer = copy.deepcopy(self.optimizer.state_dict()) if kind == "weights" else None
            checkpoint = Checkpoint(
                kind=kind,
                run_id=self.model_id,
                name=name,
                shape=self.shape,
                weights=self.service.model.weights(self.slot),
                optimizer=optimizer,
                user_metadata=user_metadata,
            )
        return self.service.store(checkpoint)

    def save_state(
        self,
        name: str,
        ttl_seconds: int | None = None,
        overwrite: bool = False,
        user_metadata: dict[str, str] | None = None,
    ) -> Future[Any]:
        return _future(
            lambda: types.SaveWeightsResponse(path=self._save("weights", name, user_metadata).path)
        )

    def save_weights_for_sampler(
        self, name: str, ttl_seconds: int | None = None, user_metadata: dict[str, str] | None = None
    ) -> Future[Any]:
        return _future(
            lambda: types.SaveWeightsForSamplerResponse(
                path=self._save("sampler_weights", name, user_metadata).path
            )
        )


class FakeSamplingClient:
    """Samples and scores with the base model or a sampler checkpoint's weights."""

    def __init__(self, service: FakeTinkerService, checkpoint: Checkpoint | None) -> None:
        self.service = service
        self.slot = (
            None
            if checkpoint is None
            else service.model.new_slot(checkpoint.shape, checkpoint.weights)
        )

    def get_base_model(self) -> str:
        return self.service.base_model

    def _prompt_logprobs(self, tokens: list[int], k: int) -> tuple[np.ndarray, TopkLogprobs | None]:
        model = self.service.model
        logprobs = model.logprobs(self.slot, tokens, grad=False)  # [P, V], row i predicts i+1
        actual = np.full(len(tokens), np.nan, dtype=np.float32)
        ids = torch.tensor(tokens[1:])
        actual[1:] = logprobs[:-1].gather(-1, ids[:, None])[:, 0].numpy()
        if k <= 0:
            return actual, None
        values, top_ids = logprobs[:-1].topk(min(k, model.vocab), dim=-1)
        top_lp = np.full((len(tokens), k), MASK_LOGPROB, dtype=np.float32)
        top_id = np.zeros((len(tokens), k), dtype=np.int32)
        top_lp[1:, : values.shape[1]] = values.numpy()
        top_id[1:, : values.shape[1]] = top_ids.numpy()
        return actual, TopkLogprobs(token_ids=top_id, logprobs=top_lp)

    def _sequence(self, tokens: list[int], params: types.SamplingParams, seed: int | None) -> Any:
        model = self.service.model
        if params.max_tokens is None:
            raise bad_request("sampling_params.max_tokens is required")
        stop = params.stop
        if isinstance(stop, str):
            stop = [stop]
        sampling = SamplingParams(
            max_tokens=params.max_tokens,
            temperature=params.temperature,
            top_p=params.top_p,
            top_k=max(params.top_k, 0),
            seed=seed,
            stop=tuple(s for s in (stop or ()) if isinstance(s, str)),
        )
        net = model.model if model.peft is None else model.peft
        if self.slot is not None:
            model.peft.set_adapter(self.slot)
        context = model.peft.disable_adapter() if self.slot is None and model.peft else None
        deltas = decode_tokens(
            net, model.tokenizer, tokens, sampling, eos_ids=model.eos, device="cpu"
        )
        if context is None:
            *_, last = deltas
        else:
            with context:
                *_, last = deltas
        generation = last.generation
        return types.SampledSequence(
            stop_reason="stop" if generation.finish_reason == "stop" else "length",
            sequence_id=uuid.uuid4().hex,
            tokens_np=np.asarray(generation.response_ids, dtype=np.int32),
            logprobs_np=np.asarray(generation.response_logprobs, dtype=np.float32),
        )

    def sample(
        self,
        prompt: Any,
        num_samples: int,
        sampling_params: Any,
        include_prompt_logprobs: bool = False,
        topk_prompt_logprobs: int = 0,
        topk_sample_logprobs: int = 0,
        **unused: Any,
    ) -> Future[Any]:
        def run() -> types.SampleResponse:
            if not isinstance(prompt, types.ModelInput):
                raise bad_request(f"prompt must be a ModelInput, got {type(prompt)}")
            if not isinstance(sampling_params, types.SamplingParams):
                raise bad_request(
                    f"sampling_params must be SamplingParams, got {type(sampling_params)}"
                )
            if num_samples < 1 or topk_prompt_logprobs < 0:
                raise bad_request("num_samples must be >= 1 and topk_prompt_logprobs >= 0")
            tokens = prompt.to_ints()
            with self.service.model.lock:
                actual, topk = None, None
                if include_prompt_logprobs or topk_prompt_logprobs:  # a forward pass of its own
                    actual, topk = self._prompt_logprobs(tokens, topk_prompt_logprobs)
                seed = sampling_params.seed
                sequences = [
                    self._sequence(tokens, sampling_params, None if seed is None else seed + i)
                    for i in range(num_samples)
                ]
            return types.SampleResponse(
                sequences=sequences,
                prompt_logprobs_np=actual if include_prompt_logprobs else None,
                topk_prompt_logprobs_np=topk,
            )

        return _future(run)

    def compute_logprobs(
        self, prompt: Any, prompt_logprobs_last_n: int | None = None
    ) -> Future[Any]:
        def run() -> list[float | None]:
            with self.service.model.lock:
                actual, _ = self._prompt_logprobs(prompt.to_ints(), 0)
            return [None if np.isnan(v) else float(v) for v in actual]

        return _future(run)


class FakeRestClient:
    """Lists and deletes the fake service's checkpoints."""

    def __init__(self, service: FakeTinkerService) -> None:
        self.service = service

    def delete_checkpoint_from_tinker_path(self, tinker_path: str) -> Future[Any]:
        def run() -> None:
            types.ParsedCheckpointTinkerPath.from_tinker_path(tinker_path)
            if self.service.checkpoints.pop(tinker_path, None) is None:
                raise not_found(f"no checkpoint {tinker_path}")
            self.service.deleted.append(tinker_path)

        return _future(run)

    def list_checkpoints(self, training_run_id: str) -> Future[Any]:
        def run() -> types.CheckpointsListResponse:
            found = [
                types.Checkpoint(
                    checkpoint_id=f"{c.kind}/{c.name}",
                    checkpoint_type="training" if c.kind == "weights" else "sampler",
                    time=c.created,
                    tinker_path=c.path,
                    user_metadata=c.user_metadata,
                )
                for c in self.service.checkpoints.values()
                if c.run_id == training_run_id
            ]
            return types.CheckpointsListResponse(checkpoints=found)

        return _future(run)


class FakeTinkerService:
    """Stands in for ``tinker.ServiceClient`` (and, via ``rest``, ``tinker.RestClient``).

    Args:
        model: The shared :class:`FakeTinkerModel`.
    """

    def __init__(self, model: FakeTinkerModel) -> None:
        self.model = model
        self.base_model = model.base_model
        self.checkpoints: dict[str, Checkpoint] = {}
        self.deleted: list[str] = []
        self.training_clients: list[FakeTrainingClient] = []
        self.sampling_clients: list[FakeSamplingClient] = []
        self.rest = FakeRestClient(self)
        self.closed = False

    def store(self, checkpoint: Checkpoint) -> Checkpoint:
        if checkpoint.path in self.checkpoints:
            raise conflict(f"checkpoint {checkpoint.path} exists")
        self.checkpoints[checkpoint.path] = checkpoint
        return checkpoint

    def _checkpoint(self, path: str, kind: str) -> Checkpoint:
        parsed = types.ParsedCheckpointTinkerPath.from_tinker_path(path)
        found = self.checkpoints.get(path)
        if found is None:
            raise not_found(f"no checkpoint {path}")
        if found.kind != kind:
            raise bad_request(f"{path} is a {parsed.checkpoint_type} checkpoint; {kind} is needed")
        return found

    def create_lora_training_client(
        self,
        base_model: str,
        rank: int = 32,
        seed: int | None = None,
        train_mlp: bool = True,
        train_attn: bool = True,
        train_unembed: bool = True,
        user_metadata: dict[str, str] | None = None,
        optimizer: Any = None,
    ) -> Future[Any]:
        def run() -> FakeTrainingClient:
            if base_model != self.base_model:
                raise bad_request(
                    f"base model {base_model!r} is not served (only {self.base_model!r})"
                )
            if not any((train_mlp, train_attn, train_unembed)):
                raise ValueError(
                    "At least one of train_mlp, train_attn, or train_unembed must be True"
                )
            shape = LoraShape(rank, seed, train_mlp, train_attn, train_unembed)
            client = FakeTrainingClient(self, shape)
            self.training_clients.append(client)
            return client

        return _future(run)

    def create_training_client_from_state_with_optimizer(self, path: str, **_: Any) -> Future[Any]:
        def run() -> FakeTrainingClient:
            checkpoint = self._checkpoint(path, "weights")
            client = FakeTrainingClient(self, checkpoint.shape, checkpoint)
            self.training_clients.append(client)
            return client

        return _future(run)

    def create_training_client_from_state(self, path: str, **_: Any) -> Future[Any]:
        def run() -> FakeTrainingClient:
            checkpoint = self._checkpoint(path, "weights")
            client = FakeTrainingClient(self, checkpoint.shape, checkpoint, with_optimizer=False)
            self.training_clients.append(client)
            return client

        return _future(run)

    def create_sampling_client(
        self, model_path: str | None = None, base_model: str | None = None, **_: Any
    ) -> Future[Any]:
        def run() -> FakeSamplingClient:
            if model_path is None and base_model is None:
                raise ValueError("Either model_path or base_model must be provided")
            if model_path is None and base_model != self.base_model:
                raise bad_request(f"base model {base_model!r} is not served")
            checkpoint = (
                None if model_path is None else self._checkpoint(model_path, "sampler_weights")
            )
            client = FakeSamplingClient(self, checkpoint)
            self.sampling_clients.append(client)
            return client

        return _future(run)

    def close(self, status: str, detail: str | None = None) -> Future[Any]:
        self.closed = True
        return _future(lambda: None)
