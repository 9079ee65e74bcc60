"""The API's start-up pays the workload registry's imports, not its first POST /studies."""

from __future__ import annotations

from pathlib import Path

from tests.fresh_interpreter import run_fresh


def test_start_up_loads_the_workload_registry(tmp_path: Path) -> None:
    out = run_fresh(
        f"""
        import sys
        from fastapi.testclient import TestClient
        from service.app import create_app
        from service.settings import Settings
        app = create_app(Settings(database_url="sqlite:///{tmp_path}/api.db"))
        before = "studies.workloads.digits_mlp" in sys.modules
        with TestClient(app):
            print(before, "studies.workloads.digits_mlp" in sys.modules)
        """
    )
    assert out == "False True"
