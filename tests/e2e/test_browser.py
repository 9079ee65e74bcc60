"""The web UI and the API docs in a real browser: Debian's chromium driven by Playwright.

A real uvicorn server (tokens configured) on a SQLite file and a real worker process. Every
request that leaves the loopback interface is blocked and recorded, so the pages are shown to
work offline. Screenshots go to $ADAMOD_LAB_ARTIFACTS (or the test's tmp dir).
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest

from service.processes import running_server

from .conftest import log_tail, poll, running_workers

pytestmark = pytest.mark.slow

CHROMIUM = "/usr/bin/chromium"
TOKEN = "browser-test-token"
LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}
# 12 trials of ~0.5 s each, one at a time (fail_seeds keeps them out of packs): long enough to
# watch the page move, short enough for the suite. Seed 1 fails at its second step.
STUDY = {
    "name": "browser study",
    "workload": "noop",
    "workload_config": {
        "steps_per_epoch": 5,
        "sleep_s": 0.1,
        "fail_at_step": 2,
        "fail_seeds": [1],
    },
    "optimizers": ["adam", "adamod"],
    "lr": {"values": [0.01, 0.1]},
    "beta3": [0.9, 0.99],
    "seeds": 2,
    "budget": {"steps": 5},
}


@dataclass
class Lab:
    """The server under test, an authenticated client, and the browser."""

    url: str
    database_url: str
    client: httpx.Client
    browser: Any
    artifacts: Path
    log_dir: Path
    blocked: list[str] = field(default_factory=list)

    def context(self) -> Any:
        """A browser context in which every non-loopback request is aborted and recorded."""
        context = self.browser.new_context(viewport={"width": 1280, "height": 900})

        def guard(route: Any) -> None:
            host = urlsplit(route.request.url).hostname or ""
            if route.request.url.startswith(("data:", "blob:")) or host in LOOPBACK:
                route.continue_()
            else:
                self.blocked.append(route.request.url)
                route.abort()

        context.route("**/*", guard)
        return context


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Lab]:
    """One server and one chromium for the module; skips where chromium or Playwright is missing."""
    if not os.access(CHROMIUM, os.X_OK):
        pytest.skip(f"{CHROMIUM} not installed (apt-get install chromium)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")
    tmp = tmp_path_factory.mktemp("browser")
    artifacts = Path(os.environ.get("ADAMOD_LAB_ARTIFACTS") or tmp / "artifacts")
    artifacts.mkdir(parents=True, exist_ok=True)
    database_url = f"sqlite:///{tmp / 'lab.db'}"
    env = {"ADAMOD_LAB_API_TOKENS": TOKEN}
    with (
        running_server(database_url, env=env, log_path=str(tmp / "server.log")) as url,
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        ) as client,
        sync_api.sync_playwright() as playwright,
    ):
        try:
            browser = playwright.chromium.launch(executable_path=CHROMIUM, headless=True)
        except Exception as exc:  # e.g. a chromium too old for this Playwright
            pytest.skip(f"chromium does not start under Playwright: {exc}")
        try:
            yield Lab(url, database_url, client, browser, artifacts, tmp)
        finally:
            browser.close()


def _create(lab: Lab, **changes: Any) -> dict[str, Any]:
    response = lab.client.post("/studies", json={**STUDY, **changes})
    assert response.status_code == 201, response.text
    return response.json()


def test_study_page_follows_a_running_study(lab: Lab) -> None:
    study = _create(lab)
    # A second, tiny study on the same optimizers, for the compare page at the end.
    other = _create(
        lab, name="other", workload_config={}, lr={"values": [0.01, 0.1]}, beta3=[0.9], seeds=1
    )
    study_path = f"/studies/{study['id']}"
    context = lab.context()
    page = context.new_page()
    polls: list[float] = []
    seen: list[dict[str, Any]] = []

    def on_response(response: Any) -> None:
        if urlsplit(response.url).path == study_path and response.request.method == "GET":
            polls.append(time.monotonic())
            seen.append(response.json())

    page.on("response", on_response)
    try:
        # The index lists the study created through the API (no token needed to read).
        page.goto(lab.url + "/")
        row = page.locator(f'tr.study[data-study-id="{study["id"]}"]')
        assert "browser study" in row.inner_text() and "queued" in row.inner_text()

        page.goto(f"{lab.url}/ui/studies/{study['id']}")
        assert page.inner_text("#study-status") == "queued"
        with running_workers(lab.database_url, 1, lab.log_dir, "--max-attempts", "1"):
            try:
                page.wait_for_selector('#study[data-polling="stopped"]', timeout=90_000)
            except Exception as exc:
                raise AssertionError(f"{exc}\n{log_tail(lab.log_dir)}") from None
        final = lab.client.get(study_path).json()
        assert final["status"] == "completed"  # seed 0 succeeded everywhere
        assert page.inner_text("#study-status") == "completed"
        assert page.inner_text("#progress-text") == "12 / 12 trials done"
        # It followed the study while the worker ran: it saw a state between queued and done.
        done = [sum(s["progress"][k] for k in ("completed", "diverged", "failed")) for s in seen]
        assert any(0 < d < 12 for d in done) or any(s["status"] == "running" for s in seen), done
        # ... and stopped polling once the study ended.
        n_polls = len(polls)
        page.wait_for_timeout(4500)
        assert len(polls) == n_polls

        # The trial table (swapped in live, no reload) shows each failed trial's error.
        failed = page.locator("#trials tr.trial.failed")
        assert failed.count() == 6
        assert "failing on purpose at step 2" in failed.first.locator("td.error").inner_text()

        # One plotly trace per configuration, one heat map per surface, from the report JSON.
        report = lab.client.get(f"{study_path}/report").json()
        labels = [c["label"] for c in report["configs"]]
        assert len(labels) == 3
        traces = page.locator("#lr-curves svg .scatterlayer .trace")
        assert traces.count() == len(labels)
        legend = page.locator("#lr-curves .legend .traces .legendtext").all_text_contents()
        assert legend == labels
        assert page.locator("#surfaces .surface").count() == len(report["surfaces"]) == 1
        assert page.locator("#surfaces .heatmaplayer .hm").count() == 1
        # Hovering a point shows its lr, median and the per-seed values.
        point = page.locator("#lr-curves .scatterlayer .trace").first.locator(".points path")
        point.first.hover(force=True)
        hover = page.locator("#lr-curves .hoverlayer .hovertext")
        hover.wait_for(timeout=5000)
        assert re.search(r"lr 0\.01.*median L.*per seed", hover.text_content() or "", re.S)

        page.screenshot(path=str(lab.artifacts / "study-page.png"), full_page=True)

        # The compare page shows the JSON comparison's table, reached by ticking both studies.
        poll(lab.client, other["id"], lambda s: s["status"] == "completed", timeout=30)
        page.goto(lab.url + "/")
        for study_id in (study["id"], other["id"]):
            page.check(f'input[name="studies"][value="{study_id}"]')
        page.click("text=Compare selected studies")
        page.wait_for_selector("#per-workload")
        ids = ",".join(sorted(str(i) for i in (study["id"], other["id"])))
        comparison = lab.client.get("/compare", params={"studies": ids}).json()
        rows = page.locator("#per-workload tbody tr")
        assert rows.count() == len(comparison["table"]) > 0
        # The profiles figure comes from /compare/profiles.png (matplotlib, a second or two).
        page.wait_for_function("document.querySelector('img.png').naturalWidth > 0")
        assert lab.blocked == []
    finally:
        context.close()


def test_cancel_needs_the_token_kept_in_the_session(lab: Lab) -> None:
    study = _create(lab, name="to cancel")  # no worker runs now: it stays queued
    context = lab.context()
    page = context.new_page()
    try:
        page.goto(f"{lab.url}/ui/studies/{study['id']}")
        page.click("#cancel-button")
        page.wait_for_function(
            "document.getElementById('cancel-state').textContent.includes('token')"
        )
        assert lab.client.get(f"/studies/{study['id']}").json()["status"] == "queued"

        page.fill("#token-input", TOKEN)
        page.click("#token-form button[type=submit]")
        assert page.evaluate("sessionStorage.getItem('adamodLabToken')") == TOKEN
        page.reload()  # kept for the session: no need to enter it again
        page.click("#cancel-button")
        page.wait_for_selector('#study-status:text("cancelled")', timeout=10_000)
        assert lab.client.get(f"/studies/{study['id']}").json()["status"] == "cancelled"
        page.wait_for_selector('#study[data-polling="stopped"]', timeout=10_000)
        assert lab.blocked == []
    finally:
        context.close()


def test_docs_render_every_operation_offline(lab: Lab) -> None:
    schema = lab.client.get("/openapi.json").json()
    expected = sorted(
        (method.upper(), path)
        for path, item in schema["paths"].items()
        for method in item
        if method in {"get", "post", "put", "patch", "delete"}
    )
    context = lab.context()
    page = context.new_page()
    try:
        page.goto(lab.url + "/docs")
        page.wait_for_selector(".opblock", timeout=30_000)
        shown = sorted(
            (
                block.locator(".opblock-summary-method").inner_text().strip(),
                block.locator(".opblock-summary-path").get_attribute("data-path"),
            )
            for block in page.locator(".opblock").all()
        )
        assert shown == expected
        page.screenshot(path=str(lab.artifacts / "docs.png"))

        page.goto(lab.url + "/redoc")
        # ReDoc lists each operation by its summary in the menu and as a section heading.
        page.wait_for_selector("h2:has-text('Submit a study')", timeout=30_000)
        assert page.locator("h2:has-text('List studies, newest first')").count() == 1
        page.screenshot(path=str(lab.artifacts / "redoc.png"))
        assert lab.blocked == []
    finally:
        context.close()


def test_sign_in_when_reads_are_protected(lab: Lab) -> None:
    """Reads protected: the sign-in form, then the index and a study page on the session cookie."""
    database_url = f"sqlite:///{lab.log_dir / 'protected.db'}"
    env = {"ADAMOD_LAB_API_TOKENS": TOKEN, "ADAMOD_LAB_PROTECT_READS": "true"}
    log = str(lab.log_dir / "protected-server.log")
    with (
        running_server(database_url, env=env, log_path=log) as url,
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        ) as client,
    ):
        response = client.post("/studies", json={**STUDY, "name": "protected study"})
        assert response.status_code == 201, response.text
        study = response.json()
        study_path = f"/studies/{study['id']}"
        context = lab.context()
        page = context.new_page()
        try:
            answer = page.goto(url + "/")
            assert answer is not None and answer.status == 401
            assert page.locator("#signin-form input[type=password]").count() == 1
            page.fill("#signin-token", "not the token")
            page.click("#signin-form button[type=submit]")
            assert "not a valid token" in page.inner_text("#signin-error")
            assert context.cookies() == []
            page.screenshot(path=str(lab.artifacts / "sign-in.png"))

            page.fill("#signin-token", TOKEN)
            page.click("#signin-form button[type=submit]")
            row = page.locator(f'tr.study[data-study-id="{study["id"]}"]')
            row.wait_for(timeout=10_000)
            assert urlsplit(page.url).path == "/"
            assert "protected study" in row.inner_text()
            (cookie,) = context.cookies()
            assert cookie["httpOnly"] and cookie["sameSite"] == "Strict" and cookie["path"] == "/"
            assert TOKEN not in cookie["value"]
            assert page.evaluate("document.cookie") == ""  # HttpOnly: no script reads it
            # The token typed into the form is kept for Cancel, as the token form would.
            assert page.evaluate("sessionStorage.getItem('adamodLabToken')") == TOKEN

            page.click(f'tr.study[data-study-id="{study["id"]}"] td:nth-child(2) a')
            page.wait_for_selector("#study-status")
            assert page.inner_text("#study-status") == "queued"
            assert page.locator("#trials tr.trial").count() == study["n_trials"]
            # The page's script polls the JSON API on the cookie: 200s, and it keeps polling.
            with page.expect_response(
                lambda r: urlsplit(r.url).path == study_path and r.request.method == "GET",
                timeout=15_000,
            ) as polled:
                pass
            assert polled.value.status == 200
            assert page.get_attribute("#study", "data-polling") == "on"
            page.screenshot(path=str(lab.artifacts / "protected-study-page.png"), full_page=True)

            # Cancel still takes the bearer token (the cookie authorizes reads only).
            page.click("#cancel-button")
            page.wait_for_selector('#study-status:text("cancelled")', timeout=10_000)
            assert client.get(study_path).json()["status"] == "cancelled"

            page.click("#sign-out")
            page.wait_for_selector("#signin-form", timeout=10_000)
            assert context.cookies() == []
            assert page.evaluate("sessionStorage.getItem('adamodLabToken')") is None
            assert lab.blocked == []
        finally:
            context.close()
