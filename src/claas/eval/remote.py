"""Drive a running CLaaS server over HTTP (``engine: remote``).

Only the public API is used, so the eval measures exactly what users get:

==================================================  ===================================
``POST /v1/adapters``                               create the run's adapter
``DELETE /v1/adapters/{ns}/{name}``                 drop it before a fresh start
``GET /v1/adapters/{ns}/{name}``                    its live version (for resuming)
``POST /v1/adapters/{ns}/{name}/rollback``          back to the last recorded step
``POST /v1/chat/completions`` (``model`` = adapter)  answers; ``id`` names the completion
``POST /v1/feedback`` (``items``)                   one update from a step's answers
``POST /v1/score``                                  logprobs for margins and drift
==================================================  ===================================

Errors come back as ``{"error": {"code": "adapter_not_found", ...}}`` and are
raised as the matching :mod:`claas.errors` class. The server draws the LoRA
initialisation itself, so ``seed`` fixes sampling but not the adapter's start.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping, Sequence
from typing import Any

import claas.errors as errors
from claas.errors import (
    AdapterNotFound,
    BackendUnavailable,
    ClaasError,
    Conflict,
    InvalidRequest,
    NotFound,
    PermissionDenied,
    missing_extra,
)
from claas.eval.targets import Sample

__all__ = ["RemoteTarget"]

_BY_STATUS: dict[int, type[ClaasError]] = {
    400: InvalidRequest,
    401: PermissionDenied,
    403: PermissionDenied,
    404: NotFound,
    409: Conflict,
    413: errors.PayloadTooLarge,
    422: InvalidRequest,
    503: BackendUnavailable,
}


def _error_class(status: int, code: str | None) -> type[ClaasError]:
    if code:
        name = "".join(part.capitalize() for part in code.split("_"))
        found = getattr(errors, name, None)
        if isinstance(found, type) and issubclass(found, ClaasError):
            return found
    return _BY_STATUS.get(status, ClaasError)


class RemoteTarget:
    """An :class:`~claas.eval.targets.EvalTarget` over a CLaaS server's HTTP API.

    Args:
        url: The server's base URL, e.g. ``http://127.0.0.1:8000``.
        api_key: Bearer key, when the server requires one.
        timeout: Seconds per request (a feedback call waits for the update).
        lora: LoRA shape of the adapters created (``rank``, ``alpha``...).
        client: An ``httpx.Client`` to use instead (tests pass one bound to an app).
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        lora: Mapping[str, Any] | None = None,
        client: Any = None,
    ) -> None:
        try:
            import httpx
        except ImportError as exc:
            raise missing_extra("httpx", "eval") from exc
        self._httpx = httpx
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self.lora = dict(lora or {})
        self._client = client or httpx.Client(
            base_url=url.rstrip("/"), headers=headers, timeout=timeout
        )
        if client is not None and headers:
            self._client.headers.update(headers)

    def _request(self, method: str, path: str, body: Any = None) -> dict[str, Any]:
        try:
            response = self._client.request(method, path, json=body)
        except self._httpx.HTTPError as exc:
            raise BackendUnavailable(f"{method} {path} failed: {exc}") from exc
        try:
            data = response.json() if response.content else {}
        except ValueError as exc:
            raise BackendUnavailable(
                f"{method} {path}: HTTP {response.status_code} with a non-JSON body"
            ) from exc
        if response.status_code >= 400:
            detail = data.get("error", {}) if isinstance(data, dict) else {}
            message = detail.get("message") or f"HTTP {response.status_code}"
            cls = _error_class(response.status_code, detail.get("code"))
            raise cls(f"{method} {path}: {message}")
        return data if isinstance(data, dict) else {"data": data}

    def reset_adapter(self, adapter_id: str, *, seed: int) -> int:
        """Delete the adapter if it exists and create it afresh (``seed`` is not sent)."""
        with contextlib.suppress(NotFound):
            self._request("DELETE", f"/v1/adapters/{adapter_id}")
        created = self._request("POST", "/v1/adapters", {"adapter_id": adapter_id, **self.lora})
        return int(created["version"])

    def current_version(self, adapter_id: str) -> int:
        """The adapter's live version."""
        try:
            return int(self._request("GET", f"/v1/adapters/{adapter_id}")["live_version"])
        except NotFound as exc:
            raise AdapterNotFound(str(exc)) from exc

    def rollback(self, adapter_id: str, version: int) -> None:
        """Serve ``version`` again."""
        self._request("POST", f"/v1/adapters/{adapter_id}/rollback", {"version": version})

    def chat(
        self,
        adapter_id: str,
        prompt: str,
        *,
        max_tokens: int,
        temperature: float,
        seed: int | None,
        top_logprobs: int = 0,
    ) -> Sample:
        """One chat completion with token logprobs."""
        body: dict[str, Any] = {
            "model": adapter_id,
            "messages": [{"role": "user", "content": prompt}],
            "max_tokens": max_tokens,
            "temperature": temperature,
            "logprobs": True,
        }
        if seed is not None:
            body["seed"] = seed
        if top_logprobs:
            body["top_logprobs"] = top_logprobs
        data = self._request("POST", "/v1/chat/completions", body)
        choice = data["choices"][0]
        content = (choice.get("logprobs") or {}).get("content") or []
        return Sample(
            completion_id=data["id"],
            text=choice["message"]["content"],
            n_tokens=int(data["usage"]["completion_tokens"]),
            logprobs=tuple(float(t["logprob"]) for t in content),
            top_logprobs=tuple(
                tuple(float(alt["logprob"]) for alt in t.get("top_logprobs") or ())
                for t in content
                if t.get("top_logprobs")
            ),
            version=data.get("adapter_version"),
        )

    def feedback(
        self, adapter_id: str, completion_ids: Sequence[str], text: str, config: Mapping[str, Any]
    ) -> tuple[int, dict[str, float]]:
        """All completions with the same feedback, as one update."""
        body = {
            "adapter_id": adapter_id,
            "items": [{"completion_id": cid, "feedback": text} for cid in completion_ids],
            "config": dict(config),
        }
        data = self._request("POST", "/v1/feedback", body)
        metrics = {k: float(v) for k, v in (data.get("metrics") or {}).items() if v is not None}
        return int(data["version"]), metrics

    def score(self, adapter_id: str, prompt: str, response: str) -> list[float]:
        """Per-token logprobs of ``response`` (a non-finite one comes back as ``-inf``)."""
        body = {
            "model": adapter_id,
            "messages": [{"role": "user", "content": prompt}],
            "response": response,
        }
        data = self._request("POST", "/v1/score", body)
        return [float("-inf") if lp is None else float(lp) for lp in data["logprobs"]]

    def close(self) -> None:
        """Close the HTTP client."""
        self._client.close()
