"""What the Tinker engine and backend share: the SDK import, error mapping, the
per-version checkpoint record and reading teacher logprobs from sampler responses.

Weights stay on the Tinker service. What the adapter store keeps of a version
is a small JSON record (``tinker.json``) of the service-side paths: the training
state (LoRA weights + AdamW moments) from ``save_state`` and the sampler weights
from ``save_weights_for_sampler``. Version 0 is a fresh LoRA adapter (B = 0, so
it equals the base model) identified by its initialization seed; it has no
service-side checkpoint and is sampled as the base model.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs

from claas.errors import (
    BackendUnavailable,
    ClaasError,
    StorageError,
    TrainingError,
    missing_extra,
)
from claas.types import TeacherTopKLists

__all__ = [
    "CHECKPOINT_FILE",
    "TinkerCheckpoint",
    "import_tinker",
    "sample_teacher",
    "service_call",
    "teacher_lists",
]

CHECKPOINT_FILE = "tinker.json"
_FORMAT_VERSION = 1
_ATTENTION = frozenset({"q_proj", "k_proj", "v_proj", "o_proj"})
_MLP = frozenset({"gate_proj", "up_proj", "down_proj"})


def import_tinker() -> Any:
    """The ``tinker`` SDK module.

    Raises:
        MissingDependency: If the ``tinker`` extra is not installed.
    """
    try:
        import tinker
    except ImportError as exc:
        raise missing_extra("tinker", "tinker") from exc
    return tinker


@contextlib.contextmanager
def service_call(what: str, failure: type[ClaasError] = TrainingError) -> Iterator[None]:
    """Turn the SDK's errors raised inside the block into CLaaS errors.

    Args:
        what: The operation, for the message (``"forward_backward"``).
        failure: The error for a request the service refused.

    Raises:
        BackendUnavailable: The service could not be reached, refused the key,
            or is overloaded.
        ClaasError: ``failure``, for any other error the service reported.
    """
    tinker = import_tinker()
    unavailable = (
        tinker.APIConnectionError,
        tinker.AuthenticationError,
        tinker.PermissionDeniedError,
        tinker.RateLimitError,
        tinker.InternalServerError,
    )
    try:
        yield
    except unavailable as exc:
        raise BackendUnavailable(f"Tinker {what}: {exc} (is TINKER_API_KEY set?)") from exc
    except tinker.TinkerError as exc:
        raise failure(f"Tinker {what} failed: {exc}") from exc


@attrs.frozen(kw_only=True)
class TinkerCheckpoint:
    """What the adapter store keeps of a Tinker-trained version.

    Attributes:
        base_model: The service's base model name (``Qwen/Qwen3-8B``).
        rank: LoRA rank.
        seed: Seed of the LoRA initialization (version 0's weights).
        train_attn: Whether the attention projections carry LoRA weights.
        train_mlp: Whether the MLP projections carry LoRA weights.
        train_unembed: Whether the output projection carries LoRA weights.
        state_path: ``tinker://`` path of weights + optimizer state; None for v0.
        sampler_path: ``tinker://`` path of the sampler weights; None for v0
            (sampled as the base model).
        loss_variant: The loss the update that made this version used.
    """

    base_model: str
    rank: int
    seed: int
    train_attn: bool = True
    train_mlp: bool = True
    train_unembed: bool = False
    state_path: str | None = None
    sampler_path: str | None = None
    loss_variant: str | None = None

    @classmethod
    def for_modules(
        cls, base_model: str, rank: int, seed: int, modules: Sequence[str]
    ) -> TinkerCheckpoint:
        """Version 0 for a LoRA on ``modules`` (projection names or ``lm_head``).

        Tinker chooses layers by kind, so any attention projection turns on all
        four, any MLP projection all three.
        """
        names = set(modules)
        return cls(
            base_model=base_model,
            rank=rank,
            seed=seed,
            train_attn=bool(names & _ATTENTION),
            train_mlp=bool(names & _MLP),
            train_unembed="lm_head" in names,
        )

    @property
    def paths(self) -> tuple[str, ...]:
        """The service-side checkpoints this version owns."""
        return tuple(p for p in (self.state_path, self.sampler_path) if p is not None)

    def evolve(self, **changes: Any) -> TinkerCheckpoint:
        """A copy with some fields changed."""
        return attrs.evolve(self, **changes)

    def write(self, directory: Path) -> Path:
        """Write ``tinker.json`` into ``directory`` and return its path."""
        directory.mkdir(parents=True, exist_ok=True)
        path = directory / CHECKPOINT_FILE
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        payload = {"format_version": _FORMAT_VERSION, **attrs.asdict(self)}
        tmp.write_text(json.dumps(payload, indent=2, sort_keys=True) + "\n", encoding="utf-8")
        os.replace(tmp, path)
        return path

    @classmethod
    def read(cls, directory: Path) -> TinkerCheckpoint:
        """Read the record a Tinker version keeps in ``directory``.

        Raises:
            TrainingError: If the version was not made by the Tinker engine.
            StorageError: If the record is damaged or from a newer claas.
        """
        path = Path(directory) / CHECKPOINT_FILE
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise TrainingError(
                f"{directory} has no {CHECKPOINT_FILE}: it was not trained by the Tinker engine"
            ) from None
        except ValueError as exc:
            raise StorageError(f"{path} is not valid JSON: {exc}") from exc
        version = data.pop("format_version", None) if isinstance(data, dict) else None
        if not isinstance(version, int) or version > _FORMAT_VERSION:
            raise StorageError(f"{path} has format_version {version!r}; this claas reads 1")
        known = {f.name for f in attrs.fields(cls)}
        try:
            return cls(**{k: v for k, v in data.items() if k in known})
        except TypeError as exc:
            raise StorageError(f"{path} lacks a field: {exc}") from exc


def teacher_lists(
    response: Any, *, prompt_len: int, response_ids: Sequence[int]
) -> TeacherTopKLists:
    """The teacher's top-K over the response positions of one scored sequence.

    Args:
        response: A ``tinker.types.SampleResponse`` for the teacher sequence
            (prompt + response ids), sampled with ``include_prompt_logprobs``
            and ``topk_prompt_logprobs=K``.
        prompt_len: Length of the teacher prompt ``Pt``; response token ``t``
            sits at sequence position ``Pt + t``.
        response_ids: The ``T`` response ids.

    Raises:
        TrainingError: If the response lacks logprobs at a response position.
    """
    topk = response.topk_prompt_logprobs
    token = response.prompt_logprobs
    if topk is None or token is None:
        raise TrainingError("the Tinker sampler returned no prompt logprobs for the teacher")
    positions = range(prompt_len, prompt_len + len(response_ids))
    if len(topk) < positions.stop or len(token) < positions.stop:
        raise TrainingError(
            f"the Tinker sampler scored {len(topk)} positions; the teacher needs {positions.stop}"
        )
    rows = [topk[p] for p in positions]
    token_logprobs = [token[p] for p in positions]
    if any(row is None or not row for row in rows) or any(lp is None for lp in token_logprobs):
        raise TrainingError("the Tinker sampler left a response position of the teacher unscored")
    return TeacherTopKLists(
        ids=tuple(tuple(int(i) for i, _ in row) for row in rows if row),
        logprobs=tuple(tuple(float(lp) for _, lp in row) for row in rows if row),
        token_logprobs=tuple(float(lp) for lp in token_logprobs if lp is not None),
    )


def sample_teacher(sampler: Any, samples: Sequence[Any], *, k: int) -> list[TeacherTopKLists]:
    """Score each sample's teacher sequence with ``sampler``: top-K and sampled-token logprobs.

    Args:
        sampler: A ``tinker.SamplingClient`` (base model or a version's sampler weights).
        samples: :class:`~claas.teacher.DistillSample` objects.
        k: Teacher tokens per position (``topk_prompt_logprobs``).

    Returns:
        One :class:`TeacherTopKLists` per sample, over its response positions.
    """
    types = import_tinker().types
    # One prefill per sequence; the single generated token is ignored.
    params = types.SamplingParams(max_tokens=1)
    futures = [
        sampler.sample(
            prompt=types.ModelInput.from_ints(list(sample.teacher_ids)),
            num_samples=1,
            sampling_params=params,
            include_prompt_logprobs=True,
            topk_prompt_logprobs=k,
        )
        for sample in samples
    ]
    return [
        teacher_lists(
            future.result(),
            prompt_len=sample.teacher_prompt_len,
            response_ids=sample.response_ids,
        )
        for future, sample in zip(futures, samples, strict=True)
    ]
