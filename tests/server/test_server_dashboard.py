"""The dashboard: content, escaping and login, then a real headless Chromium."""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from html.parser import HTMLParser
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from server_support import KEY_ADMIN, KEY_ALPHA, fake_learner, serving

from claas import Learner
from claas_server import create_app

USER = [{"role": "user", "content": "hi"}]
XSS = "Shorter <script>document.title='pwned'</script><img src=x onerror=alert(1)>"


def _history(learner: Learner) -> None:
    """alpha/bot: three updates, a rollback to v1, an update on that branch; beta/bot: none."""
    learner.init_adapter("alpha/bot")
    learner.init_adapter("beta/bot")
    for text in (XSS, "Use fewer words.", "No lists."):
        learner.feedback(learner.chat("alpha/bot", USER).id, text)
    learner.rollback("alpha/bot", 1)
    learner.feedback(learner.chat("alpha/bot", USER).id, "Branch.")


class Tables(HTMLParser):
    """Collect the text of every cell, per row, of each table with an id."""

    def __init__(self) -> None:
        super().__init__()
        self.tables: dict[str, list[list[str]]] = {}
        self._table: str | None = None
        self._cell: list[str] | None = None
        self.title = ""
        self._in_title = False
        self.scripts = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "table" and dict(attrs).get("id"):
            self._table = dict(attrs)["id"]
            self.tables[self._table or ""] = []
        elif tag == "tr" and self._table:
            self.tables[self._table].append([])
        elif tag in ("td", "th") and self._table:
            self._cell = []
        elif tag == "title":
            self._in_title = True
        elif tag == "script":
            self.scripts += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "table":
            self._table = None
        elif tag in ("td", "th") and self._table and self._cell is not None:
            self.tables[self._table][-1].append("".join(self._cell).strip())
            self._cell = None
        elif tag == "title":
            self._in_title = False

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        if self._in_title:
            self.title += data


def parse(html: str) -> Tables:
    parser = Tables()
    parser.feed(html)
    return parser


def test_overview_lists_adapters_and_feedback_escaped(client: TestClient, fake: Learner) -> None:
    _history(fake)
    response = client.get("/dashboard")
    assert response.status_code == 200
    assert response.headers["content-type"].startswith("text/html")
    assert "script-src" not in response.headers["content-security-policy"]  # none allowed
    assert "default-src 'none'" in response.headers["content-security-policy"]
    page = parse(response.text)
    assert page.scripts == 0
    rows = page.tables["adapters"][1:]
    assert [(r[0], r[1], r[2]) for r in rows] == [("alpha/bot", "v4", "5"), ("beta/bot", "v0", "1")]
    feedback = page.tables["feedback"][1:]
    assert len(feedback) == 4
    assert feedback[-1][4] == XSS  # shown as text...
    assert "<script>" not in response.text and "&lt;script&gt;" in response.text  # ...not markup


def test_adapter_page_shows_versions_lineage_and_charts(client: TestClient, fake: Learner) -> None:
    _history(fake)
    response = client.get("/dashboard/adapters/alpha/bot")
    assert response.status_code == 200
    html = response.text
    versions = parse(html).tables["versions"][1:]
    assert [(r[0], r[1]) for r in versions] == [
        ("v4", "v1"),
        ("v3", "v2"),
        ("v2", "v1"),
        ("v1", "v0"),
        ("v0", ""),
    ]
    assert html.count("<svg class=chart") == 2
    assert html.count("<circle") == 8  # four updates, two series
    lineage = re.sub(r"<[^>]+>", " ", html.split("Lineage")[1].split("Rollbacks")[0])
    assert lineage.split() == ["v0", "v1", "v2", "v3", "v4", "(live)"]
    assert "v3 → v1" in html  # the rollback
    assert client.get("/dashboard/adapters/alpha/nope").status_code == 404
    assert client.get("/dashboard/adapters/alpha/..").status_code in (400, 404)


def test_jobs_table_and_queue_depth(client: TestClient, fake: Learner) -> None:
    _history(fake)
    jobs = fake.jobs("alpha/bot")
    html = client.get("/dashboard").text
    table = parse(html).tables["jobs"]
    assert table[0][:4] == ["job", "accepted (UTC)", "adapter", "state"]
    rows = table[1:]
    assert [(r[0], r[2], r[3]) for r in rows] == [(j.id, "alpha/bot", "applied") for j in jobs]
    assert [r[4] for r in rows] == ["v1 → v4", "v2 → v3", "v1 → v2", "v0 → v1"]
    assert "updates queued" in html and "updates running" in html  # an open server: admin
    detail = parse(client.get("/dashboard/adapters/alpha/bot").text).tables["jobs"]
    assert [r[0] for r in detail[1:]] == [j.id for j in jobs]
    assert parse(client.get("/dashboard/adapters/beta/bot").text).tables["jobs"][1] == [
        "No feedback jobs yet."
    ]


def test_queue_depth_is_for_admin_keys_only(keyed_client: TestClient, keyed_fake: Learner) -> None:
    _history(keyed_fake)
    alpha = keyed_client.get("/dashboard", headers={"Authorization": f"Bearer {KEY_ALPHA}"}).text
    assert "updates queued" not in alpha and len(parse(alpha).tables["jobs"]) == 5
    admin = keyed_client.get("/dashboard", headers={"Authorization": f"Bearer {KEY_ADMIN}"}).text
    assert "updates queued" in admin


def test_empty_dashboard(client: TestClient) -> None:
    page = parse(client.get("/dashboard").text)
    assert page.tables["adapters"][1] == ["No adapters yet: POST /v1/adapters to create one."]
    assert page.tables["jobs"][1] == ["No feedback jobs yet."]


def test_login_with_form_cookie_or_query(keyed_client: TestClient, keyed_fake: Learner) -> None:
    _history(keyed_fake)
    keyed_client.cookies.clear()
    first = keyed_client.get("/dashboard")
    assert first.status_code == 401
    assert '<form class=login method=post action="/dashboard/login">' in first.text
    assert "alpha/bot" not in first.text

    wrong = keyed_client.post(
        "/dashboard/login", data={"key": "wrong-key-123"}, follow_redirects=False
    )
    assert wrong.status_code == 401
    login = keyed_client.post("/dashboard/login", data={"key": KEY_ALPHA}, follow_redirects=False)
    assert login.status_code == 303
    cookie = login.headers["set-cookie"].lower()
    assert "httponly" in cookie and "samesite=strict" in cookie and "path=/dashboard" in cookie
    page = keyed_client.get("/dashboard")
    assert page.status_code == 200
    assert "alpha/bot" in page.text and "beta/bot" not in page.text
    assert (
        keyed_client.get("/v1/adapters").status_code == 401
    )  # the cookie is for the dashboard only

    keyed_client.get("/dashboard/logout")
    keyed_client.cookies.clear()
    assert keyed_client.get("/dashboard").status_code == 401
    by_query = keyed_client.get("/dashboard", params={"key": KEY_ADMIN})
    assert by_query.status_code == 200 and "beta/bot" in by_query.text
    assert "claas_key" in by_query.headers["set-cookie"]
    assert by_query.headers["referrer-policy"] == "no-referrer"


# ---------------------------------------------------------------- real browser


def _chromium() -> str:
    found = shutil.which("chromium") or shutil.which("chromium-browser")
    if found:
        return found
    message = (
        "chromium is not on PATH; .ci/run installs Debian's package (apt-get install chromium)"
    )
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(message)
    pytest.skip(message)


def _run_chromium(binary: str, *args: str) -> subprocess.CompletedProcess[str]:
    with tempfile.TemporaryDirectory(prefix="chromium-") as profile:
        command = [
            binary,
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--disable-dev-shm-usage",
            f"--user-data-dir={profile}",
            *args,
        ]
        return subprocess.run(command, capture_output=True, text=True, timeout=120, check=False)


def test_dashboard_in_headless_chromium(tmp_path: Path) -> None:
    binary = _chromium()
    learner = fake_learner(tmp_path / "data", api_keys={KEY_ADMIN: ("*",)})
    _history(learner)
    screenshot = Path(os.environ.get("CLAAS_SCREENSHOT_DIR", tmp_path)) / "dashboard.png"
    screenshot.parent.mkdir(parents=True, exist_ok=True)
    try:
        with serving(create_app(learner=learner)) as base_url:
            url = f"{base_url}/dashboard?key={KEY_ADMIN}"
            dom = _run_chromium(binary, "--dump-dom", url)
            shot = _run_chromium(
                binary, f"--screenshot={screenshot}", "--window-size=1280,900", url
            )
            page = _run_chromium(
                binary,
                "--dump-dom",
                f"{base_url}/dashboard/adapters/alpha/bot?key={KEY_ADMIN}",
            )
    finally:
        learner.close()
    assert dom.returncode == 0, dom.stderr[-2000:]
    tables = parse(dom.stdout)
    assert tables.title == "CLaaS dashboard"  # the injected script did not run
    rows = tables.tables["adapters"]
    assert rows[0][:3] == ["adapter", "live", "versions"]
    assert [r[0] for r in rows[1:]] == ["alpha/bot", "beta/bot"]
    assert rows[1][1] == "v4"
    assert XSS in [r[4] for r in tables.tables["feedback"][1:]]

    assert shot.returncode == 0, shot.stderr[-2000:]
    data = screenshot.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(data[16:20], "big"), int.from_bytes(data[20:24], "big")
    assert (width, height) == (1280, 900)
    assert len(data) > 20_000, "the screenshot is (nearly) blank"
    try:
        from PIL import Image
    except ImportError:
        pass
    else:
        with Image.open(screenshot) as image:
            colors = image.convert("RGB").getcolors(maxcolors=1_000_000) or []
        assert len(colors) > 50, "the screenshot has almost no distinct colours"

    assert page.returncode == 0, page.stderr[-2000:]
    detail = parse(page.stdout)
    assert [r[0] for r in detail.tables["versions"][1:]] == ["v4", "v3", "v2", "v1", "v0"]
    assert page.stdout.count("<circle") == 8


def test_adapter_page_lists_follow_ups_and_their_jobs(client: TestClient, fake: Learner) -> None:
    fake.init_adapter("alpha/fu", learn_from_followups=True)
    answer = fake.chat("alpha/fu", USER)
    follow_up = "Too long <b>really</b>."
    turns = [{"role": "assistant", "content": answer.text}, {"role": "user", "content": follow_up}]
    fake.chat("alpha/fu", [*USER, *turns])
    (link,) = fake.followups("alpha/fu")
    assert link.job_id is not None
    fake.wait(link.job_id, timeout=30)
    html = client.get("/dashboard/adapters/alpha/fu").text
    rows = parse(html).tables["followups"]
    assert rows[0][:4] == ["seen (UTC)", "completion", "follow-up", "job"]
    assert [r[1:5] for r in rows[1:]] == [[answer.id, follow_up, link.job_id, "applied"]]
    assert "<b>really</b>" not in html  # escaped
    assert "learn_from_followups on" in html
