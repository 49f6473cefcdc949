"""The learner's heavy parts, built on first use: backend, engine, tokenizer.

Kept apart from the use cases so that the update machinery and the learner
share one lazily built set, and building one never loads another.
"""

from __future__ import annotations

import threading

from claas.config import Settings
from claas.errors import InvalidConfig
from claas.inference.base import HasTokenizer, InferenceBackend
from claas.registry import create_backend, create_engine
from claas.teacher import ChatTokenizer
from claas.training.base import TrainingEngine

__all__ = ["Components"]


class Components:
    """The inference backend, training engine and tokenizer of one learner."""

    def __init__(
        self,
        settings: Settings,
        *,
        inference: InferenceBackend | None,
        engine: TrainingEngine | None,
        tokenizer: ChatTokenizer | None,
    ) -> None:
        self._settings = settings
        self._inference = inference
        self._engine = engine
        if inference is not None:
            _refuse_unless(inference, InferenceBackend)
        if engine is not None:
            _refuse_unless(engine, TrainingEngine)
        self._tokenizer = tokenizer
        self._lock = threading.Lock()

    @property
    def inference(self) -> InferenceBackend:
        """The inference backend the settings name (or the one given)."""
        if self._inference is None:
            with self._lock:
                if self._inference is None:
                    built = create_backend(self._settings)
                    _refuse_unless(built, InferenceBackend)
                    self._inference = built
        return self._inference

    @property
    def built_inference(self) -> InferenceBackend | None:
        """The backend if it exists yet: nothing to publish to or retire otherwise."""
        return self._inference

    @property
    def engine(self) -> TrainingEngine:
        """The training engine the settings name (or the one given)."""
        if self._engine is None:
            with self._lock:
                if self._engine is None:
                    engine = create_engine(self._settings)
                    _refuse_unless(engine, TrainingEngine)
                    self._engine = engine
        return self._engine

    @property
    def tokenizer(self) -> ChatTokenizer:
        """The base model's tokenizer (the backend's own when it holds one)."""
        if self._tokenizer is None:
            if isinstance(self.inference, HasTokenizer):
                self._tokenizer = self.inference.tokenizer
            else:
                from claas.models import load_tokenizer

                self._tokenizer = load_tokenizer(
                    self._settings.base_model, models_dir=self._settings.models_dir
                )
        return self._tokenizer

    def close(self) -> None:
        """Release the backend and the engine, if they were built."""
        if self._inference is not None:
            self._inference.close()
        if self._engine is not None:
            self._engine.close()


def _refuse_unless(part: object, protocol: type) -> None:
    """Refuse ``part`` now if it lacks a member of its protocol (not mid-update later)."""
    if not isinstance(part, protocol):
        declared = {*protocol.__annotations__, *(n for n in vars(protocol) if n[0] != "_")}
        raise InvalidConfig(
            f"{type(part).__name__} is not a {protocol.__name__}: it must provide "
            f"{', '.join(sorted(declared))} (see {protocol.__module__})"
        )
