"""A real single-host Slurm test cluster for the integration tests.

Thin wrapper around ``.ci/slurm-testbed`` (stdlib only). A testbed lives in one
short directory; every Slurm client needs ``SLURM_CONF`` pointing into it, which
``SlurmTestbed.env`` provides for subprocesses.
"""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import time
from pathlib import Path
from typing import Mapping, Sequence

REPO_ROOT = Path(__file__).resolve().parents[2]
SCRIPT = REPO_ROOT / ".ci" / "slurm-testbed"

# Job states after which a job will not change any more.
TERMINAL_STATES = frozenset(
    {
        "COMPLETED",
        "FAILED",
        "CANCELLED",
        "TIMEOUT",
        "NODE_FAIL",
        "OUT_OF_MEMORY",
        "PREEMPTED",
        "BOOT_FAIL",
        "DEADLINE",
    }
)


class SlurmTestbedError(RuntimeError):
    pass


def slurm_installed() -> bool:
    return shutil.which("slurmctld") is not None or Path("/usr/sbin/slurmctld").exists()


def ports_free(base: int, count: int) -> bool:
    """True if 127.0.0.1:base .. base+count-1 can all be bound."""
    for port in range(base, base + count):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                return False
    return True


def find_port_base(start: int = 17100, step: int = 100, tries: int = 40, nodes: int = 4) -> int:
    """A port block (base .. base+10+nodes) that is free right now."""
    for i in range(tries):
        base = start + i * step
        if ports_free(base, 10 + nodes):
            return base
    raise SlurmTestbedError(f"no free port block found from {start}")


class SlurmTestbed:
    """One testbed cluster in ``directory``.

    ``up()`` starts a fresh one; ``SlurmTestbed(dir)`` on a directory that an
    earlier ``up`` (e.g. CI's) used attaches to it: ``is_up()`` tells whether it runs.
    """

    def __init__(
        self,
        directory: str | os.PathLike[str] = "/tmp/mtslurm",
        *,
        nodes: int = 4,
        acct: str = "none",
        min_job_age: int = 30,
        port_base: int | None = None,
        slurmd_timeout: int | None = None,
        script: str | os.PathLike[str] = SCRIPT,
    ) -> None:
        self.dir = Path(directory).resolve()
        self.nodes = nodes
        self.acct = acct
        self.min_job_age = min_job_age
        self.port_base = port_base
        self.slurmd_timeout = slurmd_timeout
        self.script = Path(script)
        self._read_testbed_conf()

    # ------------------------------------------------------------- state
    @property
    def conf(self) -> Path:
        return self.dir / "etc" / "slurm.conf"

    @property
    def env(self) -> dict[str, str]:
        """os.environ plus SLURM_CONF: pass as ``env=`` to subprocesses."""
        env = dict(os.environ)
        env["SLURM_CONF"] = str(self.conf)
        return env

    @property
    def has_accounting(self) -> bool:
        """True when slurmdbd runs (real ``sacct``); else only ``sacct -c`` works."""
        return self.acct == "slurmdbd"

    @property
    def node_names(self) -> list[str]:
        return [f"n{i}" for i in range(1, self.nodes + 1)]

    @property
    def log_dir(self) -> Path:
        return self.dir / "log"

    def _read_testbed_conf(self) -> None:
        path = self.dir / "testbed.conf"
        if not path.is_file():
            return
        values = {}
        for line in path.read_text().splitlines():
            key, sep, value = line.partition("=")
            if sep:
                values[key.strip()] = value.strip()
        self.nodes = int(values.get("TB_NODES", self.nodes))
        self.acct = values.get("TB_ACCT", self.acct)
        self.min_job_age = int(values.get("TB_MIN_JOB_AGE", self.min_job_age))
        if "TB_PORT_BASE" in values:
            self.port_base = int(values["TB_PORT_BASE"])

    # ------------------------------------------------------------- script
    def _script(self, *args: str, timeout: float = 120, check: bool = True) -> subprocess.CompletedProcess[str]:
        cmd = ["bash", str(self.script), *args, "--dir", str(self.dir)]
        proc = subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            capture_output=True,
            text=True,
            timeout=timeout,
            env=self.env,
        )
        if check and proc.returncode != 0:
            raise SlurmTestbedError(
                f"{' '.join(cmd)} failed (rc={proc.returncode})\n"
                f"--- stdout\n{proc.stdout}\n--- stderr\n{proc.stderr}"
            )
        return proc

    def up(self) -> None:
        args = ["up", "--nodes", str(self.nodes), "--acct", self.acct, "--min-job-age", str(self.min_job_age)]
        if self.port_base is not None:
            args += ["--port-base", str(self.port_base)]
        if self.slurmd_timeout is not None:
            args += ["--slurmd-timeout", str(self.slurmd_timeout)]
        self._script(*args, timeout=120)
        self._read_testbed_conf()

    def down(self) -> None:
        self._script("down", timeout=120)

    def is_up(self) -> bool:
        if not (self.dir / "testbed.conf").is_file():
            return False
        return self._script("status", timeout=30, check=False).returncode == 0

    def wait_idle(self, timeout: int = 30) -> None:
        self._script("wait-idle", "--timeout", str(timeout), timeout=timeout + 30)

    def stop_ctld(self) -> None:
        self._script("stop-ctld", timeout=60)

    def start_ctld(self) -> None:
        self._script("start-ctld", timeout=60)

    def kill_slurmd(self, node: str) -> None:
        self._script("kill-slurmd", "--node", node, timeout=30)

    def start_slurmd(self, node: str) -> None:
        self._script("start-slurmd", "--node", node, timeout=60)

    def smoke(self) -> subprocess.CompletedProcess[str]:
        return self._script("smoke", timeout=180, check=False)

    # ------------------------------------------------------------- clients
    def run(
        self,
        cmd: Sequence[str] | str,
        *,
        check: bool = False,
        timeout: float = 60,
        env: Mapping[str, str] | None = None,
        **kwargs,
    ) -> subprocess.CompletedProcess[str]:
        """Run a (Slurm client) command with SLURM_CONF set; text output captured."""
        full_env = self.env
        if env:
            full_env.update(env)
        kwargs.setdefault("capture_output", True)
        kwargs.setdefault("text", True)
        kwargs.setdefault("stdin", subprocess.DEVNULL)
        return subprocess.run(
            cmd, check=check, timeout=timeout, env=full_env, shell=isinstance(cmd, str), **kwargs
        )

    def sbatch(self, *args: str, wrap: str | None = None) -> str:
        """Submit with ``sbatch --parsable``; return the job id."""
        cmd = ["sbatch", "--parsable", *args]
        if wrap is not None:
            cmd += ["--wrap", wrap]
        proc = self.run(cmd)
        if proc.returncode != 0:
            raise SlurmTestbedError(f"sbatch failed (rc={proc.returncode}): {proc.stderr.strip()}")
        return proc.stdout.strip().split(";")[0]

    def job_info(self, job_id: str) -> dict[str, str]:
        """``scontrol show job -o`` as a dict; {} once the job left slurmctld (MinJobAge)."""
        proc = self.run(["scontrol", "show", "job", "-o", str(job_id)])
        if proc.returncode != 0:
            return {}
        info = {}
        for m in re.finditer(r"(\S+?)=(\S*)", proc.stdout.strip().splitlines()[0] if proc.stdout.strip() else ""):
            info.setdefault(m.group(1), m.group(2))
        return info

    def job_state(self, job_id: str) -> str | None:
        state = self.job_info(job_id).get("JobState")
        if state:
            return state
        # Purged from slurmctld: fall back to the durable record.
        if self.has_accounting:
            proc = self.run(["sacct", "-n", "-X", "-P", "-j", str(job_id), "-o", "state"])
            lines = proc.stdout.split()
            return lines[0] if proc.returncode == 0 and lines else None
        proc = self.run(["sacct", "-c", "-n", "-P", "-o", "jobid,state"])
        found = None
        for line in proc.stdout.splitlines():
            jid, _, st = line.partition("|")
            if jid == str(job_id):
                found = st
        return found

    def wait_job(self, job_id: str, timeout: float = 60, states: frozenset[str] = TERMINAL_STATES) -> str:
        """Poll until the job reaches one of ``states``; return that state."""
        deadline = time.monotonic() + timeout
        state = None
        while time.monotonic() < deadline:
            state = self.job_state(job_id)
            if state is not None and state.split()[0] in states:
                return state.split()[0]
            time.sleep(0.2)
        raise SlurmTestbedError(f"job {job_id} still {state!r} after {timeout}s")

    def node_states(self) -> dict[str, str]:
        proc = self.run(["sinfo", "-h", "-N", "-o", "%N %T"], check=True)
        return dict(line.split() for line in proc.stdout.splitlines() if line.strip())

    def logs(self, tail: int = 40) -> str:
        """The tail of every log, for assertion messages."""
        out = []
        for path in sorted(self.log_dir.glob("*.log")):
            lines = path.read_text(errors="replace").splitlines()[-tail:]
            out.append(f"===== {path}\n" + "\n".join(lines))
        return "\n".join(out)
