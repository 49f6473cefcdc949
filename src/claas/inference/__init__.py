"""Inference backends: ``local`` (transformers), ``vllm`` (HTTP), ``tinker``."""

from claas.inference.base import Generation, InferenceBackend, StreamDelta, TeacherTopKLists

__all__ = ["Generation", "InferenceBackend", "StreamDelta", "TeacherTopKLists"]
