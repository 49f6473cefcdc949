"""What every route needs: the learner, the caller, and small conversions."""

from __future__ import annotations

import math
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Annotated, Any

import attrs
from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from claas import Learner, Settings
from claas_server.auth import KeyRing, Principal
from claas_server.metrics import Metrics

__all__ = ["Caller", "ServerState", "State", "finite", "resolve_model"]


@attrs.define
class ServerState:
    """Everything the routes share, kept on ``app.state.claas``."""

    settings: Settings
    learner: Learner
    keyring: KeyRing
    metrics: Metrics
    stream_executor: ThreadPoolExecutor
    owns_learner: bool


def get_state(request: Request) -> ServerState:
    """The app's shared state."""
    state: ServerState = request.app.state.claas
    return state


_bearer = HTTPBearer(
    auto_error=False,
    description="An API key from CLAAS_API_KEYS (not needed when none are configured).",
)


def get_principal(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> Principal:
    """Authenticate the bearer key (raises ``Unauthorized``)."""
    token = credentials.credentials if credentials is not None else None
    return get_state(request).keyring.authenticate(token)


State = Annotated[ServerState, Depends(get_state)]
Caller = Annotated[Principal, Depends(get_principal)]


def resolve_model(model: str, caller: Principal, settings: Settings) -> str | None:
    """The adapter id a ``model`` field names, or ``None`` for the base model.

    Raises:
        InvalidAdapterId: Neither the base model nor a valid adapter id.
        PermissionDenied: The caller may not use the adapter's namespace.
    """
    if model in ("base", settings.base_model):
        return None
    return caller.require(model)


def finite(values: Mapping[str, Any]) -> dict[str, float | None]:
    """A metrics mapping safe for JSON: non-finite or non-numeric values become ``None``."""
    out: dict[str, float | None] = {}
    for key, value in values.items():
        ok = isinstance(value, (int, float)) and not isinstance(value, bool)
        out[str(key)] = float(value) if ok and math.isfinite(value) else None
    return out


def store_relative(state: ServerState, text: str) -> str:
    """``text`` with the adapter store's directory left out: the caller needs not know it."""
    return text.replace(f"{state.learner.settings.adapters_dir}/", "")
