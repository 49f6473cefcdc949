"""The GPU worker's Python body, free of Modal decorators so it runs anywhere.

It holds one :class:`claas.training.local.LocalTrainer` with the base model
loaded once, and a bounded cache of the versions it wrote, each under a fresh
key. Arguments and results are plain data (:mod:`claas.training.wire`).
"""

from __future__ import annotations

import shutil
import tempfile
import threading
import uuid
from pathlib import Path
from typing import Any

from claas import Settings
from claas.errors import InvalidRequest
from claas.training import wire

__all__ = ["WorkerBody"]


class WorkerBody:
    """Run the local engine's init and update on request.

    Args:
        settings: Model, device and dtype of the worker.
        cache_dir: Where produced versions are kept between calls.
        max_cached: How many versions the cache keeps (oldest dropped first).
    """

    def __init__(self, settings: Settings, *, cache_dir: Path, max_cached: int = 8) -> None:
        from claas.models import load_model, resolve_device
        from claas.precision import autocast_choice
        from claas.training.local import LocalTrainer

        self.settings = settings
        self.cache_dir = Path(cache_dir)
        self.cache_dir.mkdir(parents=True, exist_ok=True)
        self.max_cached = max_cached
        device = resolve_device(settings.device)
        model = load_model(
            settings.base_model,
            models_dir=settings.models_dir,
            device=device,
            dtype=settings.dtype,
            autocast=autocast_choice(settings.autocast, device).enabled,
        )
        self.trainer = LocalTrainer(settings, model=model)
        # One update at a time: the trainer holds one set of LoRA weights in memory.
        self._lock = threading.Lock()

    def _entry(self, key: str) -> Path:
        if not key or not key.isalnum():
            raise InvalidRequest(f"invalid worker cache key {key!r}")
        return self.cache_dir / key

    def _keep(self, produced: Path) -> dict[str, Any]:
        """Move ``produced`` into the cache under a new key; return the key and files."""
        key = uuid.uuid4().hex
        entry = self._entry(key)
        shutil.move(str(produced), entry)
        entries = sorted(self.cache_dir.iterdir(), key=lambda p: p.stat().st_mtime)
        for old in entries[: max(len(entries) - self.max_cached, 0)]:
            shutil.rmtree(old, ignore_errors=True)
        return {"key": key, "files": wire.read_files(entry)}

    def init_adapter(self, lora: dict[str, Any]) -> dict[str, Any]:
        """Write a fresh adapter (``LoraSpec.to_dict()`` form); return ``{key, files}``."""
        spec = wire.lora_from_dict(lora)
        with self._lock:
            out = Path(tempfile.mkdtemp(prefix="init-", dir=self.cache_dir.parent))
            try:
                self.trainer.init_adapter(spec, out)
                return self._keep(out)
            finally:
                shutil.rmtree(out, ignore_errors=True)

    def distill(
        self,
        request: dict[str, Any],
        parent_key: str | None = None,
        parent_files: dict[str, bytes] | None = None,
    ) -> dict[str, Any]:
        """Run one update (a :func:`claas.training.wire.distill_request`).

        The parent is the cached version ``parent_key`` or, if given, the
        ``parent_files``. Returns ``{"missing": True}`` when the key is not
        cached here; else ``{key, files, metrics, steps, tokens}``.

        Raises:
            NonFiniteUpdate: The update was refused; nothing is cached.
            TrainingError: The update could not be computed.
        """
        with self._lock:
            scratch = Path(tempfile.mkdtemp(prefix="update-", dir=self.cache_dir.parent))
            try:
                if parent_files is not None:
                    parent_dir = scratch / "parent"
                    wire.write_files(parent_files, parent_dir)
                elif parent_key is not None and self._entry(parent_key).is_dir():
                    parent_dir = self._entry(parent_key)
                else:
                    return {"missing": True}
                samples, parent, config, remote = wire.unpack_distill_request(
                    request, parent_path=parent_dir
                )
                out = scratch / "out"
                result = self.trainer.distill(
                    samples, parent=parent, config=config, out_dir=out, remote_teacher=remote
                )
                reply = self._keep(out)
            finally:
                shutil.rmtree(scratch, ignore_errors=True)
        reply.update(metrics=dict(result.metrics), steps=result.steps, tokens=result.tokens)
        return reply
