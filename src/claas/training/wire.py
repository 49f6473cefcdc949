"""Plain-data forms of training-engine arguments, for engines that run elsewhere.

A remote worker (the Modal GPU class) receives dicts, lists, strings and
numbers only, so the worker side needs nothing but ``claas`` to rebuild the
objects, and a version's files travel as ``{file name: bytes}``. Torch-free.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs

from claas.errors import InvalidRequest
from claas.storage._manifest import MANIFEST
from claas.teacher import DistillSample
from claas.types import AdapterVersion, DistillConfig, LoraSpec, TeacherTopKLists

__all__ = [
    "distill_request",
    "lora_from_dict",
    "read_files",
    "unpack_distill_request",
    "version_from_dict",
    "version_to_dict",
    "write_files",
]


def _sample_to_dict(sample: DistillSample) -> dict[str, Any]:
    data = attrs.asdict(sample)
    for key in ("student_ids", "teacher_ids", "response_ids"):
        data[key] = list(data[key])
    if data["old_logprobs"] is not None:
        data["old_logprobs"] = list(data["old_logprobs"])
    return data


def _sample_from_dict(data: Mapping[str, Any]) -> DistillSample:
    old = data.get("old_logprobs")
    return DistillSample(
        student_ids=tuple(int(i) for i in data["student_ids"]),
        teacher_ids=tuple(int(i) for i in data["teacher_ids"]),
        student_prompt_len=int(data["student_prompt_len"]),
        teacher_prompt_len=int(data["teacher_prompt_len"]),
        response_ids=tuple(int(i) for i in data["response_ids"]),
        old_logprobs=None if old is None else tuple(float(x) for x in old),
        feedback=str(data["feedback"]),
    )


def version_to_dict(version: AdapterVersion) -> dict[str, Any]:
    """An adapter version as plain data (its ``path`` is only meaningful locally)."""
    data = attrs.asdict(version)
    data["feedback_ids"] = list(version.feedback_ids)
    data["lora"] = dict(version.lora)
    data["metrics"] = dict(version.metrics)
    data["distill_config"] = (
        None if version.distill_config is None else dict(version.distill_config)
    )
    return data


def version_from_dict(data: Mapping[str, Any], *, path: Path) -> AdapterVersion:
    """Rebuild a version whose files now live in ``path``."""
    fields = {f.name for f in attrs.fields(AdapterVersion)}
    values = {k: v for k, v in data.items() if k in fields and k != "path"}
    values["feedback_ids"] = tuple(values.get("feedback_ids") or ())
    return AdapterVersion(**values, path=str(path))


def _teacher_to_dict(teacher: TeacherTopKLists) -> dict[str, Any]:
    return {
        "ids": [list(row) for row in teacher.ids],
        "logprobs": [list(row) for row in teacher.logprobs],
        "token_logprobs": list(teacher.token_logprobs),
    }


def _teacher_from_dict(data: Mapping[str, Any]) -> TeacherTopKLists:
    return TeacherTopKLists(
        ids=tuple(tuple(int(i) for i in row) for row in data["ids"]),
        logprobs=tuple(tuple(float(x) for x in row) for row in data["logprobs"]),
        token_logprobs=tuple(float(x) for x in data["token_logprobs"]),
    )


def distill_request(
    samples: Sequence[DistillSample],
    *,
    parent: AdapterVersion,
    config: DistillConfig,
    remote_teacher: Sequence[TeacherTopKLists] | None = None,
) -> dict[str, Any]:
    """The arguments of ``TrainingEngine.distill`` (all but ``out_dir``) as plain data."""
    return {
        "samples": [_sample_to_dict(s) for s in samples],
        "parent": version_to_dict(parent),
        "config": config.to_dict(),
        "remote_teacher": None
        if remote_teacher is None
        else [_teacher_to_dict(t) for t in remote_teacher],
    }


def unpack_distill_request(
    request: Mapping[str, Any], *, parent_path: Path
) -> tuple[list[DistillSample], AdapterVersion, DistillConfig, list[TeacherTopKLists] | None]:
    """Rebuild ``(samples, parent, config, remote_teacher)`` of a request.

    The parent's files are in ``parent_path``.

    Raises:
        InvalidRequest: If the request lacks a field.
        InvalidConfig: If the config is invalid.
    """
    try:
        samples = [_sample_from_dict(s) for s in request["samples"]]
        parent = version_from_dict(request["parent"], path=parent_path)
        config = DistillConfig.from_dict(request["config"])
        teachers = request.get("remote_teacher")
    except (KeyError, TypeError) as exc:
        raise InvalidRequest(f"malformed distill request: {exc!r}") from exc
    remote = None if teachers is None else [_teacher_from_dict(t) for t in teachers]
    return samples, parent, config, remote


def lora_from_dict(data: Mapping[str, Any]) -> LoraSpec:
    """A :class:`LoraSpec` from :meth:`LoraSpec.to_dict` output."""
    return LoraSpec(**dict(data))


def read_files(directory: Path, *, skip: Sequence[str] = ()) -> dict[str, bytes]:
    """The files of a version directory (not its manifest, nor ``skip``) as bytes."""
    excluded = {MANIFEST, *skip}
    return {
        p.name: p.read_bytes()
        for p in sorted(Path(directory).iterdir())
        if p.is_file() and p.name not in excluded
    }


def write_files(files: Mapping[str, bytes], directory: Path) -> None:
    """Write ``{name: bytes}`` into ``directory``; names must be plain file names.

    Raises:
        InvalidRequest: On a name with a path separator, or the manifest's name.
    """
    directory.mkdir(parents=True, exist_ok=True)
    for name, payload in files.items():
        if not name or name in (".", "..", MANIFEST) or "/" in name or "\\" in name:
            raise InvalidRequest(f"refusing to write a version file named {name!r}")
        (directory / name).write_bytes(payload)
