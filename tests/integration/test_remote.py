"""`--remote` through a real sshd (Debian's openssh-server, started by .ci/sshd-testbed on 127.0.0.1) in front
of the Slurm testbed: the "laptop" is this process's CLI, with no Slurm of its own (SLURM_CONF points at no
file), the "login node" is an SSH session whose HOME is a directory of this module's and whose SLURM_CONF is the
testbed's. Submit (through the profile's `remote:` block), status, logs, cancel and resume go over SSH; the
code is shipped once; a secret passed by name reaches the job and no file; a hostile argument stays one
literal argument; an unreachable port is one line and exit 9.

Skips when /usr/sbin/sshd is missing, unless MINITRON_TEST_SSH_REQUIRED=1 (CI sets it). About 1-2 minutes
(each remote call imports NeMo-Run, ~5 s).
"""

from __future__ import annotations

import hashlib
import json
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, Cli, stages, write_test_profile, write_test_recipe
from tests.conftest import run_cli

SSHD = "/usr/sbin/sshd"
SECRET = "hf_" + "Q7rT2xV9kL4mN8pW3zY6bC1dF5gH0jKsXe"  # a token's shape, no one's token
SHIPPED = "shipped the launcher's code"


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


@pytest.fixture(scope="module")
def login_node(slurm, tmp_path_factory):
    """(user@127.0.0.1:PORT, identity, the login node's HOME) of an sshd started for this module."""
    if not os.access(SSHD, os.X_OK):
        message = f"{SSHD} not found: apt-get install -y openssh-server"
        if os.environ.get("MINITRON_TEST_SSH_REQUIRED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    root = tmp_path_factory.mktemp("login")
    home = root / "home"
    home.mkdir()
    port = int(os.environ.get("MINITRON_TEST_SSH_PORT") or _free_port())
    script = str(REPO / ".ci" / "sshd-testbed")
    up = subprocess.run(["bash", script, "up", "--dir", str(root / "sshd"), "--port", str(port),
                         "--setenv", f"HOME={home}", "--setenv", f"SLURM_CONF={slurm.env['SLURM_CONF']}"],
                        capture_output=True, text=True, timeout=60)
    assert up.returncode == 0, up.stderr
    env = dict(line.removeprefix("export ").split("=", 1) for line in up.stdout.splitlines())
    try:
        yield env["MINITRON_TEST_SSH"], env["MINITRON_TEST_SSH_IDENTITY"], home
    finally:
        subprocess.run(["bash", script, "down", "--dir", str(root / "sshd")], timeout=60)


@pytest.fixture(scope="module")
def laptop(login_node, slurm, tmp_path_factory):
    """The local CLI: no Slurm here, HF_TOKEN set in its shell, a profile whose remote: block names the login node."""
    spec, identity, home = login_node
    root = tmp_path_factory.mktemp("laptop")
    user, _, address = spec.partition("@")
    host, _, port = address.rpartition(":")
    profile = write_test_profile(
        root / "cluster.yaml", root / "jobs",
        env_vars=[f"PYTHONPATH={Path(__file__).parent}", "MT_STEP_SECONDS", "HF_TOKEN", "MT_SECRET_NAMES"],
        remote={"host": host, "port": int(port), "user": user, "identity": identity, "python": sys.executable})
    recipe = write_test_recipe(root / "recipe.yaml", entrypoint="envdump", finetune={"steps": 3},
                               distill={"steps": 3})
    here = {"MINITRON_HOME": str(root / "mthome"), "SLURM_CONF": str(root / "no-slurm-here.conf"),
            "HF_TOKEN": SECRET, "MT_SECRET_NAMES": "HF_TOKEN", "MT_STEP_SECONDS": "0.2"}
    remote = ["--remote", spec, "--identity", identity, "--remote-python", sys.executable]

    def cli(*args: str, timeout: float = 120) -> subprocess.CompletedProcess:
        return run_cli(*args, env=here, timeout=timeout)

    # What the login node's own shell would see: to wait on runs without an SSH round trip each time.
    there = Cli(slurm, home / ".minitron")
    return cli, remote, profile, recipe, there, home, root


def _token_hash() -> str:
    return "sha256:" + hashlib.sha256(SECRET.encode()).hexdigest()


def test_submit_status_logs_cancel_resume_over_ssh(laptop):
    """One run's life, in order, from the laptop: each step's result is read on the login node itself."""
    cli, remote, profile, recipe, there, home, root = laptop
    first = cli("submit", "--json", "--profile", profile, "--recipe", recipe)  # remote: the profile's block
    assert first.returncode == 0, first.stderr + first.stdout
    data = json.loads(first.stdout)
    run_id, run_dir = data["run_id"], Path(data["run_dir"])
    (run_dir / "hold-finetune").touch()  # long before finetune starts: data and import run first
    try:
        _life(laptop, first, run_id, run_dir)
    finally:
        there("cancel", run_id)  # a failed step leaves nothing running for the next test


def _life(laptop, first, run_id: str, run_dir: Path) -> None:
    cli, remote, profile, recipe, there, home, root = laptop
    data = json.loads(first.stdout)
    # the module's first submit ships the code (in random order another test of this module may be first)
    assert list((home / ".minitron" / "remote" / "code").glob("*/.complete")), first.stderr
    assert str(run_dir).startswith(str(root / "jobs")) and run_dir.is_dir() and all(data["jobs"].values())
    assert any(p.name.startswith(run_id) for p in (home / ".minitron" / "runs").iterdir())
    assert not (root / "mthome" / "runs").exists()  # nothing registered on the laptop

    there.wait(run_id, until=lambda code, report: stages(report)["data"]["state"] == "DONE")
    status = cli("status", *remote, run_id, "--json")
    assert status.returncode == 3, status.stderr  # held: still live
    assert json.loads(status.stdout)["run_id"] == run_id
    logs = cli("logs", *remote, run_id, "data", "-n", "0")
    assert logs.returncode == 0, logs.stderr
    assert "minitron: stage data attempt" in logs.stdout

    # HF_TOKEN, listed by name in env_vars, went from the laptop's shell to the job, and into no file.
    assert json.loads((run_dir / "work" / "data" / "env-0.json").read_text())["HF_TOKEN"] == _token_hash()
    for tree in (home, root):
        for path in tree.rglob("*"):
            if path.is_file() and path.stat().st_size < 10_000_000:
                assert SECRET.encode() not in path.read_bytes(), path

    # The code is shipped once: a second submit finds it.
    complete = list((home / ".minitron" / "remote" / "code").glob("*/.complete"))
    assert len(complete) == 1, complete
    before = complete[0].stat().st_mtime_ns
    again = cli("submit", "--dry-run", "--json", "--profile", profile, "--recipe", recipe)
    assert again.returncode == 0, again.stderr
    assert SHIPPED not in again.stderr and complete[0].stat().st_mtime_ns == before
    assert len(list((home / ".minitron" / "remote" / "code").iterdir())) == 1

    cancel = cli("cancel", *remote, run_id)
    assert cancel.returncode == 0, cancel.stderr
    assert f"of run {run_id}" in cancel.stdout
    code, report = there.wait(run_id, until=lambda code, report: code != 3)
    assert code == 4, report
    (run_dir / "hold-finetune").unlink()
    resume = cli("resume", *remote, run_id)
    assert resume.returncode == 0, resume.stderr + resume.stdout
    code, report = there.wait(run_id, timeout=300)
    assert code == 0, json.dumps({s["name"]: s["state"] for s in report["stages"]})
    assert json.loads((run_dir / "work" / "finetune" / "env-0.json").read_text())["HF_TOKEN"] == _token_hash()


def test_a_hostile_argument_is_one_literal_argument_there(laptop, tmp_path):
    cli, remote, *_ = laptop
    marker = tmp_path / "pwned"
    hostile = f"'; touch {marker} #"
    proc = cli("status", *remote, hostile)
    assert proc.returncode == 2, proc.stderr
    assert "touch" in proc.stderr and "not a registered run" in proc.stderr
    time.sleep(0.5)
    assert not marker.exists()


def test_an_unreachable_login_node_is_one_line_and_exit_9(laptop):
    cli, remote, *_ = laptop
    spec = remote[1]
    closed = spec.rpartition(":")[0] + f":{_free_port()}"
    proc = cli("runs", "--remote", closed, *remote[2:], timeout=60)
    assert proc.returncode == 9, proc.stderr
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr
    assert "cannot reach" in proc.stderr and "ssh -p" in proc.stderr
