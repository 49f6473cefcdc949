"""A client of a running CLaaS server (``claas ... --url URL``).

It speaks the server's OpenAI-style API with httpx and turns every error body
(``{"error": {"type", "message", "code"}}``) back into the core's exception
class, so the CLI reports a remote failure exactly as a local one.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import httpx

from claas import errors
from claas.storage import split_adapter_id
from claas_cli.client import AdapterSummary, Answer, Messages, TextSink, Update, VersionInfo

__all__ = ["RemoteClient", "error_from_body"]

_ERROR_CLASSES: dict[str, type[errors.ClaasError]] = {
    re.sub(r"(?<!^)(?=[A-Z])", "_", name).lower(): getattr(errors, name) for name in errors.__all__
}
_BY_STATUS: dict[int, type[errors.ClaasError]] = {
    400: errors.InvalidRequest,
    401: errors.PermissionDenied,
    403: errors.PermissionDenied,
    404: errors.NotFound,
    409: errors.Conflict,
    413: errors.PayloadTooLarge,
    422: errors.InvalidRequest,
    503: errors.BackendUnavailable,
}


def error_from_body(status: int, body: Any) -> errors.ClaasError:
    """The core exception an error response stands for.

    The server names the exception class in ``error.code`` (snake case); an
    unknown code falls back to the class of the HTTP status.
    """
    detail = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(detail, Mapping):
        detail = {}
    message = str(detail.get("message") or f"the server answered HTTP {status}")
    cls = _ERROR_CLASSES.get(str(detail.get("code")))
    if cls is None:
        cls = _BY_STATUS.get(status, errors.ClaasError)
        if status == 401:
            message = f"authentication failed: {message} (give --api-key or CLAAS_API_KEY)"
    return cls(message)


def _numbers(values: Mapping[str, Any] | None) -> dict[str, float]:
    """Drop the nulls the server sends for non-finite metrics."""
    return {k: float(v) for k, v in (values or {}).items() if v is not None}


def _version_info(data: Mapping[str, Any]) -> VersionInfo:
    return VersionInfo(
        adapter_id=data["adapter_id"],
        version=data["version"],
        parent=data["parent"],
        created=data["created"],
        live=data["live"],
        base_model=data["base_model"],
        feedback_ids=tuple(data["feedback_ids"]),
        metrics=_numbers(data["metrics"]),
    )


def _update(data: Mapping[str, Any]) -> Update:
    return Update(
        adapter_id=data["adapter_id"],
        version=data["version"],
        parent_version=data["parent_version"],
        feedback_ids=tuple(data["feedback_ids"]),
        metrics=_numbers(data["metrics"]),
        timings=_numbers(data["timings"]),
    )


class RemoteClient:
    """A :class:`~claas_cli.client.Client` over HTTP.

    Args:
        url: The server's base URL, e.g. ``http://127.0.0.1:8000``.
        api_key: Sent as ``Authorization: Bearer`` when given.
        timeout: Seconds to wait for a response (an update can take a while).
        transport: An httpx transport to use instead of the network (tests).

    Raises:
        InvalidRequest: If ``url`` is not an http(s) URL.
    """

    def __init__(
        self,
        url: str,
        *,
        api_key: str | None = None,
        timeout: float = 600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not re.match(r"^https?://[^/\s]+", url):
            raise errors.InvalidRequest(f"--url {url!r} is not an http:// or https:// URL")
        self.url = url.rstrip("/")
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )

    # -- transport ------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        self._raise_for_error(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise errors.BackendUnavailable(
                f"{self.url}{path} did not answer with JSON; is it a CLaaS server?"
            ) from exc

    def _unreachable(self, exc: httpx.TransportError) -> errors.BackendUnavailable:
        return errors.BackendUnavailable(f"cannot reach the CLaaS server at {self.url}: {exc}")

    @staticmethod
    def _raise_for_error(response: httpx.Response) -> None:
        if response.status_code < 400:
            return
        response.read()
        try:
            body = response.json()
        except ValueError:
            body = None
        raise error_from_body(response.status_code, body)

    @staticmethod
    def _adapter_path(adapter_id: str, *rest: str) -> str:
        namespace, name = split_adapter_id(adapter_id)
        return "/".join(("/v1/adapters", namespace, name, *rest))

    # -- chat and feedback ----------------------------------------------------------------

    def chat(
        self,
        adapter_id: str,
        messages: Messages,
        *,
        on_text: TextSink | None = None,
        **sampling: Any,
    ) -> Answer:
        """``POST /v1/chat/completions``, streamed when ``on_text`` is given."""
        body = {"model": adapter_id, "messages": list(messages), **sampling}
        if on_text is not None:
            return self._chat_stream(adapter_id, body, on_text)
        data = self._json("POST", "/v1/chat/completions", json=body)
        choice = data["choices"][0]
        return Answer(
            id=data["id"],
            text=choice["message"]["content"],
            adapter_id=adapter_id,
            adapter_version=data["adapter_version"],
            finish_reason=choice["finish_reason"],
        )

    def _chat_stream(self, adapter_id: str, body: dict[str, Any], on_text: TextSink) -> Answer:
        parts: list[str] = []
        meta: dict[str, Any] = {}
        try:
            with self._http.stream(
                "POST", "/v1/chat/completions", json={**body, "stream": True}
            ) as response:
                self._raise_for_error(response)
                for chunk in _events(response.iter_lines()):
                    if "error" in chunk:
                        raise error_from_body(500, chunk)
                    meta.update(id=chunk["id"], adapter_version=chunk["adapter_version"])
                    for choice in chunk["choices"]:
                        text = choice["delta"].get("content")
                        if text:
                            parts.append(text)
                            on_text(text)
                        if choice.get("finish_reason"):
                            meta["finish_reason"] = choice["finish_reason"]
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if "finish_reason" not in meta:
            raise errors.BackendUnavailable("the server ended the stream before the answer")
        return Answer(
            id=meta["id"],
            text="".join(parts),
            adapter_id=adapter_id,
            adapter_version=meta["adapter_version"],
            finish_reason=meta["finish_reason"],
        )

    def feedback(
        self, completion_id: str, text: str, *, config: Mapping[str, Any] | None = None
    ) -> Update:
        """``POST /v1/feedback`` by completion id."""
        body: dict[str, Any] = {"completion_id": completion_id, "feedback": text}
        if config:
            body["config"] = dict(config)
        return _update(self._json("POST", "/v1/feedback", json=body))

    def feedback_raw(
        self,
        adapter_id: str,
        messages: Messages,
        response: str,
        text: str,
        *,
        config: Mapping[str, Any] | None = None,
    ) -> Update:
        """``POST /v1/feedback`` with the conversation and response as text."""
        body: dict[str, Any] = {
            "adapter_id": adapter_id,
            "messages": list(messages),
            "response": response,
            "feedback": text,
        }
        if config:
            body["config"] = dict(config)
        return _update(self._json("POST", "/v1/feedback", json=body))

    # -- adapters -------------------------------------------------------------------------

    def init_adapter(
        self,
        adapter_id: str,
        *,
        rank: int,
        alpha: float,
        dropout: float,
        target_modules: Sequence[str] | None,
        exist_ok: bool,
    ) -> VersionInfo:
        """``POST /v1/adapters``."""
        body = {
            "adapter_id": adapter_id,
            "rank": rank,
            "alpha": alpha,
            "dropout": dropout,
            "target_modules": list(target_modules) if target_modules else None,
            "exist_ok": exist_ok,
        }
        return _version_info(self._json("POST", "/v1/adapters", json=body))

    def adapters(self, namespace: str | None = None) -> list[AdapterSummary]:
        """``GET /v1/adapters``."""
        params = {"namespace": namespace} if namespace else None
        data = self._json("GET", "/v1/adapters", params=params)["data"]
        return [
            AdapterSummary(
                adapter_id=item["id"],
                live_version=item["live_version"],
                versions=item["versions"],
                base_model=item["base_model"],
                updated=item["created"],
            )
            for item in data
        ]

    def delete_adapter(self, adapter_id: str) -> None:
        """``DELETE /v1/adapters/{ns}/{name}``."""
        self._send("DELETE", self._adapter_path(adapter_id))

    def versions(self, adapter_id: str) -> list[VersionInfo]:
        """``GET /v1/adapters/{ns}/{name}/versions``."""
        data = self._json("GET", self._adapter_path(adapter_id, "versions"))
        return [_version_info(item) for item in data["data"]]

    def rollback(self, adapter_id: str, version: int) -> VersionInfo:
        """``POST /v1/adapters/{ns}/{name}/rollback``."""
        path = self._adapter_path(adapter_id, "rollback")
        return _version_info(self._json("POST", path, json={"version": version}))

    def export(self, adapter_id: str, version: int | None, dest: Path) -> Path:
        """``GET /v1/adapters/{ns}/{name}/export``, saved like the local store saves it.

        ``dest`` is an existing directory (the server's file name is kept) or
        the path of the zip file to write.
        """
        params = {"version": version} if version is not None else None
        response = self._send("GET", self._adapter_path(adapter_id, "export"), params=params)
        if dest.is_dir():
            namespace, name = split_adapter_id(adapter_id)
            dest = dest / _attachment_name(response, f"{namespace}__{name}.zip")
        dest.parent.mkdir(parents=True, exist_ok=True)
        tmp = dest.with_name(f".{dest.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_bytes(response.content)
            os.replace(tmp, dest)
        finally:
            tmp.unlink(missing_ok=True)
        return dest

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> RemoteClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _events(lines: Iterator[str]) -> Iterator[dict[str, Any]]:
    """The JSON payloads of server-sent ``data:`` lines, up to ``[DONE]``."""
    for line in lines:
        if not line.startswith("data:"):
            continue
        payload = line[len("data:") :].strip()
        if payload == "[DONE]":
            return
        yield json.loads(payload)


def _attachment_name(response: httpx.Response, fallback: str) -> str:
    """The file name in Content-Disposition, reduced to a bare name."""
    found = re.search(r'filename="?([^";]+)"?', response.headers.get("content-disposition", ""))
    name = Path(found.group(1)).name if found else ""
    return name if name.endswith(".zip") and not name.startswith(".") else fallback
