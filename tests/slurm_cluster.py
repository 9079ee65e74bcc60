"""A real one-node Slurm cluster for tests: munged, slurmctld and slurmd as child processes.

Everything lives in one temporary directory: slurm.conf (no cgroups: proctrack/linuxproc,
task/none), a munge key and munged's socket, state, spool, pid and log files; the ports are
picked free. Clients (sbatch, squeue, scancel, srun inside jobs) find the cluster through
SLURM_CONF, which `env()` sets. Runs as whoever runs the tests (root on CI): that user is
SlurmUser and SlurmdUser, so jobs run as the submitter without setuid.
"""

from __future__ import annotations

import getpass
import os
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

BINARIES = (
    "munged",
    "slurmctld",
    "slurmd",
    "sbatch",
    "squeue",
    "scancel",
    "scontrol",
    "srun",
    "sinfo",
)


def missing_binaries() -> list[str]:
    """The Slurm and munge programs this machine lacks (the tests skip when any is missing)."""
    return [name for name in BINARIES if _which(name) is None]


def _which(name: str) -> str | None:
    # The daemons live in /usr/sbin, which a non-login PATH may lack.
    return shutil.which(name) or shutil.which(name, path="/usr/sbin:/sbin")


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _cpus() -> int:
    """The CPUs slurmd sees (`slurmd -C`), so that the node registers without a mismatch."""
    try:
        out = subprocess.run(
            [str(_which("slurmd")), "-C"], capture_output=True, text=True, timeout=20
        ).stdout
        for word in out.split():
            if word.startswith("CPUs="):
                return int(word.split("=", 1)[1])
    except (OSError, ValueError, subprocess.SubprocessError):
        pass
    return os.cpu_count() or 1


class SlurmCluster:
    """One controller and one compute node on this machine, in `directory`."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        self.node = socket.gethostname().split(".")[0]
        self.conf = directory / "slurm.conf"
        self.munge_socket = directory / "munge" / "munge.socket"
        self.processes: dict[str, subprocess.Popen[bytes]] = {}

    def env(self) -> dict[str, str]:
        """The environment for Slurm clients (and the jobs they submit) of this cluster."""
        path = os.environ.get("PATH", "")
        return {**os.environ, "SLURM_CONF": str(self.conf), "PATH": f"{path}:/usr/sbin:/sbin"}

    def start(self, timeout: float = 60.0) -> None:
        """Writes the configuration, starts the daemons and waits until the node is idle."""
        try:
            self._write_munge_key()
            self._start(
                "munged",
                [
                    str(_which("munged")),
                    "--foreground",
                    f"--socket={self.munge_socket}",
                    f"--key-file={self.directory / 'munge' / 'munge.key'}",
                    f"--pid-file={self.directory / 'munge' / 'munged.pid'}",
                    f"--log-file={self.directory / 'munge' / 'munged.log'}",
                    f"--seed-file={self.directory / 'munge' / 'munged.seed'}",
                    "--force",
                ],
            )
            self._wait(lambda: self.munge_socket.exists(), 15, "munged's socket")
            self._write_conf()
            self._start("slurmctld", [str(_which("slurmctld")), "-D", "-i", "-f", str(self.conf)])
            self._start(
                "slurmd", [str(_which("slurmd")), "-D", "-f", str(self.conf), "-N", self.node]
            )
            self._wait(self._node_idle, timeout, "the Slurm node to become idle")
        except BaseException:
            self.stop()
            raise

    def _write_munge_key(self) -> None:
        munge = self.directory / "munge"
        munge.mkdir(mode=0o700, parents=True, exist_ok=True)
        key = munge / "munge.key"
        key.write_bytes(os.urandom(1024))
        key.chmod(0o600)

    def _write_conf(self) -> None:
        for name in ("state", "spool", "jobs"):
            (self.directory / name).mkdir(exist_ok=True)
        user = getpass.getuser()
        d = self.directory
        lines = [
            "ClusterName=adamodtest",
            f"SlurmctldHost={self.node}(127.0.0.1)",
            f"SlurmUser={user}",
            f"SlurmdUser={user}",
            f"SlurmctldPort={_free_port()}",
            f"SlurmdPort={_free_port()}",
            "AuthType=auth/munge",
            "CredType=cred/munge",
            f"AuthInfo=socket={self.munge_socket}",
            f"StateSaveLocation={d / 'state'}",
            f"SlurmdSpoolDir={d / 'spool'}",
            f"SlurmctldPidFile={d / 'slurmctld.pid'}",
            f"SlurmdPidFile={d / 'slurmd.pid'}",
            f"SlurmctldLogFile={d / 'slurmctld.log'}",
            f"SlurmdLogFile={d / 'slurmd.log'}",
            "SlurmctldDebug=info",
            "SlurmdDebug=info",
            "ProctrackType=proctrack/linuxproc",
            "TaskPlugin=task/none",
            "SelectType=select/cons_tres",
            "SelectTypeParameters=CR_CPU",
            "SchedulerType=sched/builtin",
            "SwitchType=switch/none",
            "MpiDefault=none",
            "JobAcctGatherType=jobacct_gather/none",
            "AccountingStorageType=accounting_storage/none",
            "JobCompType=jobcomp/none",
            "ReturnToService=2",
            # Finished jobs leave squeue within seconds (default 300 s), and kills are quick.
            "MinJobAge=2",
            "KillWait=15",
            "InactiveLimit=0",
            "SlurmdTimeout=60",
            f"NodeName={self.node} NodeAddr=127.0.0.1 CPUs={_cpus()} State=UNKNOWN",
            "PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP",
        ]
        self.conf.write_text("\n".join(lines) + "\n")

    def _start(self, name: str, command: list[str]) -> None:
        log = open(self.directory / f"{name}.stdout", "wb")  # noqa: SIM115 - closed by the OS
        self.processes[name] = subprocess.Popen(
            command, stdout=log, stderr=subprocess.STDOUT, env=self.env(), start_new_session=True
        )

    def _node_idle(self) -> bool:
        for name, process in self.processes.items():
            if process.poll() is not None:
                raise RuntimeError(f"{name} exited with {process.returncode}:\n{self.logs()}")
        state = self.run(["sinfo", "--noheader", "-n", self.node, "-o", "%t"], check=False)
        return state.returncode == 0 and state.stdout.strip() == "idle"

    def run(self, command: list[str], *, check: bool = True) -> subprocess.CompletedProcess[str]:
        """Runs a Slurm client against this cluster."""
        return subprocess.run(
            command, env=self.env(), capture_output=True, text=True, timeout=30, check=check
        )

    def squeue(self, job: str | None = None) -> list[str]:
        """The job ids in the queue (array tasks expanded), optionally of one job."""
        command = ["squeue", "--noheader", "-r", "-o", "%i"]
        if job is not None:
            command += ["-j", job]
        result = self.run(command, check=False)
        if result.returncode != 0:  # a finished job's id is "invalid" once purged
            return []
        return [line.strip() for line in result.stdout.splitlines() if line.strip()]

    def logs(self) -> str:
        """The daemons' logs, for a failing test's message."""
        parts = []
        for path in (
            self.directory / "slurmctld.log",
            self.directory / "slurmd.log",
            self.directory / "munge" / "munged.log",
            *sorted(self.directory.glob("*.stdout")),
        ):
            if path.exists():
                parts.append(f"--- {path.name}\n{path.read_text(errors='replace')[-4000:]}")
        return "\n".join(parts)

    def stop(self) -> None:
        """Stops every daemon (and whatever jobs slurmd still runs)."""
        if "slurmctld" in self.processes and self.conf.exists():
            subprocess.run(
                ["scancel", "--full", "--user", getpass.getuser()],
                env=self.env(),
                capture_output=True,
                timeout=30,
                check=False,
            )
        for name in ("slurmd", "slurmctld", "munged"):
            process = self.processes.pop(name, None)
            if process is None or process.poll() is not None:
                continue
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=15)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)

    @staticmethod
    def _wait(predicate, timeout: float, what: str) -> None:  # type: ignore[no-untyped-def]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.2)
        raise RuntimeError(f"timed out after {timeout} s waiting for {what}")
