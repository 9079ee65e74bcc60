"""Signing in to the web UI when reads are protected: the sign-in form, the session cookie.

A real uvicorn server on SQLite with tokens and ADAMOD_LAB_PROTECT_READS=true. A browser sends no
bearer header on a page load: pages answer a sign-in form (401, plain HTML) that POSTs a token to
/ui/session, which sets a cookie good for reads only (never the token itself) and redirects back.
"""

from __future__ import annotations

import re
import time
from collections.abc import Iterator
from dataclasses import dataclass

import httpx
import pytest

from service.processes import running_server
from service.ui_session import TTL_SECONDS, local_path, session_is_valid, session_value

from .conftest import OTHER_TOKEN, TOKEN

COOKIE = "adamod_lab_session"
NOOP = {
    "name": "protected",
    "workload": "noop",
    "optimizers": ["adam", "adamod"],
    "lr": {"values": [0.01, 0.1]},
    "seeds": 1,
    "budget": {"steps": 5},
}


@dataclass
class Protected:
    """The server, a bearer-token client, and two studies made through it."""

    url: str
    client: httpx.Client
    study_ids: list[int]

    def browser(self) -> httpx.Client:
        """A client as a browser: no Authorization header, cookies kept, redirects not followed."""
        return httpx.Client(base_url=self.url, timeout=60, follow_redirects=False)


@pytest.fixture(scope="module")
def protected(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Protected]:
    tmp = tmp_path_factory.mktemp("ui_auth")
    env = {
        "ADAMOD_LAB_API_TOKENS": f"{TOKEN}, {OTHER_TOKEN}",
        "ADAMOD_LAB_PROTECT_READS": "true",
    }
    database_url = f"sqlite:///{tmp / 'lab.db'}"
    with (
        running_server(database_url, env=env, log_path=str(tmp / "server.log")) as url,
        httpx.Client(
            base_url=url, headers={"Authorization": f"Bearer {TOKEN}"}, timeout=60
        ) as client,
    ):
        ids = []
        for name in ("protected a", "protected b"):
            response = client.post("/studies", json={**NOOP, "name": name})
            assert response.status_code == 201, response.text
            ids.append(response.json()["id"])
        yield Protected(url, client, ids)


def _sign_in(browser: httpx.Client, token: str, next_path: str = "/") -> httpx.Response:
    return browser.post("/ui/session", data={"token": token, "next": next_path})


def _pages(study_id: int, other_id: int) -> list[str]:
    return [
        "/",
        "/?status=queued",
        f"/ui/studies/{study_id}",
        f"/ui/studies/{study_id}/tables",
        "/ui/compare",
        f"/ui/compare?studies={study_id},{other_id}",
    ]


def test_pages_without_a_cookie_answer_the_sign_in_form(protected: Protected) -> None:
    a, b = protected.study_ids
    with protected.browser() as browser:
        for path in _pages(a, b):
            page = browser.get(path)
            assert page.status_code == 401, path
            assert page.headers["content-type"].startswith("text/html"), path
            assert page.headers["cache-control"] == "no-store"
            assert "set-cookie" not in page.headers
            form = re.search(r'<form method="post" action="/ui/session"[^>]*>(.*?)</form>',
                             page.text, re.S)  # fmt: skip
            assert form is not None, path
            assert len(re.findall(r"<input[^>]*>", form.group(1))) == 2  # the token, where to go
            assert re.search(r'<input type="password" name="token"', form.group(1))
            # Where to go back to, escaped as HTML (a query's & is &amp;).
            assert f'name="next" value="{path.replace("&", "&amp;")}"' in form.group(1)
            assert "<script>" not in form.group(1)  # a plain form: no script needed
            assert page.headers["www-authenticate"] == "Bearer"
        # The JSON API keeps its JSON 401; the static assets stay open (the form needs ui.css).
        api = browser.get(f"/studies/{a}")
        assert api.status_code == 401 and api.json()["detail"].startswith("missing or invalid")
        assert browser.get("/ui/static/ui.css").status_code == 200


def test_a_wrong_token_sets_nothing(protected: Protected) -> None:
    with protected.browser() as browser:
        for token in ("wrong", TOKEN + "x", TOKEN[:-1], ""):
            answer = _sign_in(browser, token, "/ui/compare")
            assert answer.status_code == 401, token
            assert "set-cookie" not in answer.headers
            assert 'id="signin-error"' in answer.text
            assert 'name="next" value="/ui/compare"' in answer.text  # kept for the next try
        # Not a form: nothing is read from it.
        json_body = browser.post("/ui/session", json={"token": TOKEN, "next": "/"})
        assert json_body.status_code == 401 and "set-cookie" not in json_body.headers
        assert browser.cookies.get(COOKIE) is None
        assert browser.get("/").status_code == 401


def test_the_right_token_sets_a_read_cookie_and_redirects_back(protected: Protected) -> None:
    a, b = protected.study_ids
    with protected.browser() as browser:
        answer = _sign_in(browser, OTHER_TOKEN, f"/ui/studies/{a}?x=1")
        assert answer.status_code == 303
        assert answer.headers["location"] == f"/ui/studies/{a}?x=1"
        cookies = answer.headers.get_list("set-cookie")
        assert len(cookies) == 1
        name_value, *attributes = [part.strip() for part in cookies[0].split(";")]
        name, value = name_value.split("=", 1)
        flags = {attribute.split("=")[0].lower(): attribute for attribute in attributes}
        assert name == COOKIE
        assert "httponly" in flags and flags["samesite"].lower() == "samesite=strict"
        assert flags["path"] == "Path=/"
        assert "secure" not in flags  # plain http here: a Secure cookie would never come back
        assert "max-age" not in flags and "expires" not in flags  # gone with the session
        for token in (TOKEN, OTHER_TOKEN):
            assert token not in value and token.encode().hex() not in value
        assert re.fullmatch(r"v1\.\d+\.[0-9a-f]{32}\.[0-9a-f]{64}", value)

        # With the cookie: every page, and the JSON GETs the pages' scripts and images use.
        for path in _pages(a, b):
            page = browser.get(path)
            assert 'id="signin-form"' not in page.text, path
            if "studies=" in path:  # queued studies have nothing to compare yet: a 422 page
                assert page.status_code == 422 and "cannot be compared" in page.text
            else:
                assert page.status_code == 200, (path, page.text[:300])
            assert 'id="sign-out"' in page.text or "<html" not in page.text, path
        for path in (
            "/studies",
            f"/studies/{a}",
            f"/studies/{a}/trials",
            f"/studies/{a}/report",
            f"/studies/{a}/report.html",
            "/workloads",
            "/workers",
            "/metrics",
        ):
            assert browser.get(path).status_code == 200, path
        assert browser.get(f"/compare?studies={a},{b}").status_code == 422  # past the auth


def test_the_cookie_does_not_authorize_a_change(protected: Protected) -> None:
    a, _ = protected.study_ids
    with protected.browser() as browser:
        assert _sign_in(browser, f" {TOKEN}\n").status_code == 303  # pasted with blanks
        assert browser.get(f"/studies/{a}").status_code == 200
        assert browser.delete(f"/studies/{a}").status_code == 401
        assert browser.post(f"/studies/{a}/retry").status_code == 401
        assert browser.post("/studies", json={**NOOP, "name": "by cookie"}).status_code == 401
        assert protected.client.get(f"/studies/{a}").json()["status"] == "queued"
        names = [s["name"] for s in protected.client.get("/studies").json()]
        assert "by cookie" not in names
        # A bad bearer header next to a good cookie still reads (the page's script may hold an
        # old token), and still cannot change anything.
        stale = {"Authorization": "Bearer stale"}
        assert browser.get(f"/studies/{a}", headers=stale).status_code == 200
        assert browser.delete(f"/studies/{a}", headers=stale).status_code == 401
        # A forged or altered cookie is nothing.
        value = browser.cookies[COOKIE]
        version, expires, nonce, mac = value.split(".")
        for forged in (
            f"{version}.{int(expires) + 1}.{nonce}.{mac}",
            f"{version}.{expires}.{nonce[:-1]}1.{mac}",
            f"{version}.{expires}.{nonce}.{'0' * 64}",
            f"{version}.{expires}.{nonce}.{mac[:-2]}",
            f"{version}.{expires}.{mac}",
            "v1.9999999999.00.zz",
            TOKEN,
        ):
            with protected.browser() as other:
                other.cookies.set(COOKIE, forged)
                assert other.get("/").status_code == 401, forged
                assert other.get(f"/studies/{a}").status_code == 401, forged


@pytest.mark.parametrize(
    "next_path",
    [
        "//evil.com",
        "//evil.com/ui/compare",
        "https://evil.com",
        "https://evil.com/",
        "/\\evil.com",
        "/\t/evil.com",
        "\\\\evil.com",
        "javascript:alert(1)",
        "evil.com",
        "/ui/\u00e9",
        "",
    ],
)
def test_only_local_paths_are_redirected_to(protected: Protected, next_path: str) -> None:
    with protected.browser() as browser:
        answer = _sign_in(browser, TOKEN, next_path)
        assert answer.status_code == 303
        assert answer.headers["location"] == "/"
        assert browser.cookies.get(COOKIE)


def test_sign_out_clears_the_cookie_for_good(protected: Protected) -> None:
    with protected.browser() as browser:
        assert _sign_in(browser, TOKEN).status_code == 303
        page = browser.get("/")
        assert page.status_code == 200 and 'action="/ui/sign-out"' in page.text
        value = browser.cookies[COOKIE]
        # The sign-out button: a form POST, then back to the list, which asks to sign in.
        answer = browser.post("/ui/sign-out")
        assert answer.status_code == 303 and answer.headers["location"] == "/"
        assert re.search(rf"{COOKIE}=\"?\"?;.*Max-Age=0", answer.headers["set-cookie"])
        assert browser.cookies.get(COOKIE) is None
        assert browser.get("/").status_code == 401
        # A copy of the cookie kept elsewhere is signed out too.
        with protected.browser() as copy:
            copy.cookies.set(COOKIE, value)
            assert copy.get("/").status_code == 401

    with protected.browser() as browser:  # DELETE /ui/session, for scripts
        assert _sign_in(browser, TOKEN).status_code == 303
        assert browser.get("/").status_code == 200
        answer = browser.delete("/ui/session")
        assert answer.status_code == 204 and "Max-Age=0" in answer.headers["set-cookie"]
        assert browser.get("/").status_code == 401


def test_session_values() -> None:
    tokens = [TOKEN, OTHER_TOKEN]
    now = time.time()
    value = session_value(TOKEN, now)
    assert session_is_valid(value, tokens, now)
    assert session_is_valid(value, [OTHER_TOKEN, TOKEN], now + TTL_SECONDS - 1)
    assert not session_is_valid(value, tokens, now + TTL_SECONDS + 1)  # expired
    assert not session_is_valid(value, [OTHER_TOKEN], now)  # its token was rotated out
    assert not session_is_valid(value, [], now)
    assert not session_is_valid(session_value(TOKEN, now + 10 * TTL_SECONDS), tokens, now)
    assert session_value(TOKEN, now) != session_value(TOKEN, now)  # each sign-in its own
    for junk in (None, "", "v1", "v1...", "v2.1.00.00", "v1.x.00.00", "v1.1.0." + "g" * 64,
                 "v1." * 50, value.replace("v1", "v2", 1)):  # fmt: skip
        assert not session_is_valid(junk, tokens, now)


def test_local_path() -> None:
    assert local_path("/ui/studies/3?x=1&y=2", "/") == "/ui/studies/3?x=1&y=2"
    assert local_path("/base/ui/compare", "/base/") == "/base/ui/compare"
    for bad in ("//x", "/\\x", "http://x", "x", "/\nx", "/\x7fx", "/\u00e9", None, "/" * 3000):
        assert local_path(bad, "/base/") == "/base/", bad
