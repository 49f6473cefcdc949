"""`claas feedback --no-wait` and `claas jobs`: list, show, wait for and cancel jobs."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from claas import Learner

Run = Callable[..., Any]


@pytest.fixture
def answer_id(cli_json: Run) -> str:
    """An adapter team/bot with one served answer; returns the answer's id."""
    cli_json("adapters", "init", "team/bot")
    return str(cli_json("chat", "team/bot", "-m", "Why is the sky blue?")["id"])


def test_no_wait_prints_the_job_and_a_later_process_applies_it(
    cli: Run, cli_json: Run, answer_id: str
) -> None:
    job = cli_json("feedback", answer_id, "Shorter.", "--no-wait")
    assert job["id"].startswith("job-") and job["adapter_id"] == "team/bot"
    assert job["status"] in ("queued", "running", "applied") and len(job["feedback_ids"]) == 1
    assert {"done", "accepted", "version", "error", "attempts"} <= job.keys()

    done = cli_json("jobs", "wait", job["id"], "--timeout", "30")
    assert (done["id"], done["status"], done["done"], done["version"]) == (
        job["id"],
        "applied",
        True,
        1,
    )
    assert cli_json("jobs", "show", job["id"]) == done
    shown = cli("jobs", "show", job["id"])
    assert shown.exit_code == 0, shown.output
    assert shown.stdout.startswith(f"{job['id']} team/bot: applied, v0 -> v1")


def test_human_no_wait_names_the_job(cli: Run, answer_id: str, observer: Learner) -> None:
    result = cli("feedback", answer_id, "Shorter.", "--no-wait")
    assert result.exit_code == 0, result.output
    (job,) = observer.jobs("team/bot")
    assert result.stdout.startswith(f"{job.id} team/bot: ")


def test_jobs_ls_filters_and_prints(cli: Run, cli_json: Run, answer_id: str) -> None:
    cli_json("adapters", "init", "team/other")
    first = cli_json("feedback", answer_id, "a")
    cli_json("feedback", "--adapter", "team/other", "--prompt", "p", "--response", "r", "b")
    listed = cli_json("jobs", "ls")
    assert [j["adapter_id"] for j in listed] == ["team/other", "team/bot"]
    assert [j["version"] for j in cli_json("jobs", "ls", "team/bot")] == [first["version"]]
    assert len(cli_json("jobs", "ls", "--status", "applied", "--limit", "1")) == 1
    assert cli_json("jobs", "ls", "--status", "queued") == []
    table = cli("jobs", "ls")
    assert table.exit_code == 0 and listed[0]["id"] in table.stdout
    assert "applied" in table.stdout


def test_an_idempotency_key_returns_the_same_update(
    cli_json: Run, answer_id: str, observer: Learner
) -> None:
    once = cli_json("feedback", answer_id, "Shorter.", "--idempotency-key", "req-1")
    again = cli_json("feedback", answer_id, "Shorter.", "--idempotency-key", "req-1")
    assert once == again and once["version"] == 1
    assert [v.version for v in observer.versions("team/bot")] == [0, 1]


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["jobs", "show", "job-nope"], 1, "error: JobNotFound:"),
        (["jobs", "cancel", "job-nope"], 1, "error: JobNotFound:"),
        (["feedback", "{id}", "x", "--idempotency-key", "a b"], 1, "error: InvalidRequest:"),
        (["jobs", "ls", "--status", "lost"], 2, ""),
        (["jobs", "ls", "--limit", "0"], 2, ""),
    ],
)
def test_job_errors(cli: Run, answer_id: str, args: list[str], code: int, message: str) -> None:
    result = cli(*(a.replace("{id}", answer_id) for a in args))
    assert result.exit_code == code, result.output
    assert result.stderr.startswith(message)


def test_cancel_a_finished_job_is_a_conflict(cli: Run, cli_json: Run, answer_id: str) -> None:
    cli_json("feedback", answer_id, "Shorter.")
    (job,) = cli_json("jobs", "ls")
    result = cli("jobs", "cancel", job["id"])
    assert result.exit_code == 1
    assert result.stderr.startswith("error: Conflict:")
    assert cli_json("jobs", "show", job["id"])["status"] == "applied"
