"""A private, throw-away PostgreSQL cluster for tests that must restart or stop the server itself
(which the shared server at 127.0.0.1:5432 must never be): initdb in a temporary directory, its
own free port, trust auth, fsync off. Skips the test where initdb and pg_ctl are not installed,
or where it runs as root with no unprivileged user to run them as (initdb refuses root)."""

from __future__ import annotations

import glob
import os
import pwd
import shutil
import subprocess
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path

import pytest

from service.processes import free_port

__all__ = ["PrivateCluster", "private_postgres_cluster"]


def _binaries() -> tuple[str, str] | None:
    """initdb and pg_ctl of the newest PostgreSQL under /usr/lib/postgresql, else on PATH."""

    def version(path: str) -> float:
        try:
            return float(Path(path).parent.parent.name)
        except ValueError:
            return 0.0

    for bin_dir in sorted(glob.glob("/usr/lib/postgresql/*/bin"), key=version, reverse=True):
        initdb, pg_ctl = Path(bin_dir, "initdb"), Path(bin_dir, "pg_ctl")
        if initdb.is_file() and pg_ctl.is_file():
            return str(initdb), str(pg_ctl)
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    return (initdb, pg_ctl) if initdb and pg_ctl else None


def _run_as() -> pwd.struct_passwd | None:
    """The user to run the server as: ourselves, or `postgres` (else `nobody`) when root."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            continue
    pytest.skip("running as root with no unprivileged user for initdb")


@dataclass
class PrivateCluster:
    """A running private cluster: its port, SQLAlchemy URL of database `lab`, and pg_ctl."""

    port: int
    url: str
    data: Path
    log: Path
    pg_ctl: str
    user: pwd.struct_passwd | None

    def ctl(self, *args: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
        """Runs pg_ctl on this cluster (as the cluster's user); fails the test on an error."""
        return _run([self.pg_ctl, "-D", str(self.data), *args], self.user, timeout)

    def restart(self, mode: str = "fast") -> None:
        """pg_ctl restart -m MODE, waiting until the server accepts connections again."""
        self.ctl("restart", "-m", mode, "-w", "-l", str(self.log))

    def log_text(self) -> str:
        """The server's log so far."""
        return self.log.read_text(errors="replace") if self.log.exists() else ""


def _run(
    cmd: list[str], user: pwd.struct_passwd | None, timeout: float
) -> subprocess.CompletedProcess[str]:
    extra = {} if user is None else {"user": user.pw_uid, "group": user.pw_gid}
    env = {**os.environ, "LC_ALL": "C", **({} if user is None else {"HOME": user.pw_dir})}
    result = subprocess.run(
        cmd, capture_output=True, text=True, timeout=timeout, env=env, check=False, **extra
    )
    if result.returncode != 0:
        raise AssertionError(f"{cmd[0]} failed ({result.returncode}):\n{result.stderr[-3000:]}")
    return result


@contextmanager
def private_postgres_cluster() -> Iterator[PrivateCluster]:
    """Starts a fresh cluster with an empty database `lab`; stops and deletes it afterwards."""
    binaries = _binaries()
    if binaries is None:
        pytest.skip("initdb/pg_ctl not found (install the PostgreSQL server)")
    initdb, pg_ctl = binaries
    user = _run_as()
    base = Path(tempfile.mkdtemp(prefix="adamod_lab_pg_"))
    data, log = base / "data", base / "server.log"
    if user is not None:  # the server's user must own its directory (and may enter it)
        os.chown(base, user.pw_uid, user.pw_gid)
    port = free_port()
    options = (
        f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off "
        "-c synchronous_commit=off -c full_page_writes=off"
    )
    cluster = PrivateCluster(
        port=port,
        url=f"postgresql+psycopg://postgres@127.0.0.1:{port}/lab",
        data=data,
        log=log,
        pg_ctl=pg_ctl,
        user=user,
    )
    started = False
    try:
        _run(
            [initdb, "-D", str(data), "-U", "postgres", "-A", "trust", "-E", "UTF8", "--no-sync"],
            user,
            timeout=120,
        )
        cluster.ctl("start", "-w", "-o", options, "-l", str(log))
        started = True
        import psycopg

        with psycopg.connect(
            f"postgresql://postgres@127.0.0.1:{port}/postgres", autocommit=True, connect_timeout=10
        ) as admin:
            admin.execute("CREATE DATABASE lab")
        yield cluster
    finally:
        if started:
            with suppress(AssertionError, subprocess.TimeoutExpired):
                cluster.ctl("stop", "-m", "immediate", "-w", timeout=30)
        shutil.rmtree(base, ignore_errors=True)
