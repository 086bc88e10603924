"""The registry's trust model (docs/guarantees.md): the registry is the user's own, nothing in it is
followed through a link, modes are explicit whatever the umask, RUN must name a registered run,
a directory that is not a run is never written to, one unreadable run never breaks the others, and
what reaches the terminal is escaped. No Slurm: every client is a tripwire (tests/reliability/conftest.py)."""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from tests.conftest import REPO, run_cli

NOBODY = 65534


def _profile(sandbox, job_dir=None, **extra) -> str:
    from tests.reliability.conftest import CORPUS
    text = sandbox.substitute((CORPUS / "good" / "profile.yaml").read_text())
    if job_dir is not None:
        text = text.replace(str(sandbox.job_dir), str(job_dir))
    for key, value in extra.items():
        text += f"\n{key}: {json.dumps(value)}\n"
    path = sandbox.root / "trust-profile.yaml"
    path.write_text(text)
    return str(path)


def _dry_run(sandbox, profile=None, env=None):
    from tests.reliability.conftest import CORPUS
    return run_cli("submit", "--dry-run", "--json", "--profile", profile or _profile(sandbox),
                   "--recipe", str(CORPUS / "good" / "recipe.yaml"), env=env or sandbox.env)


def _mode(path) -> int:
    return stat.S_IMODE(os.lstat(path).st_mode)


def _one_error_line(proc, *words):
    lines = proc.stderr.strip().splitlines()
    assert proc.returncode == 2 and len(lines) == 1 and lines[0].startswith("minitron: error: "), proc.stderr
    assert "Traceback" not in proc.stderr
    for word in words:
        assert word in lines[0], proc.stderr


@pytest.mark.parametrize("how", ["other-owner", "world-writable", "group-writable", "symlink"])
def test_a_runs_directory_that_is_not_the_user_s_own_is_refused(sandbox, how):
    runs = sandbox.job_dir / "runs"
    sandbox.job_dir.mkdir()
    if how == "symlink":
        target = sandbox.root / "elsewhere"
        target.mkdir(mode=0o700)
        runs.symlink_to(target)
    else:
        runs.mkdir()
        os.chmod(runs, {"other-owner": 0o700, "world-writable": 0o777, "group-writable": 0o770}[how])
        if how == "other-owner":
            os.chown(runs, NOBODY, NOBODY)
    proc = _dry_run(sandbox)
    _one_error_line(proc, "job_dir", str(runs))
    if how in ("world-writable", "group-writable"):
        assert f"chmod go-w {runs}" in proc.stderr
    assert not any(p for p in (runs.iterdir() if runs.is_dir() else [])), "nothing was written there"
    assert sandbox.tripwire_calls() == []


def test_a_minitron_home_writable_by_others_is_refused(sandbox):
    sandbox.home.mkdir(mode=0o700)
    os.chmod(sandbox.home, 0o777)
    proc = _dry_run(sandbox)
    _one_error_line(proc, "MINITRON_HOME", "chmod go-w")
    assert not (sandbox.job_dir / "runs").exists() or not any((sandbox.job_dir / "runs").iterdir())


def test_under_umask_000_everything_created_is_private(sandbox):
    code = ("import os, sys; os.umask(0); sys.path.insert(0, sys.argv[1]); from launcher.app.cli import main; "
            "sys.exit(main(sys.argv[2:]))")
    from tests.reliability.conftest import CORPUS
    proc = subprocess.run([sys.executable, "-c", code, REPO, "submit", "--dry-run", "--json", "--profile",
                           _profile(sandbox), "--recipe", str(CORPUS / "good" / "recipe.yaml")],
                          env={**os.environ, **sandbox.env}, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    run_dir = Path(json.loads(proc.stdout)["run_dir"])
    for directory in (sandbox.home, sandbox.home / "runs", sandbox.job_dir, run_dir.parent, run_dir):
        assert _mode(directory) == 0o700, directory
    for path in run_dir.rglob("*"):
        expected = 0o700 if path.is_dir() or path.parent.name == "scripts" else 0o600
        assert _mode(path) == expected, (path, oct(_mode(path)))
    assert all(_mode(p) == 0o600 for p in (sandbox.home / "runs").iterdir())


@pytest.mark.parametrize("command", ["cancel", "resume"])
def test_an_empty_run_is_refused_never_read_as_the_newest(sandbox, command):
    run = sandbox.dry_run(sandbox.env)
    before = Path(run["run_dir"], "state.json").read_bytes()
    proc = run_cli(command, "", env=sandbox.env)
    _one_error_line(proc, "RUN is empty")
    assert Path(run["run_dir"], "state.json").read_bytes() == before
    assert not Path(run["run_dir"], "state.lock").exists()
    assert sandbox.tripwire_calls() == []


@pytest.mark.parametrize("command", ["cancel", "resume", "status", "logs"])
def test_a_directory_that_is_not_a_registered_run_is_never_written_to(sandbox, command):
    sandbox.dry_run(sandbox.env)
    stranger = sandbox.root / "not-a-run"
    stranger.mkdir()
    (stranger / "state.json").write_text("{}")
    before = sorted(os.listdir(stranger))
    proc = run_cli(command, str(stranger), env=sandbox.env)
    _one_error_line(proc, "not a registered run")
    assert sorted(os.listdir(stranger)) == before, "no state.lock, nothing written"


def test_a_run_directory_swapped_for_a_link_is_not_followed(sandbox):
    run = sandbox.dry_run(sandbox.env)
    run_dir = Path(run["run_dir"])
    planted = sandbox.root / "planted"
    shutil.copytree(run_dir, planted)
    (planted / "scripts" / "data.sh").write_text("#!/bin/bash\ntouch " + str(sandbox.root / "pwned") + "\n")
    shutil.rmtree(run_dir)
    run_dir.symlink_to(planted)
    before = {p: p.read_bytes() for p in planted.rglob("*") if p.is_file()}
    for command in ("resume", "cancel", "status"):
        proc = run_cli(command, run["run_id"], env=sandbox.env)
        _one_error_line(proc, "symbolic link")
    assert sandbox.tripwire_calls() == [], "nothing reached sbatch"
    assert not (planted / "state.lock").exists()
    assert {p: p.read_bytes() for p in planted.rglob("*") if p.is_file()} == before
    assert not (sandbox.root / "pwned").exists()


def test_an_index_entry_pointing_at_someone_else_s_directory_is_listed_as_unreadable(sandbox):
    run = sandbox.dry_run(sandbox.env)
    foreign = sandbox.root / "foreign" / "runs" / "x-run"
    shutil.copytree(run["run_dir"], foreign)
    os.chown(foreign.parent, NOBODY, NOBODY)
    (sandbox.home / "runs" / "x-run.json").write_text(json.dumps({"run_id": "x-run", "dir": str(foreign)}))
    proc = run_cli("runs", "--json", env=sandbox.env)
    assert proc.returncode == 0, proc.stderr
    rows = {row["run_id"]: row for row in json.loads(proc.stdout)}
    assert rows["x-run"]["error"] and "another user" in rows["x-run"]["error"]
    assert rows[run["run_id"]]["state"] == "RENDERED"
    _one_error_line(run_cli("resume", "x-run", env=sandbox.env), "unreadable")


def test_one_truncated_state_file_never_breaks_the_others(sandbox):
    good = sandbox.dry_run(sandbox.env)
    bad = sandbox.dry_run(sandbox.env)
    path = Path(bad["run_dir"], "state.json")
    path.write_bytes(path.read_bytes()[:40])
    proc = run_cli("runs", "--json", env=sandbox.env)
    assert proc.returncode == 0, proc.stderr
    rows = {row["run_id"]: row for row in json.loads(proc.stdout)}
    assert rows[bad["run_id"]]["error"] and rows[bad["run_id"]]["state"] is None
    assert rows[good["run_id"]]["state"] == "RENDERED" and rows[good["run_id"]]["error"] is None
    human = run_cli("runs", env=sandbox.env)
    assert human.returncode == 0 and "UNREADABLE" in human.stdout
    assert run_cli("status", good["run_id"], env=sandbox.env).returncode == 8
    _one_error_line(run_cli("status", bad["run_id"], env=sandbox.env), "unreadable")


def test_watch_ends_on_a_run_that_is_not_live_and_refuses_a_bad_interval(sandbox):
    run = sandbox.dry_run(sandbox.env)
    watched = run_cli("status", run["run_id"], "--watch", "0.5", env=sandbox.env, timeout=30)
    assert watched.returncode == 8 and "RENDERED" in watched.stdout, watched.stderr
    for bad in ("-1", "0", "nan", "1e9"):
        proc = run_cli("status", run["run_id"], "--watch", bad, env=sandbox.env)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (bad, proc.stderr)


def test_values_printed_to_the_terminal_are_escaped(sandbox):
    job_dir = sandbox.root / "runs[/]x"
    profile = _profile(sandbox, job_dir=job_dir)
    text = Path(profile).read_text().replace("model: H100-80GB", 'model: "H100 [/] [bold]x"')
    Path(profile).write_text(text)
    plan = run_cli("plan", "--profile", profile, env=sandbox.env)
    assert plan.returncode == 0 and "H100 [/] [bold]x" in plan.stdout, plan.stderr
    proc = run_cli("submit", "--dry-run", "--profile", profile, env=sandbox.env)
    assert proc.returncode == 0 and str(job_dir) in proc.stdout.replace("\n", ""), proc.stderr


def test_an_unexpected_error_is_one_line_and_its_traceback_only_on_request(sandbox):
    code = ("import sys; sys.path.insert(0, sys.argv[1]); import launcher.app.commands as c; "
            "c.cmd_plan = lambda args: 1 / 0; from launcher.app.cli import main; sys.exit(main(['plan']))")
    proc = subprocess.run([sys.executable, "-c", code, REPO], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 70 and proc.stderr.count("\n") == 1, proc.stderr
    assert "internal error: ZeroDivisionError" in proc.stderr and "Traceback" not in proc.stderr
    debug = subprocess.run([sys.executable, "-c", code, REPO], capture_output=True, text=True, timeout=60,
                           env={**os.environ, "MINITRON_DEBUG": "1"})
    assert debug.returncode != 0 and "Traceback" in debug.stderr


def test_runs_lists_every_run_when_slurm_does_not_answer(sandbox):
    """Slurm down (every client a failing tripwire): `runs` still lists each run, settled ones by their
    markers, live ones as UNKNOWN with Slurm's message, and exits 0."""
    from launcher.runs.registry import open_run

    rendered = sandbox.dry_run(sandbox.env)
    queued = sandbox.dry_run(sandbox.env)
    run = open_run(queued["run_dir"])
    record = run.load_record()
    for index, stage in enumerate(record.stages.values()):
        stage.job_id = str(500 + index)
    run.save_record(record)
    proc = run_cli("runs", "--json", env=sandbox.env)
    assert proc.returncode == 0, proc.stderr
    rows = {row["run_id"]: row for row in json.loads(proc.stdout)}
    assert rows[rendered["run_id"]]["state"] == "RENDERED"
    assert rows[queued["run_id"]]["state"] == "UNKNOWN" and "Slurm is not answering" in rows[queued["run_id"]]["error"]
    assert any(call.startswith("squeue ") for call in sandbox.tripwire_calls())


def test_a_fifo_or_a_device_as_a_profile_is_refused_without_blocking(sandbox):
    fifo = sandbox.root / "profile.fifo"
    os.mkfifo(fifo)
    for path in (str(fifo), "/dev/zero", str(sandbox.root)):
        proc = run_cli("plan", "--profile", path, env=sandbox.env, timeout=20)
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, (path, proc.stderr)
        assert proc.stderr.count("\n") == 1, proc.stderr
