"""The web UI without a browser: escaping, 404 pages, the status filter, tables in the HTML, assets.

Against the real uvicorn servers of tests/service/conftest.py (tokens configured, reads open), on
SQLite and on PostgreSQL. Browser behaviour (polling, charts) is in tests/e2e/test_browser.py.
"""

from __future__ import annotations

import re

import httpx
import pytest

from .conftest import Api

NOOP = {
    "workload": "noop",
    "optimizers": ["adam", "adamod"],
    "lr": {"values": [0.01, 0.1]},
    "beta3": [0.9, 0.99],
    "seeds": 2,
    "budget": {"steps": 5},
}
EVIL = "<script>alert('x')</script> & co"


def _create(api: Api, name: str) -> dict:
    response = api.client.post("/studies", json={**NOOP, "name": name})
    assert response.status_code == 201, response.text
    return response.json()


def _anonymous(api: Api) -> httpx.Client:
    return httpx.Client(base_url=api.url, timeout=60)


def _study_rows(html: str) -> list[int]:
    return [int(i) for i in re.findall(r'<tr class="study" data-study-id="(\d+)">', html)]


def test_names_are_escaped_on_every_page(api: Api) -> None:
    study = _create(api, EVIL)
    with _anonymous(api) as client:  # tokens are configured, reads stay open as in the JSON API
        pages = [client.get("/"), client.get(f"/ui/studies/{study['id']}")]
    for page in pages:
        assert page.status_code == 200, page.text
        assert page.headers["content-type"].startswith("text/html")
        assert "<script>alert(" not in page.text
        assert "&lt;script&gt;alert(&#39;x&#39;)&lt;/script&gt; &amp; co" in page.text
    # The report embedded for the charts is JSON that cannot close its <script> element either.
    embedded = re.search(
        r'<script type="application/json" id="report-data">(.*?)</script>', pages[1].text, re.S
    )
    assert embedded is not None and "<" not in embedded.group(1)


def test_unknown_study_is_an_html_404(api: Api) -> None:
    with _anonymous(api) as client:
        paths = ["/ui/studies/2147483000", "/ui/studies/abc", "/ui/studies/0"]
        paths += ["/ui/studies/99999999999999999999", "/ui/studies/2147483000/tables"]
        for path in paths:
            page = client.get(path)
            assert page.status_code == 404, path
            assert page.headers["content-type"].startswith("text/html")
            assert 'id="error-message"' in page.text and "There is no study" in page.text


@pytest.mark.parametrize(
    "path",
    [
        "/ui/studies/%ED%A0%80",
        "/ui/studies/%00",
        "/?status=%ED%A0%80",
        "/?page=%C2%B2",
        "/ui/compare?studies=%ED%A0%80,1",
        "/ui/compare?studies=1&studies=1",
    ],
)
def test_hostile_input_is_a_4xx_page(api: Api, path: str) -> None:
    with _anonymous(api) as client:
        page = client.get(path)
    assert 400 <= page.status_code < 500, (path, page.status_code, page.text[:300])


def test_status_filter_lists_only_that_status(api: Api) -> None:
    queued = _create(api, "stays queued")
    cancelled = _create(api, "gets cancelled")
    assert api.client.delete(f"/studies/{cancelled['id']}").status_code == 200
    with _anonymous(api) as client:
        everything = _study_rows(client.get("/").text)
        only_cancelled = _study_rows(client.get("/", params={"status": "cancelled"}).text)
        only_queued = _study_rows(client.get("/", params={"status": "queued"}).text)
        blank = client.get("/", params={"status": ""})  # the form's "all"
        bad = client.get("/", params={"status": "nonsense"})
        bad_page = client.get("/", params={"page": "-1"})
    assert {queued["id"], cancelled["id"]} <= set(everything)
    assert everything == sorted(everything, reverse=True)  # newest first
    assert cancelled["id"] in only_cancelled and queued["id"] not in only_cancelled
    assert queued["id"] in only_queued and cancelled["id"] not in only_queued
    assert _study_rows(blank.text) == everything
    assert bad.status_code == 422 and "status must be one of" in bad.text
    assert bad.headers["content-type"].startswith("text/html")
    assert bad_page.status_code == 422


def test_tables_are_in_the_html(api: Api) -> None:
    study = _create(api, "tables without javascript")
    with _anonymous(api) as client:
        page = client.get(f"/ui/studies/{study['id']}").text
        fragment = client.get(f"/ui/studies/{study['id']}/tables").text
        index = client.get("/").text
    trial_rows = re.findall(r'<tr id="trial-\d+" class="trial (\w+)">', page)
    assert len(trial_rows) == study["n_trials"] == 12 and set(trial_rows) == {"queued"}
    assert re.findall(r'<tr id="trial-\d+" class="trial (\w+)">', fragment) == trial_rows
    assert "<html" not in fragment  # a fragment for the page's script, not a page
    assert f"0 / {study['n_trials']} trials done" in page
    assert 'data-polling="on"' in page  # queued: the script will poll
    assert f'href="/ui/studies/{study["id"]}"' in index
    assert f'href="/studies/{study["id"]}/report.html"' in page


def test_compare_page_errors_are_html(api: Api) -> None:
    a = _create(api, "compare a")
    with _anonymous(api) as client:
        empty = client.get("/ui/compare")
        one = client.get("/ui/compare", params={"studies": str(a["id"])})
        unknown = client.get("/ui/compare", params={"studies": f"{a['id']},2147483000"})
        junk = client.get("/ui/compare", params={"studies": "1,x"})
        twice = client.get("/ui/compare", params={"studies": [str(a["id"]), str(a["id"])]})
    assert empty.status_code == 200 and 'name="studies"' in empty.text
    # One id is the study page's "compare with…": the form asks for the others.
    assert one.status_code == 200 and 'id="hint"' in one.text
    assert f'value="{a["id"]}, "' in one.text
    assert unknown.status_code == 404 and "study 2147483000 not found" in unknown.text
    assert junk.status_code == 422 and "&#39;x&#39; is not one" in junk.text
    assert twice.status_code == 422 and "given twice" in twice.text
    for page in (unknown, junk, twice):
        assert page.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize(
    ("path", "media", "marker"),
    [
        ("/ui/static/plotly.min.js", "text/javascript", b"plotly.js"),
        ("/ui/static/study.js", "text/javascript", b"/report"),
        ("/ui/static/ui.css", "text/css", b"body"),
        ("/docs/static/swagger-ui-bundle.js", "text/javascript", b"SwaggerUIBundle"),
        ("/docs/static/redoc.standalone.js", "text/javascript", b"Redoc"),
        ("/docs/static/swagger-ui.css", "text/css", b".swagger-ui"),
    ],
)
def test_static_assets_are_served_locally(api: Api, path: str, media: str, marker: bytes) -> None:
    with _anonymous(api) as client:
        response = client.get(path)
    assert response.status_code == 200
    assert response.headers["content-type"].startswith(media)
    assert marker in response.content[:200_000]


def test_unknown_assets_are_404(api: Api) -> None:
    with _anonymous(api) as client:
        for path in ("/ui/static/nope.js", "/ui/static/..%2Fapp.py", "/docs/static/x.js"):
            assert client.get(path).status_code == 404, path


def test_docs_pages_load_nothing_from_elsewhere(api: Api) -> None:
    with _anonymous(api) as client:
        for path, asset in (("/docs", "/docs/static/swagger-ui-bundle.js"),
                            ("/redoc", "/docs/static/redoc.standalone.js")):  # fmt: skip
            page = client.get(path)
            assert page.status_code == 200 and asset in page.text
            assert not re.findall(r"(?:src|href)=[\"']https?://", page.text), path
            assert "fonts.googleapis" not in page.text
        schema = client.get("/openapi.json").json()
    assert schema["openapi"].startswith("3.1")
    # The UI and the docs are pages, not API operations.
    assert not any(p == "/" or p.startswith(("/ui", "/docs", "/redoc")) for p in schema["paths"])
