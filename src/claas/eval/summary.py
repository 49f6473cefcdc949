"""``summary.json``: the run in a page, computed from its step records."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from claas.eval.config import EvalConfig
from claas.eval.runlog import FORMAT_VERSION

__all__ = ["TABLE_KEYS", "summarize", "summarize_preference", "write_json"]

# The per-step columns of the summary table, in display order.
TABLE_KEYS = (
    "compliance",
    "content_kept",
    "compliant_with_content",
    "mean_tokens",
    "train_compliance",
    "train_tokens",
    "capability",
    "margin",
    "entropy",
    "self_similarity",
    "repetition",
    "logprob_drift",
)


def write_json(path: Path, data: Mapping[str, Any]) -> None:
    """Write JSON atomically (temp file + rename), so a reader never sees half a file."""
    temp = path.with_name(f".{path.name}.tmp")
    temp.write_text(json.dumps(data, indent=2, allow_nan=False, default=str), encoding="utf-8")
    os.replace(temp, path)


def _last_measured(records: Sequence[Mapping[str, Any]], key: str) -> tuple[int, Any] | None:
    for record in reversed(records):
        value = record["metrics"].get(key)
        if value is not None:
            return int(record["step"]), value
    return None


def summarize_preference(records: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Baseline, final and per-step numbers of one preference's records (in step order).

    Raises:
        ValueError: If there are no records.
    """
    if not records:
        raise ValueError("no records to summarize")
    first, last = records[0], records[-1]
    after = _last_measured(records, "capability")
    return {
        "adapter_id": last["adapter_id"],
        "final_version": last["version"],
        "steps_completed": int(last["step"]),
        "baseline": dict(first["metrics"]),
        "final": dict(last["metrics"]),
        "capability_before": first["metrics"].get("capability"),
        "capability_after": after[1] if after else None,
        "capability_after_step": after[0] if after else None,
        "table": [
            {
                "step": int(r["step"]),
                "version": r["version"],
                **{k: r["metrics"].get(k) for k in TABLE_KEYS},
            }
            for r in records
        ],
        "alerts": [
            {"step": int(r["step"]), "message": message}
            for r in records
            for message in r.get("alerts", [])
        ],
        "seconds": sum(float(r.get("seconds", 0.0)) for r in records),
        "update_seconds": sum(float(r.get("timings", {}).get("update", 0.0)) for r in records),
    }


def summarize(
    records: Sequence[Mapping[str, Any]], config: EvalConfig, *, elapsed: float
) -> dict[str, Any]:
    """The whole run: each preference's summary plus what the run was.

    Args:
        records: Every step record of the run.
        config: The run's configuration.
        elapsed: Seconds this invocation took (a resumed run counts only its part).
    """
    preferences = {}
    for preference in config.preferences:
        mine = sorted(
            (r for r in records if r["preference"] == preference.name), key=lambda r: r["step"]
        )
        if mine:
            preferences[preference.name] = summarize_preference(mine)
    complete = all(
        p.name in preferences and preferences[p.name]["steps_completed"] >= config.steps
        for p in config.preferences
    )
    return {
        "format": FORMAT_VERSION,
        "name": config.name,
        "engine": config.engine,
        "base_model": config.base_model if config.engine == "local" else config.server.url,
        "steps": config.steps,
        "complete": complete,
        "fingerprint": config.fingerprint(),
        "preferences": preferences,
        "wall_seconds": sum(p["seconds"] for p in preferences.values()),
        "elapsed_seconds": elapsed,
        "finished": time.time(),
    }
