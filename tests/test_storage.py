"""The adapter store on a real directory: versions, aliases, retention, crashes, races."""

from __future__ import annotations

import json
import os
import random
import signal
import struct
import subprocess
import sys
import threading
import time
import zipfile
from pathlib import Path

import pytest

from claas.errors import (
    AdapterExists,
    AdapterNotFound,
    InvalidAdapterId,
    StorageError,
    VersionNotFound,
)
from claas.storage import AdapterStore, LocalAdapterStore
from claas.types import LoraSpec, split_adapter_id, validate_adapter_id

SRC = str(Path(__file__).resolve().parents[1] / "src")
ADAPTER = "team/helper"


def safetensors_bytes(size: int) -> bytes:
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}})
    return struct.pack("<Q", len(header)) + header.encode() + os.urandom(size)


def writer(tag: str = "x", size: int = 64):
    def write(directory: Path) -> None:
        (directory / "adapter_config.json").write_text(json.dumps({"r": 8, "tag": tag}))
        (directory / "adapter_model.safetensors").write_bytes(safetensors_bytes(size))

    return write


def assert_complete(version_dir: Path) -> None:
    """A version directory holds a parseable manifest, config and safetensors file."""
    manifest = json.loads((version_dir / "manifest.json").read_text())
    assert manifest["format_version"] == 1
    assert manifest["version"] == int(version_dir.name)
    assert isinstance(json.loads((version_dir / "adapter_config.json").read_text()), dict)
    blob = (version_dir / "adapter_model.safetensors").read_bytes()
    (header_len,) = struct.unpack("<Q", blob[:8])
    header = json.loads(blob[8 : 8 + header_len])
    assert len(blob) == 8 + header_len + header["w"]["data_offsets"][1]


def leftovers(root: Path) -> list[Path]:
    return [p for p in root.rglob(".staging/*")]


@pytest.fixture
def store(tmp_path: Path) -> LocalAdapterStore:
    return LocalAdapterStore(tmp_path / "adapters")


@pytest.fixture
def created(store: LocalAdapterStore) -> LocalAdapterStore:
    store.create(ADAPTER, base_model="tiny", lora=LoraSpec(rank=4), write=writer("v0"))
    return store


def publish(store: LocalAdapterStore, adapter_id: str = ADAPTER, **kwargs):
    parent = kwargs.pop("parent", None)
    if parent is None:
        parent = store.latest_version(adapter_id)
    return store.publish(adapter_id, parent=parent, write=kwargs.pop("write", writer()), **kwargs)


# ------------------------------------------------------------------------ ids


@pytest.mark.parametrize("good", ["a/b", "team/my-adapter_1.v2", "A9/" + "n" * 64, "x" * 64 + "/y"])
def test_valid_ids(good: str) -> None:
    assert validate_adapter_id(good) == good
    assert split_adapter_id(good) == tuple(good.split("/"))


BAD_IDS = [
    "../x",
    "/abs/x",
    "a/b/c",
    "",
    "a/..",
    "a/../b",
    "noslash",
    "a/",
    "/a",
    "a//b",
    "ns/naïve",
    "ns/名前",
    "ns/b\n",
    "ns/b\x00",
    "ns\\b/c",
    "-a/b",
    "a/.hidden",
    "a/b..c",
    "n" * 65 + "/b",
    "a/" + "b" * 65,
    "a/b c",
]


@pytest.mark.parametrize("bad", BAD_IDS)
def test_invalid_ids_are_refused_and_create_nothing(tmp_path: Path, bad: str) -> None:
    root = tmp_path / "adapters"
    store = LocalAdapterStore(root)
    with pytest.raises(InvalidAdapterId, match="namespace/name"):
        store.create(bad, base_model="m", lora=LoraSpec(), write=writer())
    for call in (store.get, store.exists, store.delete, store.versions, store.latest_version):
        with pytest.raises(InvalidAdapterId):
            call(bad)
    with pytest.raises(InvalidAdapterId):
        store.publish(bad, parent=0, write=writer())
    with pytest.raises(ValueError):  # also the stdlib error it stands for
        validate_adapter_id(bad)
    assert list(root.iterdir()) == []
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adapters"]


# ------------------------------------------------------------ versions, alias


def test_create_writes_version_zero(created: LocalAdapterStore) -> None:
    store = created
    assert isinstance(store, AdapterStore)
    v0 = store.get(ADAPTER)
    path = Path(v0.path)
    assert path.is_absolute() and path == store.root / "team/helper/versions/000000"
    assert (v0.version, v0.parent, v0.base_model, v0.engine) == (0, None, "tiny", "local")
    assert v0.lora == LoraSpec(rank=4).to_dict()
    assert_complete(path)
    manifest = json.loads((path / "manifest.json").read_text())
    assert manifest["format_version"] == 1 and manifest["lora"]["rank"] == 4
    assert json.loads((store.root / "team/helper/LATEST").read_text()) == {"version": 0}
    with pytest.raises(AdapterExists):
        store.create(ADAPTER, base_model="tiny", lora=LoraSpec(), write=writer())
    assert store.exists(ADAPTER) and not store.exists("team/other")
    assert leftovers(store.root) == []


def test_publish_moves_latest_and_survives_reopen(created: LocalAdapterStore) -> None:
    store = created
    v1 = publish(store, distill_config={"alpha": 0.5}, feedback_ids=["f1"], metrics={"loss": 1})
    v2 = publish(store, feedback_ids=("f2", "f3"), engine="tinker")
    assert (v1.version, v1.parent, v2.version, v2.parent) == (1, 0, 2, 1)
    assert v1.base_model == "tiny" and v2.lora == LoraSpec(rank=4).to_dict()
    reopened = LocalAdapterStore(store.root)
    assert reopened.latest_version(ADAPTER) == 2
    assert reopened.get(ADAPTER, 1) == v1
    assert reopened.get(ADAPTER) == v2
    assert v1.metrics == {"loss": 1.0} and v1.distill_config == {"alpha": 0.5}
    assert [v.version for v in reopened.versions(ADAPTER)] == [0, 1, 2]
    assert v2.engine == "tinker" and v2.feedback_ids == ("f2", "f3")


def test_missing_adapter_and_version(created: LocalAdapterStore) -> None:
    store = created
    for call in (store.get, store.versions, store.latest_version, store.delete):
        with pytest.raises(AdapterNotFound):
            call("team/absent")
    with pytest.raises(AdapterNotFound):
        store.publish("team/absent", parent=0, write=writer())
    with pytest.raises(AdapterNotFound):
        store.rollback("team/absent", 0)
    with pytest.raises(VersionNotFound):
        store.publish(ADAPTER, parent=7, write=writer())
    with pytest.raises(VersionNotFound):
        store.get(ADAPTER, 7)
    with pytest.raises(VersionNotFound):
        store.rollback(ADAPTER, 7)
    assert not (store.root / "team/absent").exists()


def test_rollback_then_publish_never_reuses_numbers(created: LocalAdapterStore) -> None:
    store = created
    for _ in range(3):
        publish(store)
    assert store.rollback(ADAPTER, 1).version == 1
    assert store.latest_version(ADAPTER) == 1
    assert LocalAdapterStore(store.root).get(ADAPTER).version == 1
    v4 = publish(store)
    assert (v4.version, v4.parent) == (4, 1)
    store.rollback(ADAPTER, 3)  # forward to a newer one is allowed too
    assert store.latest_version(ADAPTER) == 3


def test_retention_keeps_newest_and_latest(tmp_path: Path) -> None:
    store = LocalAdapterStore(tmp_path, keep_versions=3)
    store.create(ADAPTER, base_model="m", lora=LoraSpec(), write=writer())
    for _ in range(6):
        publish(store)
    assert [v.version for v in store.versions(ADAPTER)] == [4, 5, 6]
    with pytest.raises(VersionNotFound):
        store.get(ADAPTER, 2)
    store.rollback(ADAPTER, 4)
    assert store.prune(ADAPTER, keep_versions=1) == [5]
    assert [v.version for v in store.versions(ADAPTER)] == [4, 6]
    assert store.get(ADAPTER).version == 4
    v7 = publish(store)
    assert (v7.version, v7.parent) == (7, 4)
    assert [v.version for v in store.versions(ADAPTER)] == [4, 6, 7]
    assert leftovers(tmp_path) == []


def test_export_zip(created: LocalAdapterStore, tmp_path: Path) -> None:
    store = created
    publish(store)
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    path = store.export(ADAPTER, None, out_dir)
    assert path == out_dir / "team__helper__v1.zip"
    with zipfile.ZipFile(path) as archive:
        names = sorted(archive.namelist())
        manifest = json.loads(archive.read("manifest.json"))
        model = archive.read("adapter_model.safetensors")
    assert names == ["adapter_config.json", "adapter_model.safetensors", "manifest.json"]
    assert manifest["version"] == 1 and manifest["parent"] == 0
    assert (
        model == (store.root / "team/helper/versions/000001/adapter_model.safetensors").read_bytes()
    )
    explicit = store.export(ADAPTER, 0, tmp_path / "deep/dir/v0.zip")
    assert explicit == tmp_path / "deep/dir/v0.zip"
    with zipfile.ZipFile(explicit) as archive:
        assert json.loads(archive.read("manifest.json"))["version"] == 0
    assert sorted(p.name for p in explicit.parent.iterdir()) == ["v0.zip"]
    with pytest.raises(VersionNotFound):
        store.export(ADAPTER, 9, out_dir)


def test_delete_and_list(store: LocalAdapterStore) -> None:
    for adapter_id in ("b/one", "a/two", "a/one"):
        store.create(adapter_id, base_model="m", lora=LoraSpec(), write=writer())
    assert store.list_adapters() == ["a/one", "a/two", "b/one"]
    assert store.list_adapters("a") == ["a/one", "a/two"]
    assert store.list_adapters("zzz") == []
    with pytest.raises(InvalidAdapterId):
        store.list_adapters("../a")
    store.delete("a/one")
    assert store.list_adapters() == ["a/two", "b/one"]
    assert not store.exists("a/one") and not (store.root / "a/one").exists()
    with pytest.raises(AdapterNotFound):
        store.get("a/one")
    with pytest.raises(AdapterNotFound):
        store.delete("a/one")
    assert store.create("a/one", base_model="m", lora=LoraSpec(), write=writer()).version == 0
    assert leftovers(store.root) == []


class Boom(Exception):
    pass


def failing_write(directory: Path) -> None:
    (directory / "adapter_model.safetensors").write_bytes(b"partial")
    raise Boom("disk on fire")


def test_failing_write_publishes_nothing(created: LocalAdapterStore) -> None:
    store = created
    with pytest.raises(Boom):
        store.publish(ADAPTER, parent=0, write=failing_write)
    assert [v.version for v in store.versions(ADAPTER)] == [0]
    assert store.latest_version(ADAPTER) == 0
    with pytest.raises(Boom):
        store.create("team/new", base_model="m", lora=LoraSpec(), write=failing_write)
    assert not store.exists("team/new") and not (store.root / "team/new").exists()
    assert leftovers(store.root) == []
    assert publish(store).version == 1


def test_leftovers_and_incomplete_versions_are_ignored_then_cleaned(
    created: LocalAdapterStore,
) -> None:
    adapter_dir = created.root / "team/helper"
    (adapter_dir / ".staging/v5~dead").mkdir(parents=True)
    (adapter_dir / ".staging/v5~dead/adapter_model.safetensors").write_bytes(b"half")
    (created.root / "team/.staging/helper~dead/versions").mkdir(parents=True)
    (adapter_dir / "versions/000003").mkdir()  # damaged: no manifest
    reopened = LocalAdapterStore(created.root)
    assert leftovers(created.root) == []
    assert [v.version for v in reopened.versions(ADAPTER)] == [0]
    with pytest.raises(VersionNotFound):
        reopened.get(ADAPTER, 3)
    assert publish(reopened).version == 4  # 3 stays taken


def test_manifest_unknown_keys_warn_and_newer_format_fails(created: LocalAdapterStore) -> None:
    manifest_path = created.root / "team/helper/versions/000000/manifest.json"
    data = json.loads(manifest_path.read_text())
    manifest_path.write_text(json.dumps({**data, "shiny_new_field": 1}))
    with pytest.warns(UserWarning, match="shiny_new_field"):
        assert created.get(ADAPTER).version == 0
    manifest_path.write_text(json.dumps({**data, "format_version": 2}))
    with pytest.raises(StorageError, match="format_version 2"):
        created.get(ADAPTER)


# ------------------------------------------------------------------- crashes

CRASH_WRITER = r"""
import json, os, struct, sys
from pathlib import Path
from claas.storage import LocalAdapterStore
from claas.types import LoraSpec

root, size = Path(sys.argv[1]), int(sys.argv[2])
chunk = os.urandom(1 << 16)

def write(directory):
    (directory / "adapter_config.json").write_text(json.dumps({"r": 8}))
    header = json.dumps({"w": {"dtype": "U8", "shape": [size], "data_offsets": [0, size]}})
    with open(directory / "adapter_model.safetensors", "wb") as fh:
        fh.write(struct.pack("<Q", len(header)) + header.encode())
        for _ in range(size // len(chunk)):
            fh.write(chunk)

store = LocalAdapterStore(root, keep_versions=3)
print("ready", flush=True)
if not store.exists("crash/a"):
    store.create("crash/a", base_model="m", lora=LoraSpec(), write=write)
while True:
    store.publish("crash/a", parent=store.latest_version("crash/a"), write=write,
                  metrics={"loss": 1.0}, feedback_ids=["f"])
"""


def spawn(code: str, *args: str) -> subprocess.Popen[str]:
    env = {**os.environ, "PYTHONPATH": SRC}
    return subprocess.Popen(
        [sys.executable, "-c", code, *args], stdout=subprocess.PIPE, text=True, env=env
    )


def test_sigkill_at_random_moments_leaves_only_complete_versions(tmp_path: Path) -> None:
    rng = random.Random(1234)
    adapter_dir = tmp_path / "crash/a"
    created_at: dict[int, float] = {}
    for _ in range(15):
        proc = spawn(CRASH_WRITER, str(tmp_path), str(4 << 20))
        assert proc.stdout is not None and proc.stdout.readline() == "ready\n"
        time.sleep(rng.uniform(0.0, 0.3))
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        proc.stdout.close()
        store = LocalAdapterStore(tmp_path, keep_versions=3)
        assert leftovers(tmp_path) == []
        if not store.exists("crash/a"):
            assert not adapter_dir.exists() and not created_at
            continue
        listed = store.versions("crash/a")
        for version in listed:
            assert_complete(Path(version.path))
            # a number is never given to two different versions
            assert created_at.setdefault(version.version, version.created) == version.created
        latest = json.loads((adapter_dir / "LATEST").read_text())["version"]
        assert latest in [v.version for v in listed]
        assert store.get("crash/a").version == latest
    assert created_at, "no kill landed after the adapter was created"


# --------------------------------------------------------------- concurrency


def test_threads_publishing_get_consecutive_versions(tmp_path: Path) -> None:
    store = LocalAdapterStore(tmp_path, keep_versions=100)
    store.create(ADAPTER, base_model="m", lora=LoraSpec(), write=writer())
    results: list[int] = []
    errors: list[BaseException] = []

    def work() -> None:
        try:
            for _ in range(4):
                results.append(publish(store).version)
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    assert sorted(results) == list(range(1, 33))
    assert [v.version for v in store.versions(ADAPTER)] == list(range(33))
    assert store.latest_version(ADAPTER) == 32


def test_threads_racing_to_create_one_adapter(store: LocalAdapterStore) -> None:
    outcomes: list[str] = []

    def work() -> None:
        try:
            store.create(ADAPTER, base_model="m", lora=LoraSpec(), write=writer())
            outcomes.append("created")
        except AdapterExists:
            outcomes.append("exists")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(outcomes) == ["created", "exists", "exists", "exists"]


PROCESS_PUBLISHER = r"""
import json, sys
from pathlib import Path
from claas.storage import LocalAdapterStore

store = LocalAdapterStore(Path(sys.argv[1]), keep_versions=100)
def write(directory):
    (directory / "adapter_config.json").write_text("{}")
done = []
for _ in range(int(sys.argv[2])):
    done.append(store.publish("team/helper", parent=store.latest_version("team/helper"),
                              write=write).version)
print(json.dumps(done))
"""


def test_two_processes_publishing_concurrently(tmp_path: Path) -> None:
    store = LocalAdapterStore(tmp_path, keep_versions=100)
    store.create(ADAPTER, base_model="m", lora=LoraSpec(), write=writer())
    procs = [spawn(PROCESS_PUBLISHER, str(tmp_path), "10") for _ in range(2)]
    outputs = [proc.communicate(timeout=60)[0] for proc in procs]
    assert [proc.returncode for proc in procs] == [0, 0]
    versions = [v for out in outputs for v in json.loads(out)]
    assert sorted(versions) == list(range(1, 21))
    assert [v.version for v in store.versions(ADAPTER)] == list(range(21))


def test_delete_waits_for_an_inflight_publish(created: LocalAdapterStore) -> None:
    started, release = threading.Event(), threading.Event()
    published: list[int] = []

    def slow_write(directory: Path) -> None:
        started.set()
        release.wait(10)
        writer()(directory)

    publisher = threading.Thread(
        target=lambda: published.append(publish(created, write=slow_write).version)
    )
    publisher.start()
    assert started.wait(10)
    deleter = threading.Thread(target=created.delete, args=(ADAPTER,))
    deleter.start()
    time.sleep(0.1)
    assert created.exists(ADAPTER)  # the delete waits for the lock
    release.set()
    publisher.join()
    deleter.join()
    assert published == [1] and not created.exists(ADAPTER)
    assert leftovers(created.root) == []
    assert created.create(ADAPTER, base_model="m", lora=LoraSpec(), write=writer()).version == 0


def test_lock_waiter_retries_when_the_lock_file_is_unlinked(tmp_path: Path) -> None:
    from claas.storage._files import flock as _flock

    path = tmp_path / ".a.lock"
    holder = _flock(path, blocking=True)
    assert holder is not None and _flock(path, blocking=False) is None
    got: list[int | None] = []
    waiter = threading.Thread(target=lambda: got.append(_flock(path, blocking=True)))
    waiter.start()
    time.sleep(0.1)
    path.unlink()  # what delete does while holding the lock
    os.close(holder)
    waiter.join(10)
    (fd,) = got
    assert fd is not None and os.fstat(fd).st_ino == os.stat(path).st_ino
    os.close(fd)


def test_keep_versions_must_be_positive(tmp_path: Path) -> None:
    for bad in (0, -1, True, 2.5):
        with pytest.raises(ValueError, match="keep_versions"):
            LocalAdapterStore(tmp_path, keep_versions=bad)  # type: ignore[arg-type]
