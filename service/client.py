"""A small HTTP client of the REST API, used by the CLI's client commands (submit, status, ...)."""

from __future__ import annotations

import os
from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"


class ApiError(RuntimeError):
    """The server answered with an error status (or could not be reached: status None)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class Client:
    """Talks to one AdaMod Lab server; the token (if any) is sent on every request."""

    def __init__(self, url: str | None = None, token: str | None = None, timeout: float = 60.0):
        self.url = (url or os.environ.get("ADAMOD_LAB_URL") or DEFAULT_URL).rstrip("/")
        token = token if token is not None else os.environ.get("ADAMOD_LAB_API_TOKEN")
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._http = httpx.Client(base_url=self.url, headers=headers, timeout=timeout)

    def close(self) -> None:
        """Closes the connection pool."""
        self._http.close()

    def request(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """One request; raises ApiError naming the status and the server's detail on failure."""
        try:
            response = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise ApiError(f"cannot reach {self.url}: {exc}") from exc
        if response.status_code >= 400:
            try:
                detail: Any = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise ApiError(
                f"{method} {path} -> {response.status_code}: {_format_detail(detail)}",
                status=response.status_code,
            )
        return response

    def submit(self, spec: dict[str, Any], idempotency_key: str | None = None) -> dict[str, Any]:
        """POST /studies; the created StudyOut."""
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        return self.request("POST", "/studies", json=spec, headers=headers).json()

    def study(self, study_id: int) -> dict[str, Any]:
        """GET /studies/{id}."""
        return self.request("GET", f"/studies/{study_id}").json()

    def studies(
        self, status: str | None = None, limit: int = 50, offset: int = 0
    ) -> list[dict[str, Any]]:
        """GET /studies: one page, newest first, optionally only those in ``status``."""
        params: dict[str, Any] = {"limit": limit, "offset": offset}
        if status is not None:
            params["status"] = status
        return self.request("GET", "/studies", params=params).json()

    def cancel(self, study_id: int) -> dict[str, Any]:
        """DELETE /studies/{id}: the cancelled StudyOut."""
        return self.request("DELETE", f"/studies/{study_id}").json()

    def retry(self, study_id: int) -> dict[str, Any]:
        """POST /studies/{id}/retry: the StudyOut with `requeued`, the trials queued again."""
        return self.request("POST", f"/studies/{study_id}/retry").json()

    def report(self, study_id: int) -> dict[str, Any]:
        """GET /studies/{id}/report."""
        return self.request("GET", f"/studies/{study_id}/report").json()

    def get_bytes(self, path: str) -> bytes:
        """GET any path, as bytes (figures, HTML)."""
        return self.request("GET", path).content


def _format_detail(detail: Any) -> str:
    # 422 details are lists of {"loc", "msg"}: show them as "body.lr.min: msg".
    if isinstance(detail, list):
        parts = []
        for item in detail:
            if isinstance(item, dict):
                loc = ".".join(str(p) for p in item.get("loc", []))
                parts.append(f"{loc}: {item.get('msg')}")
            else:
                parts.append(str(item))
        return "; ".join(parts)
    return str(detail)
