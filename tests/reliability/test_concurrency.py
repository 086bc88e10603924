"""Concurrency: one minitron process at a time changes a run, and the state file is never torn.

- Two `minitron resume` on the same run at once (the first one held inside a slow sbatch): one
  submits, the other exits with the busy code 6 and says so; `cancel` meanwhile is busy too.
- A writer of state.json (Run.save_record under Run.locked → registry.write_json) SIGKILLed many
  times over, at points chosen by events rather than clocks: while its temp file is being written,
  and right after a rename: state.json always parses into a whole RunRecord of one single write,
  and the lock is free again. A control writer without temp file + rename is torn by the same
  loop, so the loop does hit the writes.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path


from launcher.core.errors import ExitCode
from launcher.runs.registry import Run, RunRecord, StageRecord, write_json
from tests.conftest import REPO, run_cli


def _fake_slurm(sandbox) -> Path:
    """sbatch that records each call, signals that it has started, and is slow; nothing else."""
    bin_dir = sandbox.root / "fake-slurm"
    bin_dir.mkdir()
    calls = sandbox.root / "sbatch.calls"
    (bin_dir / "sbatch").write_text(f"""#!/bin/sh
echo "$*" >> {calls}
touch {sandbox.root}/sbatch.started
sleep 0.3
echo $((1000 + $(wc -l < {calls})))
""")
    (bin_dir / "sbatch").chmod(0o755)
    return bin_dir


def test_two_resumes_at_once_one_proceeds_the_other_is_busy(sandbox):
    env = dict(sandbox.env)
    env["PATH"] = f"{_fake_slurm(sandbox)}{os.pathsep}{env['PATH']}"
    run = sandbox.dry_run(env)
    first = subprocess.Popen([sys.executable, "-m", "launcher.app.cli", "resume", run["run_id"], "--submit"],
                             env={**os.environ, **env, "PYTHONPATH": REPO}, cwd=REPO,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.time() + 30
        while not (sandbox.root / "sbatch.started").exists():
            assert first.poll() is None, first.communicate()
            assert time.time() < deadline, "the first resume never reached sbatch"
            time.sleep(0.02)
        second = run_cli("resume", run["run_id"], "--submit", env=env)
        cancel = run_cli("cancel", run["run_id"], env=env)
        assert first.poll() is None, "the first resume must still hold the run for this test to mean anything"
    finally:
        out, err = first.communicate(timeout=60)
    assert first.returncode == 0, err
    for proc in (second, cancel):
        assert proc.returncode == ExitCode.BUSY == 6, proc.stderr
        assert proc.stderr.startswith("minitron: error: ") and "is busy" in proc.stderr, proc.stderr
        assert "Traceback" not in proc.stderr
    state = json.loads(Path(run["run_dir"], "state.json").read_text())
    calls = (sandbox.root / "sbatch.calls").read_text().splitlines()
    assert len(calls) == len(state["stages"]), "each stage submitted exactly once"
    assert state["submit_failed"] is False
    assert all(len(s["attempts"]) == 1 for s in state["stages"].values())
    assert [e["event"] for e in state["events"]] == ["rendered", "resume", "submitted"]
    again = run_cli("resume", run["run_id"], env=env)  # the lock is free again once the first is done
    assert again.returncode != ExitCode.BUSY, again.stderr


def test_lock_held_in_process_makes_cli_busy(sandbox):
    run = sandbox.dry_run(sandbox.env)
    before = Path(run["run_dir"], "state.json").read_bytes()
    with Run(run["run_dir"]).locked():
        proc = run_cli("resume", run["run_id"], env=sandbox.env)
    assert proc.returncode == 6 and "is busy" in proc.stderr, proc.stderr
    assert Path(run["run_dir"], "state.json").read_bytes() == before
    assert sandbox.tripwire_calls() == []


# -- SIGKILL at random points while state.json is being written ---------------------------------

STAGES = ["data", "import", "finetune", "prune_depth", "distill_depth", "report"]
EVENTS_PER_STATE = 2000  # ~300 KB of JSON: a write takes long enough to be interrupted


def _state(generation: int) -> RunRecord:
    state = RunRecord(run_id=f"gen-{generation}", executor="slurm", created_at=1.0,
                      stages={name: StageRecord(job_id=str(generation), attempts=[str(generation)]) for name in STAGES})
    state.events = [{"time": i, "event": "fill", "generation": generation, "pad": "x" * 100}
                    for i in range(EVENTS_PER_STATE)]
    return state


def _naive_save(run: Run, state: RunRecord) -> None:
    with open(run.layout.state, "w", encoding="utf-8") as handle:  # what atomic_write exists to avoid
        json.dump(state.to_json(), handle, indent=2)


def _writer(run_dir: str, naive: bool, ready_fd: int) -> None:
    """Child: rewrite state.json forever, each time a whole new generation, as the launcher does:
    under the run lock, through Run.save_record."""
    run = Run(run_dir)
    generation = 0
    os.write(ready_fd, b"x")
    while True:
        generation += 1
        if naive:
            _naive_save(run, _state(generation))
        else:
            with run.locked(wait=True):
                run.save_record(_state(generation))


def _whole(run: Run) -> RunRecord:
    """The state file as a reader sees it; raises if it is torn or mixes two writes."""
    state = RunRecord.from_json(json.loads(Path(run.layout.state).read_text()))
    generation = int(state.run_id.removeprefix("gen-"))
    assert len(state.events) == EVENTS_PER_STATE
    assert {e["generation"] for e in state.events} == {generation}
    assert {s.job_id for s in state.stages.values()} == {str(generation)}
    return state


def _wait_for(condition, what: str, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"never saw {what}"
        time.sleep(0.0005)


def _kill_loop(run_dir: str, naive: bool, rounds: int, stop_at_first_tear: bool = False) -> tuple[int, int]:
    """Each round starts a writer and SIGKILLs it on an event: even rounds while a temp file of its
    (atomic) write exists, odd rounds once it has replaced state.json at least once. The naive writer
    has no temp file, so it is killed once state.json has been truncated and not yet rewritten whole."""
    run = Run(run_dir)
    state_path = Path(run.layout.state)
    torn = mid_write = 0
    for round_number in range(rounds):
        before = state_path.stat().st_mtime_ns
        read_fd, write_fd = os.pipe()
        pid = os.fork()
        if pid == 0:  # child
            os.close(read_fd)
            try:
                _writer(run_dir, naive, write_fd)
            finally:
                os._exit(0)
        os.close(write_fd)
        os.read(read_fd, 1)
        os.close(read_fd)
        if naive:
            _wait_for(lambda: state_path.stat().st_size < 1000, "a truncated state.json")
        elif round_number % 2 == 0:
            _wait_for(lambda: any(n.startswith(".state.json.") for n in os.listdir(run_dir)), "a temp file")
        else:
            _wait_for(lambda: state_path.stat().st_mtime_ns != before, "a completed write")
        os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        leftovers = [n for n in os.listdir(run_dir) if n.startswith(".state.json.")]
        mid_write += bool(leftovers)
        for name in leftovers:
            os.unlink(os.path.join(run_dir, name))
        try:
            _whole(run)
        except (ValueError, KeyError, TypeError, AssertionError):
            torn += 1
            if stop_at_first_tear:
                break
            raise
        with run.locked():  # a killed holder never leaves the lock taken
            pass
    return torn, mid_write


def _fresh_run(tmp_path) -> str:
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    write_json(str(run_dir / "state.json"), _state(0).to_json())
    return str(run_dir)


def test_state_file_survives_sigkill_at_random_points(tmp_path):
    run_dir = _fresh_run(tmp_path)
    torn, mid_write = _kill_loop(run_dir, naive=False, rounds=60)
    assert torn == 0
    assert mid_write >= 20, f"only {mid_write} of 60 kills landed inside a write: the loop proves little"


def test_control_a_plain_write_is_torn_by_the_same_loop(tmp_path):
    run_dir = _fresh_run(tmp_path)
    torn, _ = _kill_loop(run_dir, naive=True, rounds=20, stop_at_first_tear=True)
    assert torn == 1, "the kill loop never tore a non-atomic write: it would not catch a regression"


def test_resume_of_a_dry_run_asks_for_submit_and_queues_nothing(sandbox):
    run = sandbox.dry_run(sandbox.env)
    before = Path(run["run_dir"], "state.json").read_bytes()
    proc = run_cli("resume", run["run_id"], env=sandbox.env)
    assert proc.returncode == ExitCode.USAGE, proc.stderr
    assert proc.stderr.count("\n") == 1 and "is a dry run" in proc.stderr and "--submit" in proc.stderr, proc.stderr
    assert Path(run["run_dir"], "state.json").read_bytes() == before
    assert sandbox.tripwire_calls() == [], "nothing reached Slurm"
    proc = run_cli("resume", run["run_id"], "--submit", env=sandbox.env)  # now it tries, and meets the tripwire
    assert proc.returncode == ExitCode.SUBMIT_FAILED and any(c.startswith("sbatch ") for c in sandbox.tripwire_calls())
