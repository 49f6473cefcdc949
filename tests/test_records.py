"""The records database: round trips, transitions, restarts, races.

Each test runs on a real SQLite file and on a real PostgreSQL server (the
``database`` fixture); the schema tests of each backend follow.
"""

from __future__ import annotations

import math
import socket
import sqlite3
import threading
import uuid
from collections.abc import Callable
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from postgres_server import PostgresServer

from claas.errors import (
    BackendUnavailable,
    CompletionNotFound,
    Conflict,
    InvalidRequest,
    NotFound,
    StorageError,
)
from claas.records import (
    SCHEMA_VERSION,
    FeedbackEvent,
    LineageEntry,
    Records,
    RecordsBackend,
    RollbackEvent,
)
from claas.types import AdapterVersion, ChatMessage, Completion


def completion(completion_id: str = "chatcmpl-1", **overrides: object) -> Completion:
    fields: dict[str, object] = {
        "id": completion_id,
        "adapter_id": "team/helper",
        "adapter_version": 3,
        "model": "bundled:smollm2-135m-instruct",
        "messages": (
            ChatMessage(role="system", content="Be brief."),
            ChatMessage(role="user", content='Héllo \u2603 "quoted"\n'),
        ),
        "prompt_ids": (1, 50256, 0, 2**31 + 7),
        "response_ids": (11, 12, 13),
        "response_logprobs": (-0.1234567890123456, -1e-300, -math.inf),
        "text": "Hi!",
        "raw_text": "<think>hmm</think>Hi!",
        "finish_reason": "length",
        "created": 1717171717.123456,
        "top_logprobs": (((11, -0.1), (7, -2.5)), ((12, -1e-9),), ()),
        "thinking": True,
    }
    return Completion(**{**fields, **overrides})  # type: ignore[arg-type]


def version(adapter_id: str, number: int, parent: int | None) -> AdapterVersion:
    return AdapterVersion(
        adapter_id=adapter_id,
        version=number,
        parent=parent,
        created=1000.0 + number,
        base_model="m",
        path=f"/tmp/{number}",
        feedback_ids=(f"fb-{number}",),
        metrics={"loss": 0.5 * number},
    )


Opener = Callable[[], RecordsBackend]


@pytest.fixture
def open_db(database: str | None, tmp_path: Path) -> Opener:
    """Opens the test's records database (each call a new backend object on it)."""

    def open_() -> RecordsBackend:
        if database is None:
            return Records(tmp_path / "db" / "records.sqlite3")
        from claas.records.postgres import PostgresRecords

        return PostgresRecords(database)

    return open_


@pytest.fixture
def records(open_db: Opener) -> RecordsBackend:
    return open_db()


def test_completion_round_trip_is_exact(records: RecordsBackend) -> None:
    original = completion()
    records.add_completion(original)
    loaded = records.get_completion("chatcmpl-1")
    assert loaded == original
    assert type(loaded.response_logprobs[0]) is float and type(loaded.prompt_ids[0]) is int
    base = completion("chatcmpl-2", adapter_id=None, adapter_version=None, top_logprobs=())
    records.add_completion(base)
    assert records.get_completion("chatcmpl-2") == base
    with pytest.raises(Conflict):
        records.add_completion(original)


def test_missing_completion(records: RecordsBackend) -> None:
    with pytest.raises(CompletionNotFound) as info:
        records.get_completion("nope")
    assert isinstance(info.value, LookupError)


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(
    ids=st.lists(st.integers(0, 2**40), max_size=20),
    logprobs=st.lists(st.floats(max_value=0.0, allow_nan=False), max_size=20),
    text=st.text(max_size=40),
)
def test_completion_round_trip_property(
    records: RecordsBackend, ids: list[int], logprobs: list[float], text: str
) -> None:
    response = tuple(range(len(logprobs)))
    top = tuple(((i, lp),) for i, lp in zip(response, logprobs, strict=True))
    original = completion(
        uuid.uuid4().hex,
        prompt_ids=tuple(ids),
        response_ids=response,
        response_logprobs=tuple(logprobs),
        top_logprobs=top,
        text=text,
        messages=(ChatMessage(role="user", content=text),),
    )
    records.add_completion(original)
    assert records.get_completion(original.id) == original


def test_feedback_status_transitions(records: RecordsBackend) -> None:
    event = records.add_feedback(
        feedback_id="fb-1", adapter_id="team/helper", completion_id="chatcmpl-1", text="shorter"
    )
    assert isinstance(event, FeedbackEvent)
    assert (event.status, event.version, event.finished, event.metrics) == (
        "queued",
        None,
        None,
        {},
    )
    running = records.update_feedback("fb-1", status="running", parent_version=2)
    assert (running.status, running.parent_version, running.done) == ("running", 2, False)
    applied = records.update_feedback(
        "fb-1", status="applied", version=3, metrics={"loss": 0.25}, timings={"train": 1.5}
    )
    loaded = records.get_feedback("fb-1")
    assert loaded == applied
    assert (loaded.status, loaded.parent_version, loaded.version) == ("applied", 2, 3)
    assert loaded.metrics == {"loss": 0.25} and loaded.timings == {"train": 1.5}
    assert loaded.finished is not None and loaded.finished >= loaded.created and loaded.done
    with pytest.raises(Conflict):
        records.update_feedback("fb-1", status="running")
    again = records.update_feedback("fb-1", status="applied", timings={"publish": 0.1})
    assert again.finished == loaded.finished and again.version == 3
    with pytest.raises(InvalidRequest):
        records.update_feedback("fb-1", status="done")
    with pytest.raises(NotFound):
        records.update_feedback("fb-missing", status="running")
    with pytest.raises(NotFound):
        records.get_feedback("fb-missing")
    with pytest.raises(Conflict):
        records.add_feedback(feedback_id="fb-1", adapter_id="x/y", completion_id=None, text="t")
    records.add_feedback(feedback_id="fb-2", adapter_id="x/y", completion_id=None, text="t")
    failed = records.update_feedback("fb-2", status="failed", error="NonFiniteUpdate: nan")
    assert failed.error == "NonFiniteUpdate: nan" and failed.completion_id is None
    assert failed.to_dict()["status"] == "failed"


def test_feedback_listing_order_and_pending(records: RecordsBackend) -> None:
    for i in range(5):
        adapter = "a/one" if i % 2 == 0 else "a/two"
        records.add_feedback(
            feedback_id=f"fb-{i}", adapter_id=adapter, completion_id=None, text="t", created=100 + i
        )
    records.update_feedback("fb-0", status="applied", version=1)
    records.update_feedback("fb-3", status="running")
    assert [e.id for e in records.feedback_events()] == ["fb-4", "fb-3", "fb-2", "fb-1", "fb-0"]
    assert [e.id for e in records.feedback_events("a/one", limit=2)] == ["fb-4", "fb-2"]
    assert [e.id for e in records.pending_feedback()] == ["fb-1", "fb-2", "fb-3", "fb-4"]
    assert [e.id for e in records.pending_feedback("a/two")] == ["fb-1", "fb-3"]
    with pytest.raises(InvalidRequest):
        records.feedback_events(limit=0)


def test_lineage_rollback_delete_and_stats(records: RecordsBackend) -> None:
    for number, parent in ((0, None), (1, 0), (2, 1)):
        records.add_version(version("team/helper", number, parent))
    records.add_version(version("team/other", 0, None))
    records.add_version(version("team/helper", 2, 1))  # recording twice is harmless
    lineage = records.lineage("team/helper")
    assert [row.version for row in lineage] == [0, 1, 2]
    assert lineage[2] == LineageEntry(
        adapter_id="team/helper",
        version=2,
        parent=1,
        created=1002.0,
        feedback_ids=("fb-2",),
        metrics={"loss": 1.0},
    )
    records.record_rollback("team/helper", 2, 0, created=5.0)
    (event,) = records.rollbacks("team/helper")
    assert event == RollbackEvent(
        adapter_id="team/helper", from_version=2, to_version=0, created=5.0
    )
    records.add_completion(completion())
    records.add_feedback(
        feedback_id="fb-1", adapter_id="team/helper", completion_id="chatcmpl-1", text="t"
    )
    assert records.counts() == {
        "completions": 1,
        "feedback": 1,
        "feedback_queued": 1,
        "feedback_running": 0,
        "feedback_applied": 0,
        "feedback_failed": 0,
        "adapters": 2,
        "versions": 4,
        "rollbacks": 1,
    }
    records.delete_adapter("team/helper")
    assert records.lineage("team/helper") == [] and records.rollbacks("team/helper") == []
    assert records.get_completion("chatcmpl-1").adapter_id == "team/helper"
    assert records.get_feedback("fb-1").adapter_id == "team/helper"
    assert records.counts()["versions"] == 1


def test_restart_sees_everything(open_db: Opener, database: str | None, tmp_path: Path) -> None:
    first = open_db()
    first.add_completion(completion())
    first.add_feedback(feedback_id="fb-1", adapter_id="team/helper", completion_id=None, text="t")
    first.update_feedback("fb-1", status="running", parent_version=0)
    first.add_version(version("team/helper", 0, None))
    first.close()
    with pytest.raises(StorageError):
        first.get_completion("chatcmpl-1")
    second = open_db()
    assert second.get_completion("chatcmpl-1") == completion()
    assert [e.id for e in second.pending_feedback()] == ["fb-1"]
    assert second.get_feedback("fb-1").status == "running"
    assert [row.version for row in second.lineage("team/helper")] == [0]
    second.close()
    if database is not None:
        return
    with sqlite3.connect(tmp_path / "db" / "records.sqlite3") as conn:
        assert conn.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "records.sqlite3"
    Records(path).close()
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    conn.close()
    with pytest.raises(StorageError, match="schema version 99"):
        Records(path)


def test_concurrent_writers_from_threads(open_db: Opener) -> None:
    shared = open_db()
    errors: list[BaseException] = []

    def work(worker: int) -> None:
        own = open_db() if worker % 2 else shared  # shared object and separate ones
        try:
            for i in range(20):
                key = f"{worker}-{i}"
                own.add_completion(completion(f"c-{key}"))
                own.add_feedback(
                    feedback_id=f"f-{key}", adapter_id="a/b", completion_id=f"c-{key}", text="t"
                )
                own.update_feedback(f"f-{key}", status="applied", version=i)
                own.add_version(version(f"a/w{worker}", i, i - 1 if i else None))
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(w,)) for w in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    stats = open_db().counts()
    assert (stats["completions"], stats["feedback_applied"], stats["versions"]) == (160, 160, 160)
    assert stats["adapters"] == 8


def test_namespace_filter_is_exact_and_done_in_the_database(records: RecordsBackend) -> None:
    """'a_b' must not match 'axb' (LIKE would), and other tenants' volume cannot crowd out."""
    for i in range(600):
        records.add_feedback(
            feedback_id=f"fb-x{i}", adapter_id="axb/n", completion_id=None, text="t"
        )
    records.add_feedback(feedback_id="fb-mine", adapter_id="a_b/n", completion_id=None, text="t")
    records.add_feedback(feedback_id="fb-c", adapter_id="c/n", completion_id=None, text="t")
    records.record_rollback("axb/n", 1, 0)
    records.record_rollback("a_b/n", 2, 1)
    mine = records.feedback_events(namespaces={"a_b"}, limit=5)
    assert [e.id for e in mine] == ["fb-mine"]
    both = records.feedback_events(namespaces=["a_b", "c"], limit=5)
    assert {e.id for e in both} == {"fb-mine", "fb-c"}
    assert records.feedback_events(namespaces=(), limit=5) == []
    assert records.feedback_events("c/n", namespaces={"a_b"}) == []
    assert [r.adapter_id for r in records.rollbacks(namespaces={"a_b"})] == ["a_b/n"]
    assert len(records.feedback_events(limit=700)) == 602


def test_a_version_1_database_is_migrated_in_place(tmp_path: Path) -> None:
    from claas.records.sqlite import _SCHEMA

    path = tmp_path / "old.sqlite3"
    with sqlite3.connect(path) as conn:  # what claas wrote before feedback jobs
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
        for statement in _SCHEMA:
            conn.execute(statement)
        conn.execute(
            "INSERT INTO feedback (id, adapter_id, text, status, metrics, timings, created) "
            "VALUES ('fb-old', 'team/helper', 't', 'running', '{}', '{}', 1.0)"
        )
    with Records(path) as records:
        assert [e.id for e in records.pending_feedback()] == ["fb-old"]
        assert records.job_counts()["queued"] == 0
    with sqlite3.connect(path) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    Records(path).close()  # opening again migrates nothing twice


def test_postgres_newer_schema_is_refused(postgres: PostgresServer) -> None:
    import psycopg

    from claas.records.postgres import PostgresRecords

    url = postgres.new_database()
    PostgresRecords(url).close()
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("UPDATE schema_version SET version = 99")
    with pytest.raises(StorageError, match="schema version 99"):
        PostgresRecords(url)


def test_postgres_version_1_database_is_migrated_in_place(postgres: PostgresServer) -> None:
    """The migrations are SQLite's own list, run through the dialect layer."""
    import psycopg

    from claas.records._pg_dialect import translate
    from claas.records.postgres import PostgresRecords
    from claas.records.sqlite import _SCHEMA, SCHEMA_VERSION

    url = postgres.new_database()
    with psycopg.connect(url) as conn:
        conn.execute("CREATE TABLE schema_version (version INTEGER NOT NULL)")
        conn.execute("INSERT INTO schema_version VALUES (1)")
        for statement in _SCHEMA:
            conn.execute(translate(statement))
        conn.execute(
            "INSERT INTO feedback (id, adapter_id, text, status, metrics, timings, created) "
            "VALUES ('fb-old', 'team/helper', 't', 'running', '{}', '{}', 1.0)"
        )
    with PostgresRecords(url) as records:
        assert [e.id for e in records.pending_feedback()] == ["fb-old"]
        assert records.job_counts()["queued"] == 0
    with psycopg.connect(url) as conn:
        assert conn.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
        kinds = dict(
            conn.execute(
                "SELECT column_name, data_type FROM information_schema.columns "
                "WHERE table_name = 'completions'"
            ).fetchall()
        )
    assert kinds["created"] == "double precision"  # SQLite's REAL is 8 bytes; PostgreSQL's is 4
    PostgresRecords(url).close()  # opening again migrates nothing twice


def test_postgres_processes_opening_at_once_set_the_schema_up_once(
    postgres: PostgresServer,
) -> None:
    from claas.records.postgres import PostgresRecords

    url = postgres.new_database()
    opened: list[RecordsBackend] = []
    errors: list[BaseException] = []

    def open_one() -> None:
        try:
            opened.append(PostgresRecords(url))
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=open_one) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and len(opened) == 4
    for records in opened:
        assert records.counts()["completions"] == 0
        records.close()


def test_postgres_unreachable_is_backend_unavailable() -> None:
    from claas.records.postgres import PostgresRecords

    with socket.socket() as probe:  # a port nothing listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    with pytest.raises(BackendUnavailable, match="unavailable"):
        PostgresRecords(f"postgresql://claas@127.0.0.1:{port}/x", connect_timeout=1.0)


def test_followup_links_and_adapter_settings(open_db: Opener) -> None:
    """Exact matching by conversation key, one link per follow-up however many
    processes record it at once, and per-adapter settings replaced in place."""
    from claas.followups import AdapterSettings, FollowUp, conversation_key, followup_id

    records = open_db()
    served = completion()
    records.add_completion(served)
    key = conversation_key(served.adapter_id, served.messages, served.text)
    other_key = conversation_key("other/tenant", served.messages, served.text)
    assert records.match_completions("team/helper", [key, other_key]) == {key: served.id}
    assert records.match_completions("other/tenant", [key, other_key]) == {}

    link = FollowUp(
        id=followup_id(served.id, "Shorter."),
        completion_id=served.id,
        adapter_id=served.adapter_id,
        text="Shorter.",
        created=5.0,
    )
    outcomes: list[bool] = []
    errors: list[BaseException] = []

    def record() -> None:
        try:
            outcomes.append(open_db().add_followup(link)[1])
        except BaseException as exc:  # surfaced by the assert below
            errors.append(exc)

    threads = [threading.Thread(target=record) for _ in range(6)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == [] and sorted(outcomes) == [False] * 5 + [True]
    updated = records.set_followup_job(link.id, job_id="job-1", error=None)
    assert updated.job_id == "job-1"
    assert records.followups("team/helper") == [updated]
    assert records.followups(completion_id="nope") == []

    assert records.adapter_settings("team/helper") is None
    records.set_adapter_settings("team/helper", AdapterSettings(learn_from_followups=True))
    records.set_adapter_settings("team/helper", AdapterSettings(learn_from_followups=False))
    assert records.adapter_settings("team/helper") == AdapterSettings(learn_from_followups=False)
