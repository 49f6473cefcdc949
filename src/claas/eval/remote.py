"""Drive a running CLaaS server over HTTP (``engine: remote``).

The target is a :class:`~claas.eval.targets.LearnerTarget` around a
:class:`claas.Client`, so the eval runs exactly the code it runs in process,
through the public API users get. Errors come back as the matching
:mod:`claas.errors` class. The server draws the LoRA initialisation itself, so
``seed`` fixes sampling but not the adapter's start.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from claas.eval.targets import LearnerTarget

if TYPE_CHECKING:
    import httpx

__all__ = ["RemoteTarget"]


class RemoteTarget(LearnerTarget):
    """An :class:`~claas.eval.targets.EvalTarget` over a CLaaS server's HTTP API.

    Args:
        url: The server's base URL, e.g. ``http://127.0.0.1:8000``.
        api_key: Bearer key, when the server requires one.
        timeout: Seconds per request (a feedback call waits for the update).
        lora: LoRA shape of the adapters created (``rank``, ``alpha``...).
        transport: An httpx transport to use instead of the network (tests).

    Raises:
        MissingDependency: If httpx is not installed.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        lora: Mapping[str, Any] | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        from claas.client import Client

        client = Client(url, api_key, timeout=timeout, transport=transport)
        super().__init__(client, lora=lora, owns_learner=True)
