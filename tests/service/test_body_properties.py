"""Properties of the POST /studies body validator against a live server, on SQLite and PostgreSQL.

1. Hypothesis generates StudySpec-like bodies around the valid space (a small noop spec, mutated:
   fields dropped or added, wrong JSON types, extreme numbers, hostile text, duplicate and long
   lists) and sends each as raw bytes. Every answer is a 201 (200 for an idempotent repeat) or a
   4xx with a JSON ``{"detail": ...}``, never a 5xx. A study that was accepted reads back
   identically: GET /studies/{id} returns exactly the normalized spec the POST answered (and that
   this process computes from the same bytes), ints as ints, floats as floats (-0.0 included),
   strings unchanged, and the trial listing's params are the grid's values.
2. A 1 MB body of several shapes is answered within a second while /healthz keeps answering.

test_hostile_input.py and test_api.py pin single examples; this file searches around them.
"""

from __future__ import annotations

import copy
import json
import math
import threading
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import httpx
import pytest
from fastapi.exceptions import RequestValidationError
from hypothesis import HealthCheck, given, note, settings
from hypothesis import strategies as st

from service.body import parse_spec
from service.processes import running_server
from studies.spec import OPTIMIZERS, expand_grid

pytestmark = pytest.mark.slow

MAX_TRIALS = 60
MAX_BODY_BYTES = 1_000_000  # the server's default limit, set explicitly
JSON_HEADERS = {"Content-Type": "application/json"}


@dataclass
class Server:
    url: str
    database_url: str
    client: httpx.Client
    log_path: str

    def log_tail(self) -> str:
        with open(self.log_path, errors="replace") as log:
            return log.read()[-3000:]


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def server(request, tmp_path_factory) -> Iterator[Server]:  # type: ignore[no-untyped-def]
    """One live server per backend for the whole module (auth off, max_trials 60, 1 MB bodies)."""
    if request.param == "sqlite":
        database_url = f"sqlite:///{tmp_path_factory.mktemp('props') / 'lab.db'}"
    else:
        database_url = request.getfixturevalue("module_postgres_url")
    log = str(tmp_path_factory.mktemp("log") / "server.log")
    env = {
        "ADAMOD_LAB_API_TOKENS": "",
        "ADAMOD_LAB_MAX_TRIALS": str(MAX_TRIALS),
        "ADAMOD_LAB_MAX_BODY_BYTES": str(MAX_BODY_BYTES),
    }
    with (
        running_server(database_url, env=env, log_path=log) as url,
        httpx.Client(base_url=url, timeout=60) as client,
    ):
        yield Server(url=url, database_url=database_url, client=client, log_path=log)


# ----------------------------------------------------------------------------- strict equality


def differences(a: Any, b: Any, path: str = "$") -> list[str]:
    """Where two decoded JSON values differ, with types compared exactly: 1 != 1.0, True != 1,
    -0.0 != 0.0, and floats by their bits (repr)."""
    if type(a) is not type(b):
        return [f"{path}: {a!r} ({type(a).__name__}) != {b!r} ({type(b).__name__})"]
    if isinstance(a, float):
        return [] if repr(a) == repr(b) else [f"{path}: {a!r} != {b!r}"]
    if isinstance(a, dict):
        if set(a) != set(b):
            return [f"{path}: keys {sorted(a)} != {sorted(b)}"]
        return [d for key in a for d in differences(a[key], b[key], f"{path}.{key}")]
    if isinstance(a, list):
        if len(a) != len(b):
            return [f"{path}: length {len(a)} != {len(b)}"]
        return [
            d
            for i, (x, y) in enumerate(zip(a, b, strict=True))
            for d in differences(x, y, f"{path}[{i}]")
        ]
    return [] if a == b else [f"{path}: {a!r} != {b!r}"]


def test_differences_is_strict() -> None:
    assert differences({"a": [1.0, "x"]}, {"a": [1.0, "x"]}) == []
    assert differences(1, 1.0) and differences(True, 1) and differences(-0.0, 0.0)
    assert differences("\u00e9", "e\u0301") and differences({"a": 1}, {"b": 1})
    assert differences([1e25], [10**25])


# ----------------------------------------------------------------------------- strategies

# JSON text that json.dumps cannot write from a Python value (or would write differently): put into
# a body as a placeholder string and substituted into the serialized text.
RAW_TOKENS = [
    "1e999",
    "-1e999",
    "NaN",
    "Infinity",
    "-Infinity",
    "1e-400",
    "-0",
    "-0.0",
    "0e0",
    "1E2",
    "0.00100000000000000000001",
    "1" + "0" * 5000,
    "5e-324",
    "2.4703282292062328e-324",
    '"\\ud800"',
    '"x\\udfff"',
    '"\\udc00\\ud800"',
    '"a\\u0000b"',
    '"\\ud83d\\ude00"',
    '"\\u0000"',
    '"\\uffff"',
    '"\\udbff\\udfff"',
    "[]",
    "{}",
    '""',
    "null",
    "true",
    "false",
]
EXTREME_NUMBERS: list[Any] = [
    1e308,
    -1e308,
    1.7976931348623157e308,
    5e-324,
    -5e-324,
    -0.0,
    0.0,
    2.2250738585072014e-308,
    3.4028234663852886e38,
    3.4028235677973366e38,
    3.5e38,
    1.401298464324817e-45,
    7.1e-46,
    7e-46,
    1e-45,
    1e25,
    1e16,
    0.1,
    0.999,
    0.9999999999999999,
    1.0,
    1,
    0,
    -1,
    2**31 - 1,
    2**31,
    -(2**31),
    2**53 + 1,
    2**63,
    10**30,
    -(10**30),
    10**100,
]
SPECIAL_CHARS = [
    "\ud800",
    "\udfff",
    "\x00",
    "\U0001f600",
    "\u2028",
    "\ufeff",
    "\uffff",
    "\U0010ffff",
    " ",
    "\t",
    "\n",
    "\u3000",
    "\u00e9",
    "\u4e2d",
    "\x1f",
    "\x7f",
    '"',
    "\\",
    "/",
    "'",
]

chars = st.one_of(st.characters(), st.sampled_from(SPECIAL_CHARS))
names = st.one_of(
    st.text(chars, min_size=1, max_size=30),
    st.builds(
        lambda c, n: c * n,
        st.sampled_from(["n", "\U0001f600", "\u00e9", " x"]),
        st.integers(95, 210),
    ),
    st.sampled_from(["", " ", "  a  ", "\u3000name\u3000", "\x1c\x1dz", "e\u0301"]),
)
raw_tokens = st.builds(lambda i: f"\x01RAW{i}\x01", st.integers(0, len(RAW_TOKENS) - 1))
numbers = st.one_of(
    st.sampled_from(EXTREME_NUMBERS),
    st.floats(allow_nan=False, allow_infinity=False),
    st.integers(-(10**30), 10**30),
)
scalars = st.one_of(st.none(), st.booleans(), st.text(chars, max_size=12), numbers, raw_tokens)
junk = st.recursive(
    scalars,
    lambda inner: st.one_of(
        st.lists(inner, max_size=4), st.dictionaries(st.text(chars, max_size=8), inner, max_size=3)
    ),
    max_leaves=8,
)
# Learning rates around float32's range: valid ones, and some just outside.
lrs = st.one_of(
    st.floats(min_value=1e-45, max_value=3.5e38),
    st.sampled_from([1e-3, 1e-2, 0.1, 1.0, 3.0e38, 1.5e-45, 1e25, 0.30000000000000004]),
)
betas_ = st.one_of(st.floats(min_value=0.0, max_value=1.0), st.sampled_from([-0.0, 0.999, 0.0]))


@st.composite
def noop_configs(draw: st.DrawFn) -> dict[str, Any]:
    config: dict[str, Any] = {}
    optional = {
        "steps_per_epoch": st.integers(0, 10_000_001),
        "sleep_s": st.one_of(st.floats(0, 3601), st.sampled_from([-0.0, 5e-324, 3600.0])),
        "eval_every": st.one_of(st.integers(1, 10), st.sampled_from([10**30, 2**63])),
        "fail_at_step": st.integers(1, 10**30),
        "fail_seeds": st.lists(st.integers(-(10**30), 10**30), max_size=4),
        "diverge_at_step": st.integers(1, 10**6),
        "hang_at_step": st.one_of(st.none(), st.integers(1, 100)),
    }
    for key, strategy in optional.items():
        if draw(st.booleans()):
            config[key] = draw(strategy)
    return config


@st.composite
def valid_ish_specs(draw: st.DrawFn) -> dict[str, Any]:
    """A small noop spec, mostly valid: every optional field drawn from around its valid range."""
    spec: dict[str, Any] = {"name": draw(names), "workload": "noop"}
    optimizers = draw(st.lists(st.sampled_from(OPTIMIZERS), min_size=1, max_size=3, unique=True))
    spec["optimizers"] = optimizers
    if draw(st.booleans()):
        spec["lr"] = {"values": draw(st.lists(lrs, min_size=1, max_size=4))}
    else:
        low = draw(lrs)
        spec["lr"] = {
            "min": low,
            "max": draw(st.one_of(st.just(low * 10), lrs)),
            "points": draw(st.integers(1, 4)),
        }
    spec["seeds"] = draw(st.integers(1, 2))
    spec["budget"] = draw(
        st.one_of(
            st.fixed_dictionaries({"steps": st.integers(1, 100_000_000)}),
            st.fixed_dictionaries(
                {"epochs": st.integers(1, 100_000)},
                optional={"max_seconds": st.floats(5e-324, 2_592_000.0)},
            ),
        )
    )
    optional: dict[str, st.SearchStrategy[Any]] = {
        "workload_config": noop_configs(),
        "reference": st.sampled_from([*optimizers, "sgd"]),
        "beta3": st.lists(betas_, min_size=1, max_size=2),
        "warmup_steps": st.lists(
            st.one_of(st.integers(0, 100_000_000), st.just("auto")), min_size=1, max_size=2
        ),
        "schedule": st.lists(st.sampled_from(["constant", "cosine"]), min_size=1, max_size=2),
        "betas": st.lists(betas_, min_size=2, max_size=2),
        "eps": st.one_of(lrs, st.just(1e-8)),
        "weight_decay": st.one_of(st.sampled_from([0.0, -0.0, 3.0e38, 5e-324]), st.floats(0, 1)),
        "target_loss": numbers,
        "priority": st.one_of(st.integers(-(2**31 - 1), 2**31 - 1), st.sampled_from([2**31])),
        "reuse": st.booleans(),
    }
    for key, strategy in optional.items():
        if draw(st.integers(0, 2)) == 0:
            spec[key] = draw(strategy)
    return spec


def _paths(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    found = [prefix] if prefix else []
    if isinstance(value, dict):
        for key, item in value.items():
            found += _paths(item, (*prefix, key))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found += _paths(item, (*prefix, index))
    return found


def _parent(body: Any, path: tuple[Any, ...]) -> Any:
    for part in path[:-1]:
        body = body[part]
    return body


@st.composite
def mutated(draw: st.DrawFn, spec: dict[str, Any]) -> Any:
    """``spec`` with up to three mutations: a field dropped, replaced by junk, an unknown key added,
    a list value repeated or the list made long; rarely a body that is not an object at all."""
    if draw(st.integers(0, 30)) == 0:
        return draw(junk)
    for _ in range(draw(st.integers(0, 3))):
        paths = _paths(spec)
        kind = draw(st.sampled_from(["drop", "replace", "replace", "add", "repeat", "long"]))
        path = draw(st.sampled_from(paths)) if paths else None
        if path is None:
            break
        parent = _parent(spec, path)
        key = path[-1]
        if kind == "drop":
            del parent[key]
        elif kind == "replace":
            parent[key] = draw(junk)
        elif kind == "add":
            target = parent if isinstance(parent, dict) else spec
            target[
                draw(
                    st.one_of(
                        st.sampled_from(
                            ["seed", "lr_values", "colour", "values", "Name", "nam\ud800e", "k\x00"]
                        ),
                        st.text(chars, max_size=10),
                    )
                )
            ] = draw(junk)
        elif kind == "repeat" and isinstance(parent, list):
            parent.append(parent[key])
        elif kind == "long" and isinstance(parent, list):
            parent.extend([parent[key]] * draw(st.integers(1, 300)))
    return spec


def to_json(body: Any) -> bytes:
    """Serialized with escapes (a lone surrogate stays "\\ud800"), placeholders made raw text."""
    text = json.dumps(body, ensure_ascii=True, allow_nan=False)
    for index, token in enumerate(RAW_TOKENS):
        text = text.replace(json.dumps(f"\x01RAW{index}\x01"), token)
    return text.encode("ascii")


bodies = valid_ish_specs().map(copy.deepcopy).flatmap(mutated).map(to_json)


# ----------------------------------------------------------------------------- property


def _local_normalized(raw: bytes) -> tuple[dict[str, Any] | None, list[dict[str, Any]] | None]:
    """What this process makes of the body: the normalized spec and the grid's params, or None."""
    try:
        spec = parse_spec(raw, max_trials=MAX_TRIALS)
    except RequestValidationError:
        return None, None
    params = [config.params() for config in expand_grid(spec)]
    return spec.model_dump(mode="json"), json.loads(json.dumps(params))


def _check_answer(server: Server, raw: bytes, response: httpx.Response) -> None:
    assert response.status_code < 500, (
        f"{response.status_code} for {raw[:2000]!r}: {response.text[:2000]}\n{server.log_tail()}"
    )
    assert response.headers["content-type"].startswith("application/json"), response.headers
    payload = json.loads(response.text)
    if response.status_code >= 400:
        assert 400 <= response.status_code < 500
        assert isinstance(payload, dict) and "detail" in payload, payload
        assert payload["detail"], payload
    else:
        assert response.status_code in (200, 201), response.text


def _check_stored(server: Server, raw: bytes, created: dict[str, Any]) -> None:
    expected_spec, expected_params = _local_normalized(raw)
    assert expected_spec is not None, f"the server accepted what validation refuses: {raw!r}"
    answered = created["spec"]
    problems = differences(answered, expected_spec, "POST.spec")
    assert not problems, problems

    got = server.client.get(f"/studies/{created['id']}")
    assert got.status_code == 200, got.text
    stored = json.loads(got.text)
    problems = differences(stored["spec"], answered, "GET.spec")
    assert not problems, problems
    assert stored["name"] == answered["name"] == created["name"]
    assert stored["n_trials"] == created["n_trials"] == len(expected_params)

    trials = server.client.get(f"/studies/{created['id']}/trials")
    assert trials.status_code == 200, trials.text
    listing = sorted(json.loads(trials.text), key=lambda t: t["number"])
    assert [t["number"] for t in listing] == list(range(len(expected_params)))
    problems = differences([t["params"] for t in listing], expected_params, "trials.params")
    assert not problems, problems[:10]


@settings(
    max_examples=100,
    deadline=None,
    database=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
@given(raw=bodies, idempotent=st.booleans())
def test_any_body_is_stored_identically_or_refused_with_a_4xx(
    server: Server, raw: bytes, idempotent: bool
) -> None:
    note(f"body: {raw.decode('ascii')}")
    headers = dict(JSON_HEADERS)
    if idempotent:
        headers["Idempotency-Key"] = f"prop-{uuid.uuid4().hex}"
    response = server.client.post("/studies", content=raw, headers=headers)
    _check_answer(server, raw, response)
    if response.status_code >= 400:
        return
    assert response.status_code == 201, response.text
    created = json.loads(response.text)
    _check_stored(server, raw, created)
    if idempotent:
        again = server.client.post("/studies", content=raw, headers=headers)
        _check_answer(server, raw, again)
        assert again.status_code in (200, 201), again.text
        repeat = json.loads(again.text)
        assert repeat["id"] == created["id"]
        problems = differences(repeat["spec"], created["spec"], "repeat.spec")
        assert not problems, problems


# ----------------------------------------------------------------------------- 1 MB bodies

VALID = {
    "name": "padded",
    "workload": "noop",
    "workload_config": {"steps_per_epoch": 2},
    "optimizers": ["adam"],
    "lr": {"values": [0.01]},
    "seeds": 1,
    "budget": {"steps": 2},
}


def _fill(prefix: str, unit: str, suffix: str, size: int = MAX_BODY_BYTES) -> bytes:
    """prefix + unit * n + suffix, as close to ``size`` bytes as whole units allow."""
    n = (size - len(prefix) - len(suffix)) // len(unit)
    return (prefix + unit * n + suffix).encode()


def _nested(opening: str, closing: str, middle: str = "") -> bytes:
    n = (MAX_BODY_BYTES - len(middle)) // (len(opening) + len(closing))
    return (opening * n + middle + closing * n).encode()


def _nested_lr_values() -> bytes:
    head, tail = '{"name":"x","workload":"noop","lr":{"values":', "}}"
    n = (MAX_BODY_BYTES - len(head) - len(tail)) // 2
    return (head + "[" * n + "]" * n + tail).encode()


def _flat_list(unit: str) -> bytes:
    head = '{"name":"lr","workload":"noop","lr":{"values":['
    body = _fill(head, unit + ",", "1e-3]}}")
    return body


def _many_keys(prefix: str, suffix: str) -> bytes:
    parts, size, i = [], len(prefix) + len(suffix), 0
    while size < MAX_BODY_BYTES - 40:
        item = f'"seed_{i}":{i},'
        parts.append(item)
        size += len(item)
        i += 1
    return (prefix + "".join(parts) + '"seeds":1' + suffix).encode()


def _padded_valid() -> bytes:
    text = json.dumps(VALID)
    return (text[:-1] + " " * (MAX_BODY_BYTES - len(text)) + "}").encode()


def _distinct_lrs() -> bytes:
    """A 1 MB spec whose lr.values are all different numbers (no collapse to one float)."""
    head, tail = '{"name":"lr","workload":"noop","lr":{"values":[', "]}}"
    items: list[str] = []
    size = len(head) + len(tail)
    i = 0
    while size < MAX_BODY_BYTES - 30:
        item = repr(1e-6 * (1 + i * 1e-6))
        items.append(item)
        size += len(item) + 1
        i += 1
    body = head + ",".join(items)
    return (body + " " * (MAX_BODY_BYTES - len(body) - len(tail)) + tail).encode()


BIG_BODIES: dict[str, tuple[bytes, tuple[int, ...]]] = {
    "nested arrays": (_nested("[", "]"), (422,)),
    "nested objects": (_nested('{"a":', "}", "1"), (422,)),
    "nested arrays in lr.values": (_nested_lr_values(), (422,)),
    "flat lr.values list": (_flat_list("1e-3"), (422,)),
    "flat list of distinct lrs": (_distinct_lrs(), (422,)),
    "flat list of bad lrs": (_flat_list('"x"'), (422,)),
    "flat list of nulls": (_fill("[", "null,", "null]"), (422,)),
    "huge name": (_fill('{"workload":"noop","name":"', "n", '"}'), (422,)),
    "huge escaped name": (_fill('{"workload":"noop","name":"', "\\u00e9", '"}'), (422,)),
    "huge key": (_fill('{"workload":"noop","name":"x","', "k", '":1}'), (422,)),
    "lone surrogates": (
        _fill('{"name":"x","workload":"noop","lr":["', '\\ud800","', 'x"]}'),
        (422,),
    ),
    "many unknown keys": (_many_keys('{"name":"x","workload":"noop",', "}"), (422,)),
    "many keys in workload_config": (
        _many_keys('{"name":"x","workload":"noop","workload_config":{', "}}"),
        (422,),
    ),
    "many optimizers": (
        _fill('{"name":"x","workload":"noop","optimizers":[', '"adam",', '"sgd"]}'),
        (422,),
    ),
    "long number": (_fill('{"name":"x","workload":"noop","eps":0.', "0", "1}"), (422,)),
    "long integer": (_fill('{"name":"x","workload":"noop","seeds":', "9", "}"), (422,)),
    "whitespace": (_fill("", " ", ""), (422,)),
    "padded valid spec": (_padded_valid(), (201,)),
    "one byte over the limit": (_fill('{"name":"', "x", '"}', MAX_BODY_BYTES + 1), (413,)),
}


class HealthPoller(threading.Thread):
    """Polls /healthz until stopped, recording each answer's status and latency."""

    def __init__(self, url: str) -> None:
        super().__init__(daemon=True)
        self.url = url
        self.stop = threading.Event()
        self.answers: list[tuple[int, float]] = []

    def run(self) -> None:
        with httpx.Client(base_url=self.url, timeout=10) as client:
            while not self.stop.is_set():
                start = time.perf_counter()
                try:
                    status = client.get("/healthz").status_code
                except httpx.HTTPError:
                    status = -1
                self.answers.append((status, time.perf_counter() - start))
                self.stop.wait(0.02)


def test_big_bodies_are_exactly_the_size_meant() -> None:
    for name, (raw, statuses) in BIG_BODIES.items():
        if 413 in statuses:
            assert len(raw) == MAX_BODY_BYTES + 1, name
        else:
            assert MAX_BODY_BYTES - 60 <= len(raw) <= MAX_BODY_BYTES, (name, len(raw))
        raw.decode("ascii")


@pytest.mark.parametrize("shape", list(BIG_BODIES))
def test_a_1mb_body_is_answered_within_a_second_while_healthz_answers(
    server: Server, shape: str
) -> None:
    raw, statuses = BIG_BODIES[shape]
    server.client.post("/studies", content=b"{}", headers=JSON_HEADERS)  # warm: imports, pools
    poller = HealthPoller(server.url)
    poller.start()
    try:
        time.sleep(0.1)
        start = time.perf_counter()
        response = server.client.post("/studies", content=raw, headers=JSON_HEADERS)
        elapsed = time.perf_counter() - start
        time.sleep(0.1)
    finally:
        poller.stop.set()
        poller.join(timeout=15)
    assert response.status_code in statuses, response.text[:1000]
    if response.status_code >= 400:
        assert "detail" in response.json()
        assert len(response.content) < 100_000, len(response.content)  # no echo of the body
    assert elapsed <= 1.0, f"{shape}: answered in {elapsed:.2f} s"
    assert len(poller.answers) >= 3, poller.answers
    slow = [(s, round(t, 3)) for s, t in poller.answers if s != 200 or t > 1.0]
    worst = max(t for _, t in poller.answers)
    assert not slow, f"{shape}: /healthz answers {slow} (worst {worst:.2f} s)"
    assert math.isfinite(worst)
