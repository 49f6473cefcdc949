"""Greedy decoding with local inference: ms per token, and a fresh version's first token.

In one process, two ``LocalInference`` backends of the embedded model, one under
bfloat16 autocast and one in float32, answer the same question greedily in turns; a
token's time is the stream's time after its first token divided by the tokens after it
(the first token pays for the prompt). The row is bfloat16's ms/token against
float32's, and its note says which of the two the default (``autocast="auto"``) decodes
in on this device: on a CPU float32, as this row showed bfloat16 slower there.

A fresh version: each round a new version of one adapter is written, published to a
backend with the default precision (it supersedes the last one, so its LoRA weights are
copied into that one's slot, as after a feedback) and asked the question; the clock runs
from ``publish`` to the first streamed token. The reference is the same question asked
of that version right after, now warm.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import _measure as m

__all__ = ["run"]

SCRIPT = Path(__file__)
QUESTION = "Explain in detail how photosynthesis works and why it matters for life on Earth."


def _timed_stream(stream: Iterator[Any], started: float) -> tuple[float, float, int]:
    """(seconds to the first token, seconds after it, tokens after it) of one stream."""
    first = None
    tokens = 0
    for delta in stream:
        if delta.token_ids:
            tokens += len(delta.token_ids)
            if first is None:
                first = time.perf_counter()
    end = time.perf_counter()
    assert first is not None, "the stream produced no token"
    return first - started, end - first, tokens - 1


def measure_decode(
    *, rounds: int, threads: int | None, models_dir: str | None, device: str, max_tokens: int
) -> dict[str, Any]:
    """Child: ms/token of bfloat16 and of float32 in turns; a fresh version's first token."""
    m.set_threads(threads)
    from claas import LoraSpec, Settings
    from claas.inference.local import LocalInference
    from claas.storage import LocalAdapterStore
    from claas.training.local import LocalTrainer
    from claas.types import ChatMessage, SamplingParams

    tmp = Path(tempfile.mkdtemp(prefix="claas-bench-decode-"))
    extra = {"model_cache_dir": models_dir} if models_dir else {}
    settings = Settings(data_dir=tmp, device=device, **extra)
    bf16 = LocalInference(settings.evolve(autocast=True))
    fp32 = LocalInference(settings.evolve(autocast=False))
    default = LocalInference(settings.evolve(autocast="auto"))
    messages = [ChatMessage("user", QUESTION)]
    greedy = SamplingParams(max_tokens=max_tokens, temperature=0)
    trainer = LocalTrainer(settings.evolve(autocast=False))
    store = LocalAdapterStore(settings.adapters_dir)
    lora = LoraSpec()
    fresh: list[float] = []
    warm: list[float] = []
    tokens: dict[str, int] = {}

    def per_token(backend: Any, name: str, adapter: Any = None) -> float:
        started = time.perf_counter()
        _, after, count = _timed_stream(
            backend.stream(messages, adapter=adapter, sampling=greedy), started
        )
        tokens[name] = count
        return after / max(count, 1)

    def write(out: Path) -> None:
        trainer.init_adapter(lora, out)

    versions = [
        store.create("bench/decode", base_model=settings.base_model, lora=lora, write=write)
    ]

    def fresh_version() -> float:
        version = store.publish("bench/decode", parent=versions[-1].version, write=write)
        versions.append(version)
        started = time.perf_counter()
        default.publish(version)
        first, _, _ = _timed_stream(
            default.stream(messages, adapter=version, sampling=greedy), started
        )
        started = time.perf_counter()
        again, _, _ = _timed_stream(
            default.stream(messages, adapter=version, sampling=greedy), started
        )
        warm.append(again)
        return first

    try:
        per_token(bf16, "bfloat16")  # warm-up: kernel selection, first slot
        per_token(fp32, "float32")
        fresh_version()
        warm.clear()
        series = m.interleave(
            rounds,
            {
                "bfloat16": lambda: per_token(bf16, "bfloat16"),
                "float32": lambda: per_token(fp32, "float32"),
            },
        )
        fresh = [fresh_version() for _ in range(rounds)]
        precision = default.autocast.describe()
    finally:
        default.close()
        bf16.close()
        fp32.close()
        trainer.close()
        shutil.rmtree(tmp, ignore_errors=True)
    return {**series, "fresh": fresh, "warm": warm, "tokens": tokens, "precision": precision}


def run(options: Any) -> list[m.Row]:
    """Two rows: decode ms/token (bfloat16 vs float32), fresh version's first token vs warm."""
    names = ["greedy decode ms/token, bfloat16 vs float32", "first token of a fresh version"]
    print(f"[decode] {options.decode_repeats} rounds", file=sys.stderr)
    try:
        r = m.run_child(
            SCRIPT,
            "measure_decode",
            {
                "rounds": options.decode_repeats,
                "threads": options.threads,
                "models_dir": options.models_dir,
                "device": options.device,
                "max_tokens": options.decode_tokens,
            },
        )
    except RuntimeError as exc:
        return m.skipped_rows(names, f"failed: {str(exc)[-300:]}")
    bf16, fp32 = m.median(r["bfloat16"]) * 1e3, m.median(r["float32"]) * 1e3
    fresh, warm = m.median(r["fresh"]) * 1e3, m.median(r["warm"]) * 1e3
    where = "" if options.device == "cpu" else f" on {options.device}"
    return [
        m.Row(
            name=names[0] + where,
            measured=f"{bf16:.1f} ms/token",
            reference=f"{fp32:.1f} ms/token float32",
            ratio=m.median_ratio(r["bfloat16"], r["float32"]),
            note=(
                f"the default decodes in {r['precision']}; {r['tokens']['bfloat16']} and "
                f"{r['tokens']['float32']} tokens after the first; {len(r['bfloat16'])} rounds"
            ),
        ),
        m.Row(
            name=names[1] + where,
            measured=f"{fresh:.0f} ms publish + first token",
            reference=f"{warm:.0f} ms once warm",
            ratio=m.median_ratio(r["fresh"], r["warm"]),
            note=f"default precision; {len(r['fresh'])} versions",
        ),
    ]


if __name__ == "__main__":
    m.child_main({"measure_decode": measure_decode})
