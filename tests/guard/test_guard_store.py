"""Rejected versions and an adapter's own probes in the real adapter store."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import pytest

from claas.errors import Conflict, InvalidRequest
from claas.storage import LocalAdapterStore
from claas.types import LoraSpec

ADAPTER = "team/guarded"
REJECTED = {"passed": False, "mode": "probes", "reasons": ["lost 3 of 8 capability probes"]}


def write(directory: Path) -> None:
    (directory / "adapter_config.json").write_text("{}")
    (directory / "adapter_model.safetensors").write_bytes(b"\0" * 16)


@pytest.fixture
def store(tmp_path: Path) -> LocalAdapterStore:
    store = LocalAdapterStore(tmp_path / "adapters")
    store.create(ADAPTER, base_model="tiny", lora=LoraSpec(rank=4), write=write)
    return store


def test_a_candidate_waits_for_its_verdict_and_a_rejected_one_never_goes_live(
    store: LocalAdapterStore, tmp_path: Path
) -> None:
    candidate = store.publish(ADAPTER, parent=0, write=write, live=False)
    assert store.latest_version(ADAPTER) == 0 and candidate.verdict is None
    judged = store.judge(ADAPTER, candidate.version, REJECTED, go_live=False)
    assert judged.rejected and judged.verdict is not None
    assert judged.verdict["reasons"] == REJECTED["reasons"]
    assert store.latest_version(ADAPTER) == 0
    # Listed with its reasons, and still rejected for a new store on the same directory.
    reopened = LocalAdapterStore(store.root)
    assert [v.rejected for v in reopened.versions(ADAPTER)] == [False, True]
    # Exportable, verdict included; the manifest itself stays as published.
    archive = zipfile.ZipFile(reopened.export(ADAPTER, candidate.version, tmp_path))
    assert json.loads(archive.read("verdict.json"))["passed"] is False
    assert "verdict" not in json.loads(archive.read("manifest.json"))


def test_a_rejected_version_is_served_only_when_forced(store: LocalAdapterStore) -> None:
    candidate = store.publish(ADAPTER, parent=0, write=write, live=False)
    store.judge(ADAPTER, candidate.version, REJECTED, go_live=False)
    with pytest.raises(Conflict, match=r"rejected by the guard.*lost 3 of 8"):
        store.rollback(ADAPTER, candidate.version)
    assert store.latest_version(ADAPTER) == 0
    forced = store.rollback(ADAPTER, candidate.version, force=True)
    assert store.latest_version(ADAPTER) == candidate.version
    assert forced.rejected and forced.verdict is not None and forced.verdict["forced"] > 0


def test_a_passing_verdict_moves_latest(store: LocalAdapterStore) -> None:
    candidate = store.publish(ADAPTER, parent=0, write=write, live=False)
    live = store.judge(ADAPTER, candidate.version, {"passed": True, "reasons": []}, go_live=True)
    assert store.get(ADAPTER) == live and not live.rejected


def test_an_adapters_own_probes_are_kept_and_validated(store: LocalAdapterStore) -> None:
    assert store.guard_probes(ADAPTER) == []
    probes = [{"prompt": "Who is our CEO?", "expect": ["Ada", " Ada Lovelace "]}]
    assert store.set_guard_probes(ADAPTER, probes) == [
        {"prompt": "Who is our CEO?", "expect": ["Ada", "Ada Lovelace"]}
    ]
    assert LocalAdapterStore(store.root).guard_probes(ADAPTER)[0]["prompt"] == "Who is our CEO?"
    for bad in (
        [{"prompt": "", "expect": ["x"]}],
        [{"prompt": "Q", "expect": "Ada"}],
        [{"prompt": "Q", "expect": []}],
        [{"prompt": "Q", "expect": ["x"], "weight": 2}],
    ):
        with pytest.raises(InvalidRequest):
            store.set_guard_probes(ADAPTER, bad)
    assert len(store.guard_probes(ADAPTER)) == 1  # a refused change changed nothing
