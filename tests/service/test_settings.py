"""Settings come from ADAMOD_LAB_* variables, with safe defaults."""

from __future__ import annotations

import pytest
from pydantic import ValidationError

from service.settings import Settings


def test_defaults_bind_loopback_and_cap_trials(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("ADAMOD_LAB_DATABASE_URL", "ADAMOD_LAB_API_TOKENS", "ADAMOD_LAB_HOST"):
        monkeypatch.delenv(name, raising=False)
    settings = Settings()
    assert settings.host == "127.0.0.1"
    assert settings.max_trials == 5000
    assert settings.api_tokens == []
    assert settings.database_url == "sqlite:///./adamod_lab.db"


def test_environment_is_read(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAMOD_LAB_API_TOKENS", " alpha, beta ,, ")
    monkeypatch.setenv("ADAMOD_LAB_DATABASE_URL", "postgresql+psycopg://u@h/db")
    monkeypatch.setenv("ADAMOD_LAB_MAX_TRIALS", "12")
    settings = Settings()
    assert settings.api_tokens == ["alpha", "beta"]
    assert settings.database_url == "postgresql+psycopg://u@h/db"
    assert settings.max_trials == 12
    assert "alpha" not in repr(settings)  # tokens never end up in logs


@pytest.mark.parametrize(
    ("field", "value"),
    [("max_trials", 0), ("port", 70000), ("max_body_bytes", 10), ("database_url", " ")],
)
def test_bad_settings_name_the_field(field: str, value: object) -> None:
    with pytest.raises(ValidationError, match=field):
        Settings(**{field: value})
