"""Follow-ups over HTTP: the official ``openai`` client against uvicorn, and ``claas.Client``.

The conversation is what any OpenAI client sends: the earlier answer copied
back as an assistant turn. The server's chat route has no follow-up code of
its own; ``Learner.chat`` recognises the turn.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import openai
import pytest
from server_support import KEY_ADMIN, KEY_ALPHA, KEY_BETA, fake_learner, serving

from claas import AdapterSettings, Learner, PermissionDenied
from claas.client import Client
from claas_server import create_app

TOO_LONG = "That's too long. One sentence, please."
QUESTION = [{"role": "user", "content": "Why is the sky blue?"}]


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, Learner]]:
    data = tmp_path_factory.mktemp("followups-http")
    learner = fake_learner(data, api_keys={KEY_ALPHA: ("alpha",), KEY_BETA: ("beta",)})
    with serving(create_app(learner=learner)) as base_url:
        yield base_url, learner
    learner.close()


def _openai(base_url: str, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{base_url}/v1", api_key=key, max_retries=0, timeout=60)


def _resend(client: openai.OpenAI, model: str, answer: str) -> None:
    client.chat.completions.create(
        model=model,
        messages=[
            *QUESTION,  # type: ignore[list-item]
            {"role": "assistant", "content": answer},
            {"role": "user", "content": TOO_LONG},
        ],
    )


def test_openai_client_conversation_becomes_one_job(served: tuple[str, Learner]) -> None:
    base_url, _ = served
    with Client(base_url, KEY_ALPHA) as claas:
        claas.init_adapter("alpha/fu", learn_from_followups=True)
        assert claas.adapter_settings("alpha/fu") == AdapterSettings(learn_from_followups=True)
        oa = _openai(base_url, KEY_ALPHA)
        first = oa.chat.completions.create(model="alpha/fu", messages=QUESTION)  # type: ignore[arg-type]
        text = first.choices[0].message.content or ""
        for _ in range(3):
            _resend(oa, "alpha/fu", text)
        (link,) = claas.followups("alpha/fu")
        assert (link.completion_id, link.text) == (first.id, TOO_LONG)
        (job,) = claas.jobs("alpha/fu")
        assert job.id == link.job_id
        assert claas.wait(job.id, timeout=30).status == "applied"
        record = oa.get(f"/chat/completions/{first.id}", cast_to=dict)
        assert [f["id"] for f in record["followups"]] == [link.id]
        assert record["followups"][0]["job_id"] == job.id


def test_an_edited_answer_makes_no_link_over_http(served: tuple[str, Learner]) -> None:
    base_url, _ = served
    with Client(base_url, KEY_ALPHA) as claas:
        claas.init_adapter("alpha/edit", learn_from_followups=True)
        oa = _openai(base_url, KEY_ALPHA)
        first = oa.chat.completions.create(model="alpha/edit", messages=QUESTION)  # type: ignore[arg-type]
        _resend(oa, "alpha/edit", (first.choices[0].message.content or "") + " Also, hi.")
        assert claas.followups("alpha/edit") == [] and claas.jobs("alpha/edit") == []


def test_another_tenants_answer_is_not_matched_over_http(served: tuple[str, Learner]) -> None:
    base_url, learner = served
    learner.init_adapter("beta/bot", learn_from_followups=True)
    with Client(base_url, KEY_ALPHA) as alpha:
        alpha.init_adapter("alpha/victim", learn_from_followups=True)
        theirs = alpha.chat("alpha/victim", QUESTION)
    beta = _openai(base_url, KEY_BETA)
    _resend(beta, "beta/bot", theirs.text)
    assert learner.followups("beta/bot") == [] and learner.jobs("beta/bot") == []
    assert learner.followups("alpha/victim") == []
    with Client(base_url, KEY_BETA) as claas, pytest.raises(PermissionDenied):
        claas.followups("alpha/victim")


def test_patch_adapter_settings_and_adapter_info(tmp_path: Path) -> None:
    learner = fake_learner(tmp_path / "data", api_keys={KEY_ADMIN: ("*",)})
    try:
        with serving(create_app(learner=learner)) as base_url, Client(base_url, KEY_ADMIN) as c:
            c.init_adapter("t/p")
            assert c.adapter_settings("t/p").learn_from_followups is False
            assert c.configure_adapter("t/p", learn_from_followups=True).learn_from_followups
            assert c.configure_adapter("t/p") == AdapterSettings(learn_from_followups=True)
            assert learner.adapter_settings("t/p").learn_from_followups is True
            info = c._json("GET", "/v1/adapters/t/p")
            assert info["learn_from_followups"] is True
    finally:
        learner.close()
