"""The web UI's sign-in when reads are protected: a session cookie that stands for a token.

A browser sends no bearer header on a page load, so with ADAMOD_LAB_PROTECT_READS the UI asks for
a token once (POST /ui/session) and keeps a cookie instead. The cookie holds
`v1.<expiry>.<nonce>.<mac>` (the nonce tells sign-ins apart), where mac is HMAC-SHA256 keyed by
HMAC(process secret, token) over what precedes it: never the token,
and nothing from which to find it (the per-process random secret means not even a guess of a weak
token can be checked offline). It stops being valid when its token leaves ADAMOD_LAB_API_TOKENS,
when the server restarts, when it is signed out (revoke), or after TTL_SECONDS. It authorizes
reads (GET, HEAD) only: mutating routes still need the bearer header, so a request forged by
another site can change nothing.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from urllib.parse import urlsplit

COOKIE_NAME = "adamod_lab_session"
TTL_SECONDS = 12 * 3600
_VERSION = "v1"
_SECRET = secrets.token_bytes(32)  # per process: a restart signs every browser out
# Cookies signed out before they expire (value -> expiry): a copy kept elsewhere stops working too.
_revoked: dict[str, int] = {}
_revoked_lock = threading.Lock()
_MAX_REVOKED = 10_000


def _mac(token: str, signed: str) -> bytes:
    key = hmac.new(_SECRET, token.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
    return hmac.new(key, signed.encode(), hashlib.sha256).digest()


def session_value(token: str, now: float | None = None) -> str:
    """A new cookie value for a browser that has shown ``token`` (valid for TTL_SECONDS)."""
    expires = int(time.time() if now is None else now) + TTL_SECONDS
    signed = f"{_VERSION}.{expires}.{secrets.token_hex(16)}"
    return f"{signed}.{_mac(token, signed).hex()}"


def session_is_valid(value: str | None, tokens: list[str], now: float | None = None) -> bool:
    """True when ``value`` is an unexpired cookie made by this process for one of ``tokens``."""
    if not value or not tokens or len(value) > 200:
        return False
    parts = value.split(".")
    if len(parts) != 4 or parts[0] != _VERSION:
        return False
    raw_expires, raw_mac = parts[1], parts[3]
    signed = value[: -len(raw_mac) - 1]
    if not (raw_expires.isascii() and raw_expires.isdigit() and len(raw_expires) <= 12):
        return False
    expires = int(raw_expires)
    now = time.time() if now is None else now
    if not now < expires <= now + TTL_SECONDS + 60:
        return False
    try:
        given = bytes.fromhex(raw_mac)
    except ValueError:
        return False
    matched = False
    for token in tokens:  # no early exit, as for bearer tokens
        matched |= hmac.compare_digest(given, _mac(token, signed))
    return matched and value not in _revoked


def revoke(value: str | None, tokens: list[str]) -> None:
    """Signs a cookie out for good (until it would have expired anyway); ignores invalid ones."""
    if not session_is_valid(value, tokens):
        return
    assert value is not None
    now = time.time()
    with _revoked_lock:
        for old, expires in list(_revoked.items()):
            if expires <= now:
                del _revoked[old]
        if len(_revoked) < _MAX_REVOKED:
            _revoked[value] = int(value.split(".")[1])


def local_path(raw: str | None, default: str) -> str:
    """``raw`` when it is a path on this site (where to go after signing in), else ``default``.

    Refuses anything a browser could read as another origin: a scheme or host, `//` or `/\\`
    (which browsers treat as `//`), control characters (tabs and newlines are dropped by them),
    and non-ASCII (not valid in a Location header as it is).
    """
    if not raw or len(raw) > 2000 or not raw.isascii() or not raw.startswith("/"):
        return default
    if raw.startswith("//") or "\\" in raw or any(ord(c) < 0x20 or ord(c) == 0x7F for c in raw):
        return default
    parts = urlsplit(raw)
    if parts.scheme or parts.netloc:
        return default
    return raw
