"""Name → factory maps, so configuration picks a backend or engine by name.

Third-party code can register its own: ``register_backend("mine", factory)``,
where the factory takes the :class:`~claas.config.Settings`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from claas.config import Settings
from claas.errors import InvalidConfig

__all__ = ["create_backend", "create_engine", "register_backend", "register_engine"]

Factory = Callable[[Settings], Any]


def _local_backend(settings: Settings) -> Any:
    from claas.inference.local import LocalInference

    return LocalInference(settings)


def _vllm_backend(settings: Settings) -> Any:
    from claas.inference.vllm import VLLMInference

    return VLLMInference(settings)


def _tinker_backend(settings: Settings) -> Any:
    from claas.inference.tinker import TinkerInference

    return TinkerInference(settings)


def _fake_backend(settings: Settings) -> Any:
    from claas.testing import FakeInference

    return FakeInference()


def _local_engine(settings: Settings) -> Any:
    from claas.training.local import LocalTrainer

    return LocalTrainer(settings)


def _tinker_engine(settings: Settings) -> Any:
    from claas.training.tinker import TinkerTrainer

    return TinkerTrainer(settings)


def _modal_engine(settings: Settings) -> Any:
    from claas.training.modal import ModalTrainer

    return ModalTrainer(settings)


def _fake_engine(settings: Settings) -> Any:
    from claas.testing import FakeTrainer

    return FakeTrainer()


_BACKENDS: dict[str, Factory] = {
    "local": _local_backend,
    "vllm": _vllm_backend,
    "tinker": _tinker_backend,
    "fake": _fake_backend,
}
_ENGINES: dict[str, Factory] = {
    "local": _local_engine,
    "tinker": _tinker_engine,
    "modal": _modal_engine,
    "fake": _fake_engine,
}


def register_backend(name: str, factory: Factory) -> None:
    """Make ``Settings(inference_backend=name)`` build a backend with ``factory``."""
    _BACKENDS[name] = factory


def register_engine(name: str, factory: Factory) -> None:
    """Make ``Settings(training_engine=name)`` build an engine with ``factory``."""
    _ENGINES[name] = factory


def create_backend(settings: Settings) -> Any:
    """Build the inference backend the settings name."""
    try:
        factory = _BACKENDS[settings.inference_backend]
    except KeyError:
        raise InvalidConfig(f"no inference backend named {settings.inference_backend!r}") from None
    return factory(settings)


def create_engine(settings: Settings) -> Any:
    """Build the training engine the settings name."""
    try:
        factory = _ENGINES[settings.training_engine]
    except KeyError:
        raise InvalidConfig(f"no training engine named {settings.training_engine!r}") from None
    return factory(settings)
