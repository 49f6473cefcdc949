"""Training engines: ``local`` (torch + peft), ``tinker``, ``modal``."""

from claas.training.base import TrainingEngine

__all__ = ["TrainingEngine"]
