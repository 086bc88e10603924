"""Per-rank logs (jobs/runtime/ranklog.py): a rank of a stage with several copies its stdout and stderr to
logs/<stage>-<job>.rank<N>.out while they still reach the stage's combined log, even when it crashes;
`minitron logs --rank` reads them (the local executor's end to end: tests/test_local_executor.py)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys

import pytest

from jobs.contract import RunLayout
from tests.conftest import REPO

ENTRY = """
import os, subprocess, sys
mode = sys.argv[sys.argv.index('--mode') + 1]
print('to stdout from python', flush=True)
os.write(2, b'to stderr from the descriptor\\n')
subprocess.run(['sh', '-c', 'echo from a child process'], check=True)
sys.stdout.write('buffered, never flushed by hand\\n')
if mode == 'raise':
    raise RuntimeError('rank failed here')
if mode == 'kill':
    os.kill(os.getpid(), 9)
"""


@pytest.fixture
def run(tmp_path):
    layout = RunLayout(str(tmp_path / "run"))
    os.makedirs(layout.markers)
    os.makedirs(layout.logs)
    (tmp_path / "mods").mkdir()
    (tmp_path / "mods" / "entry.py").write_text(ENTRY)
    return layout, tmp_path


def task(layout, tmp_path, mode, **env):
    environ = {k: v for k, v in os.environ.items() if k not in ("RANK", "WORLD_SIZE", "MINITRON_JOB_ID")}
    environ.update({"PYTHONPATH": f"{tmp_path / 'mods'}{os.pathsep}{REPO}", "MINITRON_RUN_DIR": layout.run_dir,
                    "MINITRON_STAGE": "finetune", **env})
    return subprocess.run([sys.executable, "-m", "jobs.runtime.task", "entry", "--mode", mode], env=environ,
                          capture_output=True, text=True, timeout=60)


SLURM_RANK_1 = {"SLURM_PROCID": "1", "SLURM_NTASKS": "2", "SLURM_JOB_ID": "41"}


@pytest.mark.parametrize("mode", ["ok", "raise", "kill"])
def test_a_rank_s_output_reaches_both_its_own_log_and_the_stage_s(run, mode):
    layout, tmp = run
    proc = task(layout, tmp, mode, **SLURM_RANK_1)
    assert proc.returncode == {"ok": 0, "raise": 1, "kill": -signal.SIGKILL}[mode], proc.stderr
    own = open(layout.rank_log("finetune", "41", 1)).read()
    expected = ["to stdout from python", "to stderr from the descriptor", "from a child process"]
    if mode != "kill":  # a killed process never flushes Python's buffer: neither destination gets it
        expected.append("buffered, never flushed by hand")
    if mode == "raise":
        expected += ["Traceback (most recent call last):", "RuntimeError: rank failed here"]
    for line in expected:
        assert line in own.splitlines(), (line, own)
    # the streams stay apart on their way to the stage's log, and nothing is lost there either
    assert sorted(own.splitlines()) == sorted(proc.stdout.splitlines() + proc.stderr.splitlines())
    assert "to stderr from the descriptor" in proc.stderr and "to stdout from python" in proc.stdout
    if mode == "raise":
        assert "RuntimeError: rank failed here" in proc.stderr


def test_the_local_executor_s_rank_logs_are_named_without_a_job_id_and_appended(run):
    layout, tmp = run
    for _ in range(2):
        task(layout, tmp, "ok", RANK="0", WORLD_SIZE="2", MINITRON_JOB_ID="g1-finetune", SLURM_JOB_ID="99")
    own = open(layout.rank_log("finetune", None, 0)).read()
    assert own.count("to stdout from python") == 2  # a requeue or resume appends, as the stage log does
    assert not os.path.exists(layout.rank_log("finetune", "99", 0))


def test_a_stage_of_one_rank_writes_no_rank_log(run):
    layout, tmp = run
    assert task(layout, tmp, "ok", SLURM_PROCID="0", SLURM_NTASKS="1", SLURM_JOB_ID="41").returncode == 0
    assert os.listdir(layout.logs) == []


def test_a_rank_log_it_cannot_open_is_a_note_and_the_stage_runs_on(run):
    layout, tmp = run
    os.rmdir(layout.logs)
    proc = task(layout, tmp, "ok", **SLURM_RANK_1)
    assert proc.returncode == 0 and "to stdout from python" in proc.stdout
    assert proc.stderr.startswith("minitron: no per-rank log (")


def test_the_stage_log_is_never_a_rank_s(tmp_path):
    layout = RunLayout(str(tmp_path))
    os.makedirs(layout.logs)
    open(layout.rank_log("finetune", "41", 0), "w").close()
    assert layout.stage_log("finetune", "52") is None  # the newest `<stage>-*.out` fallback skips rank logs
    open(layout.slurm_log("finetune", "41"), "w").close()
    assert layout.stage_log("finetune", "52") == layout.slurm_log("finetune", "41")
