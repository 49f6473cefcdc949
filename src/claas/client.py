"""``Client``: the Learner's use cases over HTTP, against a running CLaaS server.

::

    from claas import Client

    with Client("http://127.0.0.1:8080", api_key="...") as client:
        client.init_adapter("me/assistant", exist_ok=True)
        answer = client.chat("me/assistant", [{"role": "user", "content": "Hi"}])
        client.feedback(answer.id, "Shorter.")  # returns once the new version serves
        job = client.submit_feedback(answer.id, "No emojis.")  # returns at once
        client.wait(job.id, timeout=60)

It has the methods, arguments and return types of :class:`claas.Learner` (both
are a :class:`claas.LearnerLike`) and raises the same :mod:`claas.errors`
classes: the server names the class in ``{"error": {"code": ...}}`` and the
core's table (:func:`claas.errors.error_for_code`) turns it back into it. A
server that cannot be reached is :class:`~claas.errors.BackendUnavailable`.
Arguments are checked here with the core's own rules before anything is sent.

Needs httpx: ``pip install 'claas[client]'``.
"""

from __future__ import annotations

import math
import os
import re
import time
import urllib.parse
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

try:
    import httpx
except ImportError as exc:  # the optional extra is not installed
    from claas.errors import missing_extra

    raise missing_extra("httpx", "client") from exc

from claas._client_followups import FollowupCalls
from claas._client_guard import GuardCalls
from claas._client_wire import (
    AUTH_FAILED,
    attachment_name,
    completion_from,
    error_from,
    event_from,
    feedback_body,
    floats,
    job_from,
    sse_events,
    stream_error,
    summary_from,
    version_from,
    wire_messages,
)
from claas.errors import (
    BackendUnavailable,
    InvalidRequest,
    StorageError,
)
from claas.jobs.model import JOB_STATUSES, FeedbackJob, JobStatus, check_idempotency_key
from claas.jobs.service import result_of
from claas.learner_like import MessagesLike
from claas.records import FeedbackEvent
from claas.results import ChatStream, Score
from claas.tools import pop_tools
from claas.types import (
    AdapterSummary,
    AdapterVersion,
    Completion,
    DistillConfig,
    Feedback,
    FeedbackResult,
    LoraSpec,
    SamplingParams,
    feedback_item,
    split_adapter_id,
)

__all__ = ["AUTH_FAILED", "Client"]

_LORA = LoraSpec()

_URL = re.compile(r"^https?://[^/\s]+")
_MAX_POLL = 60.0  # the server's longest long poll (GET /v1/feedback/{id}?wait=)
_MAX_LIST = 500  # the server's largest page of jobs or events


class Client(FollowupCalls, GuardCalls):
    """A CLaaS server's use cases as plain calls, like :class:`claas.Learner`'s.

    Args:
        url: The server's base URL, e.g. ``http://127.0.0.1:8080``.
        api_key: Sent as ``Authorization: Bearer <key>`` when given.
        timeout: Seconds to wait for a response (a feedback call waits for the update).
        transport: An httpx transport to use instead of the network (tests).

    Raises:
        InvalidRequest: If ``url`` is not an http(s) URL.
        MissingDependency: If httpx is not installed (the ``client`` extra).
    """

    def __init__(
        self,
        url: str,
        api_key: str | None = None,
        *,
        timeout: float = 600.0,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        if not isinstance(url, str) or not _URL.match(url):
            raise InvalidRequest(f"{url!r} is not an http:// or https:// URL")
        self.url = url.rstrip("/")
        # A long poll must end well within the read timeout, or it would look like a dead server.
        self._poll = max(0.5, min(_MAX_POLL, timeout / 2))
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._http = httpx.Client(
            base_url=self.url,
            headers=headers,
            timeout=httpx.Timeout(timeout, connect=10.0),
            transport=transport,
        )

    def __repr__(self) -> str:
        return f"Client({self.url!r})"

    # -- transport ------------------------------------------------------------------------

    def _send(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            raise error_from(response)
        return response

    def _json(self, method: str, path: str, **kwargs: Any) -> Any:
        response = self._send(method, path, **kwargs)
        try:
            return response.json()
        except ValueError as exc:
            raise BackendUnavailable(
                f"{self.url}{path} did not answer with JSON; is it a CLaaS server?"
            ) from exc

    def _unreachable(self, exc: httpx.TransportError) -> BackendUnavailable:
        return BackendUnavailable(f"cannot reach the CLaaS server at {self.url}: {exc}")

    @staticmethod
    def _adapter_path(adapter_id: str, *rest: str) -> str:
        namespace, name = split_adapter_id(adapter_id)
        return "/".join(("/v1/adapters", namespace, name, *rest))

    @staticmethod
    def _job_path(job_id: str) -> str:
        if not isinstance(job_id, str) or not job_id:
            raise InvalidRequest("job_id must be a non-empty string")
        return f"/v1/feedback/{urllib.parse.quote(job_id, safe='')}"

    # -- adapters -------------------------------------------------------------------------

    def init_adapter(
        self,
        adapter_id: str,
        *,
        rank: int = _LORA.rank,
        alpha: float = _LORA.alpha,
        dropout: float = _LORA.dropout,
        target_modules: Sequence[str] = _LORA.target_modules,
        exist_ok: bool = False,
        learn_from_followups: bool | None = None,
    ) -> AdapterVersion:
        """Create an adapter whose version 0 equals the base model (``POST /v1/adapters``).

        ``learn_from_followups``: as :meth:`claas.Learner.init_adapter`.

        Raises:
            InvalidAdapterId: If the id is not ``namespace/name``.
            AdapterExists: If it exists and ``exist_ok`` is false.
            InvalidConfig: If the LoRA shape is invalid.
        """
        split_adapter_id(adapter_id)
        lora = LoraSpec(rank=rank, alpha=alpha, dropout=dropout, target_modules=target_modules)
        body = {
            "adapter_id": adapter_id,
            **lora.to_dict(),
            "exist_ok": exist_ok,
            "learn_from_followups": learn_from_followups,
        }
        return version_from(self._json("POST", "/v1/adapters", json=body))

    def adapters(self, namespace: str | None = None) -> list[str]:
        """Ids of the adapters the key may see (optionally of one namespace)."""
        params = {"namespace": namespace} if namespace else None
        return [item["id"] for item in self._json("GET", "/v1/adapters", params=params)["data"]]

    def adapter_summaries(self, namespaces: Collection[str] | None = None) -> list[AdapterSummary]:
        """Every adapter the key may see (optionally of some namespaces), with its live version."""
        queries = (
            [None] if namespaces is None else [{"namespace": n} for n in sorted(set(namespaces))]
        )
        return [
            summary_from(item)
            for params in queries
            for item in self._json("GET", "/v1/adapters", params=params)["data"]
        ]

    def adapter_summary(self, adapter_id: str) -> AdapterSummary:
        """One adapter with its live version (``live=None`` and ``error`` if it is damaged)."""
        return summary_from(self._json("GET", self._adapter_path(adapter_id)))

    def versions(self, adapter_id: str) -> list[AdapterVersion]:
        """Every retained version of an adapter, oldest first.

        ``path`` of a version is empty: its files live on the server.
        """
        data = self._json("GET", self._adapter_path(adapter_id, "versions"))
        return [version_from(item) for item in data["data"]]

    def current_version(self, adapter_id: str) -> AdapterVersion:
        """The version chats are served by."""
        summary = self.adapter_summary(adapter_id)
        if summary.live is None:  # as the Learner: a damaged pointer is a StorageError
            raise StorageError(summary.error or f"adapter {adapter_id!r} has no live version")
        return summary.live

    def rollback(self, adapter_id: str, version: int, *, force: bool = False) -> AdapterVersion:
        """Serve an older version again (a version the guard rejected needs ``force``)."""
        path = self._adapter_path(adapter_id, "rollback")
        return version_from(self._json("POST", path, json={"version": version, "force": force}))

    def export(
        self, adapter_id: str, version: int | None = None, dest: str | os.PathLike[str] = "."
    ) -> Path:
        """Download a zip of one version (default: the live one) and return its path.

        ``dest`` is an existing directory (the server's file name is kept) or the
        path of the zip file to write (missing parents are created).
        """
        params = {"version": version} if version is not None else None
        response = self._send("GET", self._adapter_path(adapter_id, "export"), params=params)
        target = Path(dest)
        if target.is_dir():
            namespace, name = split_adapter_id(adapter_id)
            target = target / attachment_name(response, f"{namespace}__{name}.zip")
        target.parent.mkdir(parents=True, exist_ok=True)
        tmp = target.with_name(f".{target.name}.{uuid.uuid4().hex}.tmp")
        try:
            tmp.write_bytes(response.content)
            os.replace(tmp, target)
        finally:
            tmp.unlink(missing_ok=True)
        return target

    def delete_adapter(self, adapter_id: str) -> None:
        """Delete an adapter and all its versions (records of feedback stay)."""
        self._send("DELETE", self._adapter_path(adapter_id))

    # -- chat -----------------------------------------------------------------------------

    def _chat_body(
        self, adapter_id: str | None, messages: MessagesLike, sampling: Mapping[str, Any]
    ) -> dict[str, Any]:
        if adapter_id is not None and adapter_id != "base":
            split_adapter_id(adapter_id)
        options = dict(sampling)
        tools = pop_tools(options)
        SamplingParams.from_kwargs(**options)  # the core's checks, before sending
        body: dict[str, Any] = {
            "model": adapter_id or "base",
            "messages": wire_messages(messages),
            **{k: v for k, v in options.items() if v is not None},
        }
        if tools is not None:
            body.update(tools=list(tools.definitions), tool_choice=tools.choice)
        if body.get("top_logprobs"):
            body["logprobs"] = True
        return body

    def chat(self, adapter_id: str | None, messages: MessagesLike, **sampling: Any) -> Completion:
        """Answer a conversation with the adapter's live version (``None``: the base model).

        Args:
            adapter_id: ``namespace/name``, or ``None`` for the base model.
            messages: OpenAI-style ``{"role", "content"}`` dicts or ChatMessages.
            **sampling: ``max_tokens``, ``temperature`` (0 = greedy), ``top_p``,
                ``top_k``, ``seed``, ``stop``, ``top_logprobs``; and ``tools``
                (:class:`claas.tools.Tools`) to offer the model.

        Returns:
            The recorded :class:`~claas.types.Completion`, exact tokens included.

        Raises:
            AdapterNotFound: If the adapter does not exist.
            InvalidRequest: On malformed messages or sampling options.
            PayloadTooLarge: If the prompt exceeds the server's limit.
        """
        body = self._chat_body(adapter_id, messages, sampling)
        answer = self._json("POST", "/v1/chat/completions", json=body)
        return self.get_completion(answer["id"])

    def chat_stream(
        self, adapter_id: str | None, messages: MessagesLike, **sampling: Any
    ) -> ChatStream:
        """Like :meth:`chat`, but yield text as the server streams it.

        Errors in the request are raised here, before any text; iterate the
        stream to its end to release the connection and set ``completion``.
        """
        body = {**self._chat_body(adapter_id, messages, sampling), "stream": True}
        request = self._http.build_request("POST", "/v1/chat/completions", json=body)
        try:
            response = self._http.send(request, stream=True)
        except httpx.TransportError as exc:
            raise self._unreachable(exc) from exc
        if response.status_code >= 400:
            response.read()
            response.close()
            raise error_from(response)
        events = sse_events(response.iter_lines())
        head = next(events, None)
        if head is None or "error" in head:
            response.close()
            raise stream_error(head)

        def deltas() -> Iterator[str]:
            finished = False
            try:
                for chunk in events:
                    if "error" in chunk:
                        raise stream_error(chunk)
                    for choice in chunk["choices"]:
                        if choice["delta"].get("content"):
                            yield choice["delta"]["content"]
                        finished = finished or bool(choice.get("finish_reason"))
            except httpx.TransportError as exc:
                raise self._unreachable(exc) from exc
            finally:
                response.close()
            if not finished:
                raise BackendUnavailable("the server ended the stream before the answer")
            stream.completion = self.get_completion(stream.id)

        stream = ChatStream(head["id"], head["adapter_version"], deltas())
        return stream

    def get_completion(self, completion_id: str) -> Completion:
        """A recorded completion, with its exact tokens (raises ``CompletionNotFound``)."""
        if not isinstance(completion_id, str) or not completion_id:
            raise InvalidRequest("completion_id must be a non-empty string")
        path = f"/v1/chat/completions/{urllib.parse.quote(completion_id, safe='')}"
        return completion_from(self._json("GET", path))

    def score(self, adapter_id: str | None, messages: MessagesLike, response: str) -> Score:
        """Logprobs of ``response`` as the answer to ``messages`` under the live version.

        A non-finite logprob comes back as ``-inf``.
        """
        body = {
            "model": adapter_id or "base",
            "messages": wire_messages(messages),
            "response": response,
        }
        data = self._json("POST", "/v1/score", json=body)
        return Score(
            adapter_id=data["adapter_id"],
            adapter_version=data["adapter_version"],
            token_ids=tuple(data["token_ids"]),
            logprobs=tuple(-math.inf if lp is None else float(lp) for lp in data["logprobs"]),
        )

    # -- feedback -------------------------------------------------------------------------

    def feedback(
        self,
        completion_id: str | None = None,
        text: str | None = None,
        *,
        config: DistillConfig | Mapping[str, Any] | None = None,
        messages: MessagesLike | None = None,
        response: str | None = None,
        adapter_id: str | None = None,
    ) -> FeedbackResult:
        """Learn from text feedback on one response; return once the new version serves.

        Give ``completion_id`` (from :meth:`chat`), or ``messages``, ``response``
        and ``adapter_id`` when the response was not served by CLaaS.

        Raises:
            InvalidRequest: Empty feedback, bad config, or missing arguments.
            CompletionNotFound: Unknown completion id.
            AdapterNotFound: The adapter does not exist.
            NonFiniteUpdate: The update diverged; nothing was published.
        """
        item = feedback_item(completion_id, text, messages, response)
        return self.feedback_batch([item], adapter_id=adapter_id, config=config)

    def feedback_batch(
        self,
        items: Sequence[Feedback],
        *,
        adapter_id: str | None = None,
        config: DistillConfig | Mapping[str, Any] | None = None,
    ) -> FeedbackResult:
        """Learn from several feedback items on one adapter in a single update."""
        body = feedback_body(items, adapter_id=adapter_id, config=config)
        data = self._json("POST", "/v1/feedback", json=body)
        return FeedbackResult(
            feedback_ids=tuple(data["feedback_ids"]),
            adapter_id=data["adapter_id"],
            version=data["version"],
            parent_version=data["parent_version"],
            metrics=floats(data["metrics"]),
            timings=floats(data["timings"]),
        )

    # -- feedback jobs --------------------------------------------------------------------

    def submit_feedback(
        self,
        completion_id: str | None = None,
        text: str | None = None,
        *,
        config: DistillConfig | Mapping[str, Any] | None = None,
        messages: MessagesLike | None = None,
        response: str | None = None,
        adapter_id: str | None = None,
        idempotency_key: str | None = None,
    ) -> FeedbackJob:
        """Record feedback on one response as a job and return it at once (``queued``).

        Takes the arguments of :meth:`feedback`; follow the job with :meth:`job`
        or :meth:`wait`.

        Args:
            idempotency_key: Makes a retry safe: the same key on the same adapter
                returns the job already recorded, whatever its state.

        Raises:
            InvalidRequest: As :meth:`feedback`, or a malformed ``idempotency_key``.
            IdempotencyConflict: The key was used with a different request.
            QueueFull: Too many jobs wait (HTTP 429); nothing was recorded.
        """
        item = feedback_item(completion_id, text, messages, response)
        return self.submit_feedback_batch(
            [item], adapter_id=adapter_id, config=config, idempotency_key=idempotency_key
        )

    def submit_feedback_batch(
        self,
        items: Sequence[Feedback],
        *,
        adapter_id: str | None = None,
        config: DistillConfig | Mapping[str, Any] | None = None,
        idempotency_key: str | None = None,
    ) -> FeedbackJob:
        """Record several items on one adapter as one job (one update); return it at once."""
        key = check_idempotency_key(idempotency_key)
        body = {**feedback_body(items, adapter_id=adapter_id, config=config), "wait": False}
        headers = {"Idempotency-Key": key} if key is not None else None
        return job_from(self._json("POST", "/v1/feedback", json=body, headers=headers))

    def job(self, job_id: str) -> FeedbackJob:
        """A feedback job as it is now (raises ``JobNotFound``)."""
        return job_from(self._json("GET", self._job_path(job_id)))

    def jobs(
        self,
        adapter_id: str | None = None,
        *,
        status: JobStatus | None = None,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[FeedbackJob]:
        """Feedback jobs the key may see, newest first (optionally of one adapter or state)."""
        if status is not None and status not in JOB_STATUSES:
            raise InvalidRequest(f"status={status!r}: must be one of {', '.join(JOB_STATUSES)}")
        params: dict[str, Any] = {
            "limit": _MAX_LIST if namespaces is not None else min(limit, _MAX_LIST)
        }
        if adapter_id is not None:
            params["adapter_id"] = adapter_id
        if status is not None:
            params["status"] = status
        found = [
            job_from(item) for item in self._json("GET", "/v1/feedback", params=params)["data"]
        ]
        if namespaces is not None:
            found = [j for j in found if j.adapter_id.split("/", 1)[0] in namespaces]
        return found[:limit]

    def wait(self, job_id: str, timeout: float | None = None) -> FeedbackJob:
        """Block until the job is final or ``timeout`` seconds pass; return it as it then is.

        Long-polls the server (a minute at most per request). Check ``.done``.
        """
        path = self._job_path(job_id)
        deadline = None if timeout is None else time.monotonic() + max(0.0, timeout)
        while True:
            left = self._poll if deadline is None else deadline - time.monotonic()
            poll = max(0.0, min(self._poll, left))
            params = {"wait": round(poll, 3)} if poll > 0 else None
            found = job_from(self._json("GET", path, params=params))
            if found.done or (deadline is not None and time.monotonic() >= deadline):
                return found

    def cancel(self, job_id: str) -> FeedbackJob:
        """Cancel a queued job; a running or finished one raises ``Conflict``."""
        return job_from(self._json("DELETE", self._job_path(job_id)))

    def result_of(self, job: FeedbackJob) -> FeedbackResult:
        """The result of an applied job; raises the error of any other state (as the Learner)."""
        return result_of(job)

    def feedback_events(
        self,
        adapter_id: str | None = None,
        *,
        namespaces: Collection[str] | None = None,
        limit: int = 50,
    ) -> list[FeedbackEvent]:
        """Recent feedback events the key may see (one per item of a job), newest first."""
        params: dict[str, Any] = {"limit": _MAX_LIST if namespaces is not None else limit}
        if adapter_id is not None:
            params["adapter_id"] = adapter_id
        data = self._json("GET", "/v1/feedback/events", params=params)["data"]
        events = [event_from(item) for item in data]
        if namespaces is not None:
            events = [e for e in events if e.adapter_id.split("/", 1)[0] in namespaces]
        return events[:limit]

    # -- lifetime -------------------------------------------------------------------------

    def close(self) -> None:
        """Close the HTTP connection pool."""
        self._http.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# ----------------------------------------------------------------------- decoding
