"""The Modal training engine: the client of the deployed ``claas-modal`` GPU worker.

The worker (``claas_modal.app.Worker``) keeps the base model loaded and runs
the local engine's update on a GPU. This client sends the update's arguments
as plain data (:mod:`claas.training.wire`) and writes the files the worker
returns into the version directory, so the store holds ordinary PEFT versions.

The worker keeps the versions it produced in a per-container cache and names
each with a key, which this client stores beside the version
(``modal_worker.json``). An update names its parent by that key; a worker that
does not hold it (another container, or a version trained elsewhere) answers
``missing`` and the parent's files are sent instead.

Modal credentials come from ``MODAL_TOKEN_ID`` / ``MODAL_TOKEN_SECRET`` or the
Modal config file, as the ``modal`` package reads them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from claas.config import Settings
from claas.errors import BackendUnavailable, TrainingError, missing_extra
from claas.teacher import DistillSample
from claas.training import wire
from claas.types import AdapterVersion, DistillConfig, DistillResult, LoraSpec, TeacherTopKLists

__all__ = ["KEY_FILE", "WORKER_CLASS", "ModalTrainer"]

WORKER_CLASS = "Worker"
KEY_FILE = "modal_worker.json"


def _import_modal() -> Any:
    try:
        import modal
    except ImportError as exc:
        raise missing_extra("modal", "modal") from exc
    return modal


class ModalTrainer:
    """Run SDPO updates on the deployed Modal GPU worker.

    Args:
        settings: ``modal.app`` names the deployed app.
        worker: An instance of the worker class to call instead of looking up
            ``Worker`` in the deployed app; its methods are called through
            ``.remote(...)``.

    Raises:
        MissingDependency: If the ``modal`` extra is not installed (on first use).
    """

    name = "modal"

    def __init__(self, settings: Settings, *, worker: Any = None) -> None:
        self.settings = settings
        self._worker = worker

    @property
    def worker(self) -> Any:
        """The deployed worker (looked up by app name on first use)."""
        if self._worker is None:
            modal = _import_modal()
            with _modal_errors(modal, "looking up the worker"):
                cls = modal.Cls.from_name(self.settings.modal.app, WORKER_CLASS)
                self._worker = cls()
        return self._worker

    def _call(self, method: str, **kwargs: Any) -> dict[str, Any]:
        modal = _import_modal()
        with _modal_errors(modal, method):
            reply = getattr(self.worker, method).remote(**kwargs)
        if not isinstance(reply, dict):
            raise TrainingError(f"the Modal worker's {method} returned {type(reply).__name__}")
        return reply

    def init_adapter(self, lora: LoraSpec, out_dir: Path) -> None:
        """Have the worker write a fresh adapter and store its files in ``out_dir``."""
        _store(self._call("init_adapter", lora=lora.to_dict()), out_dir)

    def distill(
        self,
        samples: Sequence[DistillSample],
        *,
        parent: AdapterVersion,
        config: DistillConfig,
        out_dir: Path,
        remote_teacher: Sequence[TeacherTopKLists] | None = None,
    ) -> DistillResult:
        """Run the update on the worker from ``parent``; store the new version's files.

        Raises:
            NonFiniteUpdate: The worker refused a non-finite step (nothing is written).
            TrainingError: The update could not be computed.
            BackendUnavailable: The app is not deployed or Modal cannot be reached.
        """
        if not samples:
            raise TrainingError("an update needs at least one sample")
        request = wire.distill_request(
            samples, parent=parent, config=config, remote_teacher=remote_teacher
        )
        reply: dict[str, Any] = {"missing": True}
        key = _worker_key(Path(parent.path))
        if key is not None:
            reply = self._call("distill", request=request, parent_key=key)
        if reply.get("missing"):
            files = wire.read_files(Path(parent.path), skip=(KEY_FILE,))
            reply = self._call("distill", request=request, parent_files=files)
        _store(reply, out_dir)
        try:
            metrics = {str(k): float(v) for k, v in reply["metrics"].items()}
            return DistillResult(
                metrics=metrics, steps=int(reply["steps"]), tokens=int(reply["tokens"])
            )
        except (KeyError, TypeError, ValueError) as exc:
            raise TrainingError(f"the Modal worker's reply lacks {exc}") from exc

    def on_published(self, version: AdapterVersion) -> None:
        """Nothing to do: the worker reloads each parent from its cache or files."""

    def on_deleted(self, versions: Sequence[AdapterVersion]) -> None:
        """Nothing to do: the worker's cache is per container and bounded."""

    def close(self) -> None:
        """Forget the worker handle."""
        self._worker = None


@contextmanager
def _modal_errors(modal: Any, what: str) -> Iterator[None]:
    """Modal's own errors as CLaaS errors; errors raised by the worker's code pass through."""
    unreachable = (
        modal.exception.NotFoundError,
        modal.exception.AuthError,
        modal.exception.ConnectionError,
    )
    try:
        yield
    except unreachable as exc:
        raise BackendUnavailable(
            f"Modal {what}: {exc} (is the claas app deployed and a Modal token set?)"
        ) from exc
    except modal.exception.Error as exc:
        raise TrainingError(f"Modal {what} failed: {exc}") from exc


def _worker_key(directory: Path) -> str | None:
    try:
        data = json.loads((directory / KEY_FILE).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    key = data.get("key") if isinstance(data, dict) else None
    return key if isinstance(key, str) else None


def _store(reply: dict[str, Any], out_dir: Path) -> None:
    """Write the worker's files and its key for them into ``out_dir``."""
    files = reply.get("files")
    key = reply.get("key")
    if not isinstance(files, dict) or not files or not isinstance(key, str):
        raise TrainingError("the Modal worker's reply has no files")
    wire.write_files(files, out_dir)
    (out_dir / KEY_FILE).write_text(json.dumps({"key": key}) + "\n", encoding="utf-8")
