"""Settings come from ADAMOD_LAB_* variables, with safe defaults."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from pydantic import ValidationError

from service.cli import main as cli_main
from service.cli_up import load_settings
from service.settings import SecretFileError, Settings
from studies.db.engine import database_url_from_env


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


# The secrets-file convention of the postgres image: NAME_FILE names a file holding NAME's value.
SECRET_VARIABLES = (
    "ADAMOD_LAB_DATABASE_URL",
    "ADAMOD_LAB_DATABASE_URL_FILE",
    "ADAMOD_LAB_API_TOKENS",
    "ADAMOD_LAB_API_TOKENS_FILE",
)


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch) -> pytest.MonkeyPatch:
    for name in SECRET_VARIABLES:
        monkeypatch.delenv(name, raising=False)
    return monkeypatch


def test_secrets_are_read_from_files(clean_env: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url_file = tmp_path / "database_url"
    url_file.write_text("postgresql+psycopg://adamod:s3cret@db:5432/adamod_lab\n")
    tokens_file = tmp_path / "tokens"
    tokens_file.write_text(" alpha, beta\n")
    clean_env.setenv("ADAMOD_LAB_DATABASE_URL_FILE", str(url_file))
    clean_env.setenv("ADAMOD_LAB_API_TOKENS_FILE", str(tokens_file))
    settings = Settings()
    assert settings.database_url == "postgresql+psycopg://adamod:s3cret@db:5432/adamod_lab"
    assert settings.api_tokens == ["alpha", "beta"]
    assert database_url_from_env() == settings.database_url  # the workers' reader agrees
    # An argument (the command line's --database-url) wins over the file.
    assert Settings(database_url="sqlite:///x.db").database_url == "sqlite:///x.db"
    # An empty _FILE variable counts as unset.
    clean_env.setenv("ADAMOD_LAB_DATABASE_URL_FILE", "")
    assert Settings().database_url == "sqlite:///./adamod_lab.db" == database_url_from_env()


def _bad_files(tmp_path: Path) -> list[tuple[str, str]]:
    empty = tmp_path / "empty"
    empty.write_text(" \n")
    return [
        (str(tmp_path / "missing"), "cannot read the file: No such file or directory"),
        (str(tmp_path), "cannot read the file: Is a directory"),
        (str(empty), "the file is empty"),
    ]


@pytest.mark.parametrize("case", [0, 1, 2])
@pytest.mark.parametrize("name", ["ADAMOD_LAB_DATABASE_URL", "ADAMOD_LAB_API_TOKENS"])
def test_an_unusable_secrets_file_stops_start_up(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, name: str, case: int
) -> None:
    path, reason = _bad_files(tmp_path)[case]
    clean_env.setenv(f"{name}_FILE", path)
    expected = f"{name}_FILE={path}: {reason}"
    with pytest.raises(SecretFileError) as info:
        Settings()
    assert str(info.value) == expected
    with pytest.raises(SystemExit) as exited:
        load_settings("serve")
    assert str(exited.value) == f"adamod-lab serve: invalid setting: {expected}"
    if name == "ADAMOD_LAB_DATABASE_URL":
        with pytest.raises(ValueError, match=re.escape(expected)):
            database_url_from_env()


def test_a_variable_and_its_file_together_are_refused(
    clean_env: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret = tmp_path / "secret"
    secret.write_text("alpha")
    for name in ("ADAMOD_LAB_DATABASE_URL", "ADAMOD_LAB_API_TOKENS"):
        clean_env.setenv(name, "sqlite:///y.db" if "URL" in name else "beta")
        clean_env.setenv(f"{name}_FILE", str(secret))
        with pytest.raises(SecretFileError, match=f"both {name} and {name}_FILE are set"):
            Settings()
        clean_env.delenv(name)
        clean_env.delenv(f"{name}_FILE")
    clean_env.setenv("ADAMOD_LAB_DATABASE_URL", "sqlite:///y.db")
    clean_env.setenv("ADAMOD_LAB_DATABASE_URL_FILE", str(secret))
    with pytest.raises(ValueError, match="set only one of them"):
        database_url_from_env()


@pytest.mark.parametrize("command", ["serve", "up"])
def test_serve_and_up_name_an_unusable_secrets_file(
    clean_env: pytest.MonkeyPatch, tmp_path: Path, command: str
) -> None:
    clean_env.setenv("ADAMOD_LAB_DATABASE_URL_FILE", str(tmp_path / "missing"))
    expected = f"ADAMOD_LAB_DATABASE_URL_FILE={tmp_path / 'missing'}: cannot read the file"
    with pytest.raises(SystemExit, match=re.escape(f"adamod-lab {command}: ")) as exited:
        cli_main([command, "--data-dir", str(tmp_path)] if command == "up" else [command])
    assert expected in str(exited.value)
