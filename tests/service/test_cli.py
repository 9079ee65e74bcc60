"""The adamod-lab command line: help for every command, and clear errors before any request."""

from __future__ import annotations

from pathlib import Path

import pytest

from service.cli import build_parser, main
from service.version import __version__

COMMANDS = ("serve", "up", "submit", "status", "list", "cancel", "retry", "report")


def test_top_level_help_lists_every_command(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["--help"])
    assert exit_info.value.code == 0
    out = capsys.readouterr().out
    for command in (*COMMANDS, "worker"):
        assert command in out
    assert "ADAMOD_LAB_URL" in out


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command: str, capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main([command, "--help"])
    assert exit_info.value.code == 0
    assert f"adamod-lab {command}" in capsys.readouterr().out


def test_worker_help_is_the_workers_own(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(["worker", "--help"])
    assert exit_info.value.code == 0
    assert "--database-url" in capsys.readouterr().out


def test_up_defaults() -> None:
    args = build_parser().parse_args(["up"])
    assert (args.workers, args.host, args.port) == (2, "127.0.0.1", 8000)


def test_submit_missing_file_is_a_clear_error(tmp_path: Path) -> None:
    with pytest.raises(SystemExit, match=r"cannot read .*nope\.yaml"):
        main(["submit", str(tmp_path / "nope.yaml"), "--url", "http://127.0.0.1:9"])


def test_submit_non_mapping_is_a_clear_error(tmp_path: Path) -> None:
    spec = tmp_path / "list.yaml"
    spec.write_text("- 1\n- 2\n")
    with pytest.raises(SystemExit, match="must hold a mapping"):
        main(["submit", str(spec), "--url", "http://127.0.0.1:9"])


def test_unreachable_server_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["status", "1", "--url", "http://127.0.0.1:9"]) == 1
    assert "cannot reach http://127.0.0.1:9" in capsys.readouterr().err


@pytest.mark.parametrize("argv", [["status", "abc"], ["up", "--workers", "two"], ["report", "1"]])
def test_bad_arguments_exit_2(argv: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_serve_names_an_invalid_setting(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ADAMOD_LAB_MAX_TRIALS", "zero")
    with pytest.raises(SystemExit, match="ADAMOD_LAB_MAX_TRIALS"):
        main(["serve"])


def test_version_is_the_packages(capsys: pytest.CaptureFixture[str]) -> None:
    from importlib.metadata import version

    with pytest.raises(SystemExit) as exit_info:
        main(["--version"])
    assert exit_info.value.code == 0
    assert capsys.readouterr().out.strip() == f"adamod-lab {__version__}"
    assert __version__ == version("adamod-lab")  # the installed distribution says the same


@pytest.mark.parametrize(
    "argv", [["cancel"], ["cancel", "x"], ["retry"], ["retry", "x"], ["list", "--limit", "many"]]
)
def test_new_commands_check_their_arguments(
    argv: list[str], capsys: pytest.CaptureFixture[str]
) -> None:
    with pytest.raises(SystemExit) as exit_info:
        main(argv)
    assert exit_info.value.code == 2
    assert "error" in capsys.readouterr().err


def test_list_limit_must_be_positive() -> None:
    with pytest.raises(SystemExit, match="--limit must be >= 1"):
        main(["list", "--limit", "0", "--url", "http://127.0.0.1:9"])


def test_cli_statuses_are_the_apis() -> None:
    from service.cli import STUDY_STATUSES
    from service.schemas import STUDY_STATUSES as API_STATUSES

    assert STUDY_STATUSES == API_STATUSES
