"""Name → factory maps, so configuration picks a backend or engine by name.

The built-in names are ``local``, ``vllm`` and ``tinker`` (inference) and
``local``, ``tinker`` and ``modal`` (training). Other code adds its own in one of
two ways: ``register_backend("mine", factory)`` at run time, where the factory
takes the :class:`~claas.config.Settings`, or an entry point in the
``claas.inference_backends`` / ``claas.training_engines`` group of its package
metadata, found on first use of the name (so it works in a fresh process, e.g.
``CLAAS_INFERENCE_BACKEND=mine claas serve``). :mod:`claas.testing` provides its
``fake`` pair that way.
"""

from __future__ import annotations

from collections.abc import Callable
from importlib.metadata import entry_points
from typing import TypeVar

from claas.config import Settings
from claas.errors import InvalidConfig
from claas.inference.base import InferenceBackend
from claas.training.base import TrainingEngine

__all__ = [
    "BackendFactory",
    "EngineFactory",
    "create_backend",
    "create_engine",
    "register_backend",
    "register_engine",
]

BackendFactory = Callable[[Settings], InferenceBackend]
EngineFactory = Callable[[Settings], TrainingEngine]
_F = TypeVar("_F", BackendFactory, EngineFactory)

BACKEND_GROUP = "claas.inference_backends"
ENGINE_GROUP = "claas.training_engines"


def _local_backend(settings: Settings) -> InferenceBackend:
    from claas.inference.local import LocalInference

    return LocalInference(settings)


def _vllm_backend(settings: Settings) -> InferenceBackend:
    from claas.inference.vllm import VLLMInference

    return VLLMInference(settings)


def _tinker_backend(settings: Settings) -> InferenceBackend:
    from claas.inference.tinker import TinkerInference

    return TinkerInference(settings)


def _local_engine(settings: Settings) -> TrainingEngine:
    from claas.training.local import LocalTrainer

    return LocalTrainer(settings)


def _tinker_engine(settings: Settings) -> TrainingEngine:
    from claas.training.tinker import TinkerTrainer

    return TinkerTrainer(settings)


def _modal_engine(settings: Settings) -> TrainingEngine:
    from claas.training.modal import ModalTrainer

    return ModalTrainer(settings)


_BACKENDS: dict[str, BackendFactory] = {
    "local": _local_backend,
    "vllm": _vllm_backend,
    "tinker": _tinker_backend,
}
_ENGINES: dict[str, EngineFactory] = {
    "local": _local_engine,
    "tinker": _tinker_engine,
    "modal": _modal_engine,
}


def register_backend(name: str, factory: BackendFactory) -> None:
    """Make ``Settings(inference_backend=name)`` build a backend with ``factory``."""
    _BACKENDS[name] = factory


def register_engine(name: str, factory: EngineFactory) -> None:
    """Make ``Settings(training_engine=name)`` build an engine with ``factory``."""
    _ENGINES[name] = factory


def _factory(table: dict[str, _F], group: str, name: str, what: str) -> _F:
    if name not in table:
        found = entry_points(group=group, name=name)
        if not found:
            known = sorted({*table, *(e.name for e in entry_points(group=group))})
            raise InvalidConfig(f"no {what} named {name!r}; known: {', '.join(known)}")
        table[name] = next(iter(found)).load()
    return table[name]


def create_backend(settings: Settings) -> InferenceBackend:
    """Build the inference backend the settings name.

    Raises:
        InvalidConfig: If no backend of that name is registered.
    """
    name = settings.inference_backend
    return _factory(_BACKENDS, BACKEND_GROUP, name, "inference backend")(settings)


def create_engine(settings: Settings) -> TrainingEngine:
    """Build the training engine the settings name.

    Raises:
        InvalidConfig: If no engine of that name is registered.
    """
    name = settings.training_engine
    return _factory(_ENGINES, ENGINE_GROUP, name, "training engine")(settings)
