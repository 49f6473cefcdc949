"""API keys: no key is 401, another namespace is 403, and neither changes anything."""

from __future__ import annotations

from typing import Any

import pytest
from fastapi.testclient import TestClient
from metrics_support import families
from server_support import KEY_ADMIN, KEY_ALPHA, KEY_BETA, auth, snapshot

from claas import Learner, Settings
from claas.errors import InvalidConfig
from claas.records import Records
from claas_server.auth import KeyRing
from claas_server.serve import check_host, is_loopback, serve

USER = [{"role": "user", "content": "hi"}]


@pytest.fixture
def tenants(keyed_client: TestClient, keyed_fake: Learner) -> dict[str, str]:
    """alpha/bot and beta/bot, each with one served completion (ids returned)."""
    ids = {}
    for key, adapter in ((KEY_ALPHA, "alpha/bot"), (KEY_BETA, "beta/bot")):
        created = keyed_client.post("/v1/adapters", json={"adapter_id": adapter}, headers=auth(key))
        assert created.status_code == 201, created.text
        answer = keyed_client.post(
            "/v1/chat/completions",
            json={"model": adapter, "messages": USER},
            headers=auth(key),
        )
        ids[adapter] = answer.json()["id"]
    return ids


def _requests(ids: dict[str, str]) -> list[tuple[str, str, dict[str, Any] | None]]:
    """Every call alpha's key might try on beta's adapter."""
    beta = ids["beta/bot"]
    return [
        ("GET", "/v1/adapters/beta/bot", None),
        ("GET", "/v1/adapters/beta/bot/versions", None),
        ("GET", "/v1/adapters/beta/bot/export", None),
        ("POST", "/v1/adapters/beta/bot/rollback", {"version": 0}),
        ("DELETE", "/v1/adapters/beta/bot", None),
        ("POST", "/v1/adapters", {"adapter_id": "beta/new"}),
        ("POST", "/v1/feedback", {"completion_id": beta, "feedback": "x"}),
        (
            "POST",
            "/v1/feedback",
            {"completion_id": beta, "feedback": "x", "adapter_id": "alpha/bot"},
        ),
        (
            "POST",
            "/v1/feedback",
            {"completion_id": ids["alpha/bot"], "feedback": "x", "adapter_id": "beta/bot"},
        ),
        (
            "POST",
            "/v1/feedback",
            {"adapter_id": "beta/bot", "messages": USER, "response": "r", "feedback": "x"},
        ),
        (
            "POST",
            "/v1/feedback",
            {
                "items": [
                    {"completion_id": ids["alpha/bot"], "feedback": "ok"},
                    {"completion_id": beta, "feedback": "x"},
                ]
            },
        ),
        ("GET", "/v1/feedback?adapter_id=beta/bot", None),
        ("GET", "/v1/feedback/events?adapter_id=beta/bot", None),
        ("POST", "/v1/chat/completions", {"model": "beta/bot", "messages": USER}),
        ("POST", "/v1/chat/completions", {"model": "beta/bot", "messages": USER, "stream": True}),
        ("POST", "/v1/completions", {"model": "beta/bot", "prompt": "x"}),
        ("POST", "/v1/score", {"model": "beta/bot", "messages": USER, "response": "r"}),
        ("GET", "/v1/models/beta/bot", None),
    ]


def test_key_cannot_touch_another_namespace(
    keyed_client: TestClient, keyed_fake: Learner, tenants: dict[str, str]
) -> None:
    before = snapshot(keyed_fake)
    for method, path, body in _requests(tenants):
        response = keyed_client.request(method, path, json=body, headers=auth(KEY_ALPHA))
        assert response.status_code == 403, (method, path, body, response.text)
        assert response.json()["error"]["type"] == "permission_error"
        assert snapshot(keyed_fake) == before, (method, path)


def test_no_key_or_a_wrong_key_is_401(
    keyed_client: TestClient, keyed_fake: Learner, tenants: dict[str, str]
) -> None:
    before = snapshot(keyed_fake)
    others = [
        ("GET", "/v1/models", None),
        ("GET", "/v1/adapters", None),
        ("GET", "/v1/feedback", None),
        ("GET", "/v1/feedback/events", None),
        ("GET", "/v1/feedback/job-0123", None),
        ("DELETE", "/v1/feedback/job-0123", None),
        ("GET", "/metrics", None),
        ("POST", "/v1/chat/completions", {"model": "alpha/bot", "messages": USER}),
    ]
    bad_headers: list[dict[str, str]] = [
        {},
        auth("not-a-key-at-all"),
        auth(KEY_ALPHA + "x"),
        {"Authorization": f"Basic {KEY_ALPHA}"},
        {"Authorization": "Bearer"},
        {"Authorization": KEY_ALPHA},
    ]
    for method, path, body in [*_requests(tenants), *others]:
        for headers in bad_headers:
            response = keyed_client.request(method, path, json=body, headers=headers)
            assert response.status_code == 401, (method, path, headers, response.text)
            assert response.headers["www-authenticate"] == "Bearer"
            assert response.json()["error"]["type"] == "authentication_error"
    assert snapshot(keyed_fake) == before
    assert keyed_client.get("/health").status_code == 200


def test_key_works_in_its_own_namespace(
    keyed_client: TestClient, keyed_fake: Learner, tenants: dict[str, str]
) -> None:
    headers = auth(KEY_ALPHA)
    response = keyed_client.post(
        "/v1/feedback",
        json={"completion_id": tenants["alpha/bot"], "feedback": "x"},
        headers=headers,
    )
    assert response.status_code == 200, response.text
    assert keyed_client.get("/v1/adapters/alpha/bot/versions", headers=headers).status_code == 200
    assert keyed_client.get("/v1/adapters/alpha/bot/export", headers=headers).status_code == 200
    rollback = keyed_client.post(
        "/v1/adapters/alpha/bot/rollback", json={"version": 0}, headers=headers
    )
    assert rollback.status_code == 200
    # The base model belongs to no namespace: every key may use it.
    base = keyed_client.post(
        "/v1/chat/completions", json={"model": "base", "messages": USER}, headers=headers
    )
    assert base.status_code == 200
    assert keyed_client.delete("/v1/adapters/alpha/bot", headers=headers).status_code == 200
    assert keyed_fake.adapters() == ["beta/bot"]


def test_listings_show_only_the_keys_namespaces(
    keyed_client: TestClient, keyed_fake: Learner, tenants: dict[str, str]
) -> None:
    keyed_client.post(
        "/v1/feedback",
        json={"completion_id": tenants["beta/bot"], "feedback": "beta's secret"},
        headers=auth(KEY_BETA),
    )
    alpha = auth(KEY_ALPHA)
    adapters = keyed_client.get("/v1/adapters", headers=alpha).json()["data"]
    assert [a["id"] for a in adapters] == ["alpha/bot"]
    models = keyed_client.get("/v1/models", headers=alpha).json()["data"]
    assert "beta/bot" not in [m["id"] for m in models]
    assert keyed_client.get("/v1/feedback", headers=alpha).json()["data"] == []
    assert keyed_client.get("/v1/feedback/events", headers=alpha).json()["data"] == []
    scraped = families(keyed_client.get("/metrics", headers=alpha).text)
    assert "claas_records" not in scraped and "claas_jobs" not in scraped
    dashboard = keyed_client.get("/dashboard", headers=alpha).text
    assert "alpha/bot" in dashboard and "beta/bot" not in dashboard
    assert "beta&#x27;s secret" not in dashboard and "beta's secret" not in dashboard
    assert keyed_client.get("/dashboard/adapters/beta/bot", headers=alpha).status_code == 403

    admin = auth(KEY_ADMIN)
    every = keyed_client.get("/v1/adapters", headers=admin).json()["data"]
    assert [a["id"] for a in every] == ["alpha/bot", "beta/bot"]
    scraped = families(keyed_client.get("/metrics", headers=admin).text)
    assert "claas_records" in scraped and "claas_jobs" in scraped
    assert len(keyed_client.get("/v1/feedback", headers=admin).json()["data"]) == 1


def test_another_tenants_job_is_not_found(
    keyed_client: TestClient, keyed_fake: Learner, tenants: dict[str, str]
) -> None:
    """A job id of another namespace answers exactly as an unknown id: it reveals nothing."""
    queued = keyed_client.post(
        "/v1/feedback",
        json={"completion_id": tenants["beta/bot"], "feedback": "beta's", "wait": False},
        headers=auth(KEY_BETA),
    )
    assert queued.status_code == 202, queued.text
    job_id = queued.json()["id"]
    keyed_fake.wait(job_id, timeout=30)
    before = snapshot(keyed_fake)
    alpha = auth(KEY_ALPHA)
    for method, path in (
        ("GET", f"/v1/feedback/{job_id}"),
        ("GET", f"/v1/feedback/{job_id}?wait=1"),
        ("DELETE", f"/v1/feedback/{job_id}"),
    ):
        theirs = keyed_client.request(method, path, headers=alpha)
        unknown = keyed_client.request(method, path.replace(job_id, "job-unknown"), headers=alpha)
        assert theirs.status_code == unknown.status_code == 404, theirs.text
        assert theirs.json()["error"]["code"] == "job_not_found"
        assert theirs.json()["error"]["message"] == unknown.json()["error"]["message"].replace(
            "job-unknown", job_id
        )
    assert snapshot(keyed_fake) == before
    assert keyed_client.get("/v1/feedback", headers=alpha).json()["data"] == []
    mine = keyed_client.get(f"/v1/feedback/{job_id}", headers=auth(KEY_BETA))
    assert mine.status_code == 200 and mine.json()["status"] == "applied"


def test_other_tenants_volume_never_hides_a_tenants_own_feedback(
    keyed_client: TestClient, keyed_fake: Learner, tenants: dict[str, str]
) -> None:
    """Namespaces filter in the database: 600 newer beta events do not crowd alpha's out."""
    alpha, beta = auth(KEY_ALPHA), auth(KEY_BETA)
    keyed_client.post(
        "/v1/feedback",
        json={"completion_id": tenants["alpha/bot"], "feedback": "alpha's own"},
        headers=alpha,
    )
    with Records(keyed_fake.settings.db_path) as records:  # bulk rows, not 600 updates
        for i in range(600):
            records.add_feedback(
                feedback_id=f"fb-beta-{i}", adapter_id="beta/bot", completion_id=None, text="b"
            )
    mine = keyed_client.get("/v1/feedback/events", headers=alpha).json()["data"]
    assert [e["text"] for e in mine] == ["alpha's own"]
    dashboard = keyed_client.get("/dashboard", headers=alpha).text
    assert "alpha&#x27;s own" in dashboard
    events = keyed_client.get("/v1/feedback/events?limit=500", headers=beta).json()["data"]
    assert len(events) == 500


def test_a_damaged_latest_is_shown_not_papered_over(
    keyed_client: TestClient, keyed_fake: Learner, tenants: dict[str, str]
) -> None:
    alpha = auth(KEY_ALPHA)
    latest = keyed_fake.settings.adapters_dir / "alpha" / "bot" / "LATEST"
    latest.write_text("{torn")
    (listed,) = keyed_client.get("/v1/adapters", headers=alpha).json()["data"]
    assert listed["live_version"] is None and "alpha/bot/LATEST is unreadable" in listed["error"]
    assert str(keyed_fake.settings.adapters_dir) not in listed["error"]
    one = keyed_client.get("/v1/adapters/alpha/bot", headers=alpha).json()
    assert one["error"] == listed["error"]
    chat = keyed_client.post(
        "/v1/chat/completions",
        json={"model": "alpha/bot", "messages": [{"role": "user", "content": "hi"}]},
        headers=alpha,
    )
    assert chat.status_code == 500 and chat.json()["error"]["code"] == "storage_error"
    page = keyed_client.get("/dashboard/adapters/alpha/bot", headers=alpha)
    assert page.status_code == 200 and "cannot be served" in page.text
    assert "alpha/bot/LATEST is unreadable" in page.text


def test_keyring_compares_digests_of_every_key() -> None:
    ring = KeyRing({KEY_ALPHA: ("alpha",), KEY_ADMIN: ("*",)})
    assert ring.authenticate(KEY_ALPHA).namespaces == frozenset({"alpha"})
    assert ring.authenticate(KEY_ADMIN).namespaces is None
    assert ring.authenticate(KEY_ALPHA).key_id != ring.authenticate(KEY_ADMIN).key_id
    assert KEY_ALPHA not in repr(ring.__dict__)  # only digests are kept


def test_no_keys_means_open(client: TestClient) -> None:
    assert client.get("/v1/adapters").status_code == 200


@pytest.mark.parametrize("host", ["127.0.0.1", "127.0.0.2", "::1", "[::1]", "localhost"])
def test_loopback_hosts(host: str) -> None:
    assert is_loopback(host)
    check_host(Settings(), host)


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.10", "example.com", ""])
def test_remote_hosts_need_keys_or_permission(host: str, tmp_path: Any) -> None:
    assert not is_loopback(host)
    settings = Settings(data_dir=tmp_path)
    with pytest.raises(InvalidConfig, match="without API keys"):
        check_host(settings, host)
    check_host(settings, host, allow_remote=True)
    check_host(settings.evolve(allow_remote_without_keys=True), host)
    check_host(settings.evolve(api_keys={KEY_ALPHA: ("alpha",)}), host)


def test_serve_refuses_before_listening(tmp_path: Any) -> None:
    with pytest.raises(InvalidConfig):
        serve(Settings(data_dir=tmp_path), host="0.0.0.0", port=1)
    assert not (tmp_path / "claas.db").exists()  # refused before building anything
