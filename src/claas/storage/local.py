"""``LocalAdapterStore``: the adapter store on a local (or shared) directory.

The layout and the crash-safety rule are in the package docstring
(:mod:`claas.storage`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import threading
import time
import uuid
import zipfile
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeGuard

import attrs

from claas.errors import (
    AdapterExists,
    AdapterNotFound,
    Conflict,
    InvalidConfig,
    InvalidRequest,
    StorageError,
    VersionNotFound,
)
from claas.storage._files import flock, fsync, listdir, write_json
from claas.storage._guard_files import read_probes, read_verdict, write_probes, write_verdict
from claas.storage._manifest import FORMAT_VERSION, MANIFEST, parse_manifest
from claas.storage.base import WriteFn
from claas.types import (
    AdapterVersion,
    LoraSpec,
    split_adapter_id,
    valid_id_part,
)

__all__ = ["LocalAdapterStore"]


_THREAD_LOCKS: dict[str, threading.Lock] = {}
_THREAD_LOCKS_GUARD = threading.Lock()


class LocalAdapterStore:
    """An :class:`AdapterStore` on a local directory, safe across threads and processes.

    Args:
        root: The store's directory (created if missing), e.g. ``data_dir / "adapters"``.
        keep_versions: After each publish, versions beyond the newest
            ``keep_versions`` are deleted, except the one ``latest`` points at.
            Version numbers are never reused.

    Raises:
        InvalidConfig: If ``keep_versions`` is not an integer >= 1.
    """

    def __init__(self, root: Path, *, keep_versions: int = 20) -> None:
        if not _is_count(keep_versions):
            raise InvalidConfig(
                f"LocalAdapterStore.keep_versions={keep_versions!r} is invalid: "
                "must be an integer >= 1"
            )
        self.root = Path(root).absolute()
        self.keep_versions = keep_versions
        self.root.mkdir(parents=True, exist_ok=True)
        self._sweep()

    def create(
        self,
        adapter_id: str,
        *,
        base_model: str,
        lora: LoraSpec,
        write: WriteFn,
        engine: str = "local",
    ) -> AdapterVersion:
        """Create an adapter whose version 0 holds the files ``write`` puts in a directory.

        Args:
            adapter_id: ``namespace/name``.
            base_model: The base model the adapter belongs to.
            lora: The adapter's LoRA shape, kept in every version's manifest.
            write: Called with an empty directory to fill with the PEFT files.
                If it raises, nothing is created and the error propagates.
            engine: Name of the training engine that made the files.

        Returns:
            Version 0.

        Raises:
            InvalidAdapterId: If the id is malformed (nothing is written).
            AdapterExists: If the adapter already exists.
        """
        namespace, name = split_adapter_id(adapter_id)
        if not isinstance(lora, LoraSpec):
            raise InvalidRequest(f"lora must be a LoraSpec, not {type(lora).__name__}")
        adapter_dir = self.root / namespace / name
        with self._locked(adapter_id):
            fsync(self.root)  # the namespace directory the lock file may have created
            self._clean(adapter_id)
            if self._complete(adapter_dir):
                raise AdapterExists(f"adapter {adapter_id!r} already exists")
            version = AdapterVersion(
                adapter_id=adapter_id,
                version=0,
                parent=None,
                created=time.time(),
                base_model=base_model,
                path=str(adapter_dir / "versions" / _vname(0)),
                lora=lora.to_dict(),
                engine=engine,
            )
            tree = self._ns_staging_path(namespace, name)
            try:
                self._build_version(tree / "versions" / _vname(0), write, version)
                write_json(tree / "LATEST", {"version": 0})
                fsync(tree / "versions")
                fsync(tree)
                if adapter_dir.exists():  # a damaged remnant without any complete version
                    self._discard(adapter_dir, self._ns_staging_path(namespace, name))
                os.rename(tree, adapter_dir)
            except BaseException:
                shutil.rmtree(tree, ignore_errors=True)
                raise
            fsync(adapter_dir.parent)
        return version

    def publish(
        self,
        adapter_id: str,
        *,
        parent: int,
        write: WriteFn,
        distill_config: Mapping[str, Any] | None = None,
        feedback_ids: Sequence[str] = (),
        metrics: Mapping[str, float] | None = None,
        engine: str = "local",
        live: bool = True,
    ) -> AdapterVersion:
        """Write a new version derived from ``parent`` and point ``latest`` at it.

        The new number is one above the highest ever written, so numbers are
        never reused. Base model and LoRA shape are inherited from ``parent``.

        Args:
            adapter_id: ``namespace/name``.
            parent: The version the update started from.
            write: Called with an empty directory to fill with the PEFT files.
                If it raises, nothing is published and the error propagates.
            distill_config: The hyperparameters of the update, stored as given.
            feedback_ids: The feedback events the update applied.
            metrics: What the update measured (loss, grad norm, ...).
            engine: Name of the training engine that made the files.
            live: Point ``latest`` at it now; ``False`` keeps it a candidate
                until :meth:`judge` records the guard's verdict.

        Returns:
            The new version.

        Raises:
            AdapterNotFound: If the adapter does not exist.
            VersionNotFound: If ``parent`` does not exist.
        """
        if isinstance(feedback_ids, str):
            raise InvalidRequest("feedback_ids must be a sequence of ids, not a string")
        with self._mutating(adapter_id) as adapter_dir:
            base = self._load(adapter_id, adapter_dir, parent)
            number = max([*self._numbers(adapter_dir), self._read_latest(adapter_dir)]) + 1
            final = adapter_dir / "versions" / _vname(number)
            version = AdapterVersion(
                adapter_id=adapter_id,
                version=number,
                parent=base.version,
                created=time.time(),
                base_model=base.base_model,
                path=str(final),
                lora=dict(base.lora),
                distill_config=None if distill_config is None else dict(distill_config),
                feedback_ids=tuple(str(f) for f in feedback_ids),
                metrics={str(k): float(v) for k, v in (metrics or {}).items()},
                engine=engine,
            )
            staging = adapter_dir / ".staging" / f"v{number}~{uuid.uuid4().hex}"
            try:
                self._build_version(staging, write, version)
                os.rename(staging, final)
            except BaseException:
                shutil.rmtree(staging, ignore_errors=True)
                raise
            fsync(final.parent)
            if live:
                self._write_latest(adapter_dir, number)
            self._prune(adapter_dir, self.keep_versions)
        return version

    def judge(
        self, adapter_id: str, version: int, verdict: Mapping[str, Any], *, go_live: bool
    ) -> AdapterVersion:
        """Record the guard's verdict on a version; with ``go_live``, point ``latest`` at it."""
        with self._mutating(adapter_id) as adapter_dir:
            target = self._load(adapter_id, adapter_dir, version)
            write_verdict(Path(target.path), verdict)
            if go_live:
                self._write_latest(adapter_dir, target.version)
                self._prune(adapter_dir, self.keep_versions)  # publish kept the old live one
            return self._load(adapter_id, adapter_dir, version)

    def rollback(self, adapter_id: str, version: int, *, force: bool = False) -> AdapterVersion:
        """Point ``latest`` at an existing version, older or newer than the current one.

        A version the guard rejected goes live only with ``force`` (its verdict
        then records that it was forced).

        Raises:
            AdapterNotFound: If the adapter does not exist.
            VersionNotFound: If the version does not exist (never written, or retired).
            Conflict: If the version was rejected and ``force`` is not given.
        """
        with self._mutating(adapter_id) as adapter_dir:
            target = self._load(adapter_id, adapter_dir, version)
            if target.rejected and target.verdict is not None:
                if not force:
                    reasons = "; ".join(target.verdict.get("reasons", ()))
                    raise Conflict(
                        f"{target.ref} was rejected by the guard ({reasons}); "
                        "force it to publish it anyway"
                    )
                write_verdict(Path(target.path), {**target.verdict, "forced": time.time()})
                target = self._load(adapter_id, adapter_dir, version)
            self._write_latest(adapter_dir, target.version)
        return target

    def guard_probes(self, adapter_id: str) -> list[dict[str, Any]]:
        """The adapter's own guard probes (``{"prompt", "expect"}`` each)."""
        return read_probes(self._existing_dir(adapter_id))

    def set_guard_probes(
        self, adapter_id: str, probes: Sequence[Mapping[str, Any]]
    ) -> list[dict[str, Any]]:
        """Replace the adapter's own guard probes; return them as stored.

        Raises:
            InvalidRequest: If a probe is malformed (nothing is changed).
        """
        with self._mutating(adapter_id) as adapter_dir:
            return write_probes(adapter_dir, probes)

    def prune(self, adapter_id: str, keep_versions: int | None = None) -> list[int]:
        """Apply retention now: keep the newest versions and the one ``latest`` points at.

        Args:
            adapter_id: ``namespace/name``.
            keep_versions: How many of the newest to keep (default: the store's).

        Returns:
            The version numbers deleted.
        """
        keep = self.keep_versions if keep_versions is None else keep_versions
        if not _is_count(keep):
            raise InvalidRequest(f"keep_versions={keep!r} is invalid: must be an integer >= 1")
        with self._mutating(adapter_id) as adapter_dir:
            return self._prune(adapter_dir, keep)

    def delete(self, adapter_id: str) -> None:
        """Delete an adapter and all its versions.

        Raises:
            AdapterNotFound: If the adapter does not exist.
        """
        namespace, name = split_adapter_id(adapter_id)
        with self._mutating(adapter_id) as adapter_dir:
            self._discard(adapter_dir, self._ns_staging_path(namespace, name))
            # Waiters holding the old lock file notice the unlink and retry.
            self._lock_path(adapter_id).unlink(missing_ok=True)

    def get(self, adapter_id: str, version: int | None = None) -> AdapterVersion:
        """Return one version; ``None`` means the one ``latest`` points at.

        Raises:
            AdapterNotFound: If the adapter does not exist.
            VersionNotFound: If the version does not exist.
        """
        adapter_dir = self._existing_dir(adapter_id)
        self._try_clean(adapter_id)
        if version is not None:
            return self._load(adapter_id, adapter_dir, version)
        latest = self._read_latest(adapter_dir)
        try:
            return self._load(adapter_id, adapter_dir, latest)
        except VersionNotFound:
            raise StorageError(
                f"{adapter_dir / 'LATEST'} points at version {latest}, which does not exist; "
                "nothing is served from this adapter until LATEST names a complete version"
            ) from None

    def latest_version(self, adapter_id: str) -> int:
        """Return the number ``latest`` points at.

        Raises:
            AdapterNotFound: If the adapter does not exist.
        """
        return self.get(adapter_id).version

    def versions(self, adapter_id: str) -> list[AdapterVersion]:
        """Return every complete version, ascending.

        Raises:
            AdapterNotFound: If the adapter does not exist.
        """
        adapter_dir = self._existing_dir(adapter_id)
        self._try_clean(adapter_id)
        found = []
        for number in self._complete(adapter_dir):
            with contextlib.suppress(VersionNotFound):  # retired meanwhile
                found.append(self._load(adapter_id, adapter_dir, number))
        return found

    def export(self, adapter_id: str, version: int | None, dest: Path) -> Path:
        """Write one version's directory, manifest included, as a zip file.

        Args:
            adapter_id: ``namespace/name``.
            version: The version, or ``None`` for ``latest``.
            dest: An existing directory (the file is named
                ``<ns>__<name>__v<N>.zip`` inside it) or the path of the zip
                file to write (missing parent directories are created).

        Returns:
            The path of the zip file.

        Raises:
            AdapterNotFound: If the adapter does not exist.
            VersionNotFound: If the version does not exist.
        """
        namespace, name = split_adapter_id(adapter_id)
        found = self.get(adapter_id, version)
        dest = Path(dest)
        if dest.is_dir():
            dest = dest / f"{namespace}__{name}__v{found.version}.zip"
        dest.parent.mkdir(parents=True, exist_ok=True)
        source = Path(found.path)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            with zipfile.ZipFile(tmp, "w") as archive:
                for path in sorted(p for p in source.rglob("*") if p.is_file()):
                    # Weights barely compress; deflating them only costs time.
                    packed = zipfile.ZIP_DEFLATED if path.suffix == ".json" else zipfile.ZIP_STORED
                    archive.write(path, path.relative_to(source).as_posix(), packed)
            os.replace(tmp, dest)
        except FileNotFoundError as exc:
            raise VersionNotFound(f"{found.ref} was deleted during export") from exc
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def list_adapters(self, namespace: str | None = None) -> list[str]:
        """Return the ids of all adapters (or of one namespace's), sorted.

        Raises:
            InvalidAdapterId: If ``namespace`` is not a valid namespace.
        """
        if namespace is not None:
            split_adapter_id(f"{namespace}/x")
        names = [namespace] if namespace is not None else listdir(self.root)
        return [
            f"{ns}/{name}"
            for ns in sorted(filter(valid_id_part, names))
            for name in sorted(filter(valid_id_part, listdir(self.root / ns)))
            if self._complete(self.root / ns / name)
        ]

    def exists(self, adapter_id: str) -> bool:
        """Whether the adapter exists (has a complete version).

        Raises:
            InvalidAdapterId: If the id is malformed.
        """
        namespace, name = split_adapter_id(adapter_id)
        return bool(self._complete(self.root / namespace / name))

    # -------------------------------------------------------------- internals

    def _existing_dir(self, adapter_id: str) -> Path:
        namespace, name = split_adapter_id(adapter_id)
        adapter_dir = self.root / namespace / name
        if not adapter_dir.is_dir():
            raise AdapterNotFound(f"adapter {adapter_id!r} does not exist")
        return adapter_dir

    def _lock_path(self, adapter_id: str) -> Path:
        namespace, name = split_adapter_id(adapter_id)
        return self.root / namespace / f".{name}.lock"

    def _ns_staging_path(self, namespace: str, name: str) -> Path:
        staging = self.root / namespace / ".staging"
        staging.mkdir(parents=True, exist_ok=True)
        return staging / f"{name}~{uuid.uuid4().hex}"

    @contextlib.contextmanager
    def _locked(self, adapter_id: str, *, blocking: bool = True) -> Iterator[bool]:
        """Hold the adapter's thread and file locks; yield False if busy and not blocking."""
        lock_path = self._lock_path(adapter_id)
        with _THREAD_LOCKS_GUARD:
            thread_lock = _THREAD_LOCKS.setdefault(str(lock_path), threading.Lock())
        if not thread_lock.acquire(blocking=blocking):
            yield False
            return
        try:
            fd = flock(lock_path, blocking=blocking)
            try:
                yield fd is not None
            finally:
                if fd is not None:
                    os.close(fd)
        finally:
            thread_lock.release()

    @contextlib.contextmanager
    def _mutating(self, adapter_id: str) -> Iterator[Path]:
        """Lock an existing adapter, clean its leftovers, and yield its directory."""
        self._existing_dir(adapter_id)  # before locking, so no lock file for a typo
        with self._locked(adapter_id):
            self._clean(adapter_id)
            yield self._existing_dir(adapter_id)

    def _leftovers(self, adapter_id: str) -> list[Path]:
        namespace, name = split_adapter_id(adapter_id)
        own = self.root / namespace / name / ".staging"
        shared = self.root / namespace / ".staging"
        return [own / entry for entry in listdir(own)] + [
            shared / entry for entry in listdir(shared) if entry.partition("~")[0] == name
        ]

    def _clean(self, adapter_id: str) -> None:
        """Remove staging leftovers; only call with the adapter's lock held."""
        for path in self._leftovers(adapter_id):
            if path.is_dir() and not path.is_symlink():
                shutil.rmtree(path, ignore_errors=True)
            else:
                path.unlink(missing_ok=True)

    def _try_clean(self, adapter_id: str) -> None:
        if self._leftovers(adapter_id):
            with self._locked(adapter_id, blocking=False) as held:
                if held:
                    self._clean(adapter_id)

    def _sweep(self) -> None:
        """Clean the leftovers of crashed writers whose adapters are not locked now."""
        for namespace in filter(valid_id_part, listdir(self.root)):
            names = set(listdir(self.root / namespace))
            names |= {e.partition("~")[0] for e in listdir(self.root / namespace / ".staging")}
            for name in sorted(filter(valid_id_part, names)):
                self._try_clean(f"{namespace}/{name}")

    def _numbers(self, adapter_dir: Path) -> list[int]:
        """All version numbers present, complete or not (they are all taken)."""
        names = listdir(adapter_dir / "versions")
        return sorted(int(n) for n in names if n.isascii() and n.isdigit())

    def _complete(self, adapter_dir: Path) -> list[int]:
        versions = adapter_dir / "versions"
        return [n for n in self._numbers(adapter_dir) if (versions / _vname(n) / MANIFEST).exists()]

    def _load(self, adapter_id: str, adapter_dir: Path, version: int) -> AdapterVersion:
        if isinstance(version, bool) or not isinstance(version, int):
            raise InvalidRequest(f"version must be an integer, not {version!r}")
        version_dir = adapter_dir / "versions" / _vname(version)
        try:
            text = (version_dir / MANIFEST).read_text(encoding="utf-8")
        except (FileNotFoundError, NotADirectoryError):
            raise VersionNotFound(f"{adapter_id}@{version} does not exist") from None
        found = parse_manifest(text, version_dir)
        verdict = read_verdict(version_dir)
        return found if verdict is None else attrs.evolve(found, verdict=verdict)

    def _build_version(self, version_dir: Path, write: WriteFn, version: AdapterVersion) -> None:
        version_dir.mkdir(parents=True)
        write(version_dir)
        for dirpath, _, filenames in os.walk(version_dir, topdown=False):
            for filename in filenames:
                fsync(Path(dirpath, filename))
            fsync(Path(dirpath))
        manifest = {"format_version": FORMAT_VERSION, **attrs.asdict(version)}
        del manifest["path"], manifest["verdict"]
        write_json(version_dir / MANIFEST, manifest)  # last: its presence marks completeness
        fsync(version_dir)

    def _read_latest(self, adapter_dir: Path) -> int:
        """The version ``LATEST`` names.

        Every adapter is created with its ``LATEST`` and it is only ever replaced
        atomically, so a missing or unreadable file is damage: serving the newest
        version instead would silently undo a rollback.

        Raises:
            StorageError: Naming the file, if it is missing, unreadable or malformed.
        """
        path = adapter_dir / "LATEST"
        try:
            data = json.loads(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise StorageError(f"{path} is missing; the adapter has no live version") from None
        except (OSError, ValueError) as exc:
            raise StorageError(f"{path} is unreadable: {exc}") from None
        value = data.get("version") if isinstance(data, dict) else None
        if not isinstance(value, int) or isinstance(value, bool) or value < 0:
            raise StorageError(f'{path} is malformed: expected {{"version": N}}, got {data!r}')
        return value

    def _write_latest(self, adapter_dir: Path, version: int) -> None:
        staging = adapter_dir / ".staging"
        staging.mkdir(exist_ok=True)
        tmp = staging / f"LATEST~{uuid.uuid4().hex}"
        write_json(tmp, {"version": version})
        os.replace(tmp, adapter_dir / "LATEST")
        fsync(adapter_dir)

    def _prune(self, adapter_dir: Path, keep: int) -> list[int]:
        complete = self._complete(adapter_dir)
        kept = {*complete[-keep:], self._read_latest(adapter_dir)}
        retired = [n for n in complete if n not in kept]
        (adapter_dir / ".staging").mkdir(exist_ok=True)
        for number in retired:
            trash = adapter_dir / ".staging" / f"retired{number}~{uuid.uuid4().hex}"
            self._discard(adapter_dir / "versions" / _vname(number), trash)
        return retired

    @staticmethod
    def _discard(path: Path, trash: Path) -> None:
        """Remove a tree so that a crash midway never leaves part of it in place."""
        os.rename(path, trash)
        fsync(path.parent)
        shutil.rmtree(trash, ignore_errors=True)


def _vname(version: int) -> str:
    return f"{version:06d}"


def _is_count(value: object) -> TypeGuard[int]:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 1
