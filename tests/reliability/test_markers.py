"""Markers decide a stage's state when Slurm has forgotten its job (MinJobAge) and keeps no record.

launcher.runs.status with no Slurm information at all (an empty QueryResult), and the whole `minitron status` with
Slurm clients that know nothing (squeue: invalid job id; sacct: accounting disabled; the jobcomp
log empty), must still say DONE / FAILED (with the exit code) / INCOMPLETE / LOST / CANCELLED
correctly from the marker files.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

from launcher.backends.base import QueryResult
from launcher.runs.registry import open_run
from launcher.runs.status import run_report
from tests.conftest import run_cli

EXPECTED = {  # stage → (state, exit code)
    "data": ("DONE", 0),
    "import": ("INCOMPLETE", 0),          # complete marker, but an output is missing
    "finetune": ("FAILED", 3),            # finished marker with exit code 3
    "distill_depth": ("FAILED", 7),       # srun said 143; the failing rank recorded its own 7
    "prune_depth": ("LOST", None),        # started by its job, never finished, Slurm forgot it
    "prune_width": ("CANCELLED", None),   # the user cancelled it before it started
    "distill_width": ("LOST", None),      # queued, never started, Slurm forgot it
    "report": ("DONE", 0),                # its job finished long ago; the markers say done
}


def forgotten_run(sandbox, env):
    """A run whose jobs all ended long ago, described only by its markers."""
    info = sandbox.dry_run(env)
    run = open_run(info["run_dir"])
    state = run.load_record()
    for index, name in enumerate(state.stages):
        state.stages[name].job_id = str(100 + index)
    state.stages["prune_width"].cancelled = True
    run.save_record(state)
    markers = Path(run.layout.markers)
    out = Path(run.layout.work) / "outputs"
    out.mkdir()
    for name in ("data", "import", "report"):
        job = state.stages[name].job_id
        (markers / f"{name}.started").write_text(f"{job} n1 1700000000 0\n")
        (markers / f"{name}.finished").write_text("0\n")
        (out / name).mkdir()
        outputs = {"model": str(out / name)}
        if name == "import":
            outputs["extra"] = str(out / "never-written")
        (markers / f"{name}.complete").write_text(json.dumps({"outputs": outputs, "finished_at": 1700000001}))
    job = state.stages["finetune"].job_id
    (markers / "finetune.started").write_text(f"{job} n2 1700000000 0\n")
    (markers / "finetune.finished").write_text("3\n")
    Path(run.layout.logs, f"finetune-{job}.out").write_text("step 1\nTraceback: boom\n")
    job = state.stages["prune_depth"].job_id
    (markers / "prune_depth.started").write_text(f"{job} n3 1700000000 0\n")
    job = state.stages["distill_depth"].job_id
    (markers / "distill_depth.started").write_text(f"{job} n1 1700000000 0\n")
    (markers / "distill_depth.finished").write_text("143\n")
    (markers / "distill_depth.failed").write_text(json.dumps({
        "exit_code": 7, "exception": "ValueError: rank 3 had a bad shard", "rank": 3, "host": "n2",
        "job_id": job, "time": 1700000002}))
    return run


def _check(stages: dict) -> None:
    for name, (state, code) in EXPECTED.items():
        assert stages[name]["state"] == state, (name, stages[name])
        if code is not None:
            assert stages[name]["exit_code"] == code, (name, stages[name])


def test_markers_alone_give_each_stage_its_state(sandbox):
    run = forgotten_run(sandbox, sandbox.env)
    report = run_report(run, run.load_record(), QueryResult())
    _check({s.name: s.__dict__ for s in report.stages})
    assert report.overall == "FAILED"
    finetune = next(s for s in report.stages if s.name == "finetune")
    assert finetune.log_tail[-1] == "Traceback: boom"
    distill = next(s for s in report.stages if s.name == "distill_depth")
    assert distill.exception == "ValueError: rank 3 had a bad shard" and distill.exit_source == "task"


def forgetful_slurm(sandbox) -> dict[str, str]:
    """The sandbox's environment with Slurm clients that know no job (squeue: invalid job id; sacct:
    accounting disabled; the jobcomp log empty)."""
    bin_dir = sandbox.root / "forgetful-slurm"
    bin_dir.mkdir()
    (bin_dir / "squeue").write_text('#!/bin/sh\necho "slurm_load_jobs error: Invalid job id specified" >&2\nexit 1\n')
    (bin_dir / "sacct").write_text('#!/bin/sh\ncase "$*" in *--completion*) exit 0 ;; esac\n'
                                   'echo "Slurm accounting storage is disabled" >&2\nexit 1\n')
    for path in bin_dir.iterdir():
        path.chmod(0o755)
    env = dict(sandbox.env)
    env["PATH"] = f"{bin_dir}{os.pathsep}{env['PATH']}"
    return env


def test_status_cli_when_slurm_remembers_nothing(sandbox):
    env = forgetful_slurm(sandbox)
    run = forgotten_run(sandbox, env)
    before = Path(run.layout.state).read_bytes()
    proc = run_cli("status", run.id, "--json", env=env)
    assert proc.returncode == 4, proc.stderr  # a stage failed
    report = json.loads(proc.stdout)
    _check({s["name"]: s for s in report["stages"]})
    assert report["overall"] == "FAILED"
    human = run_cli("status", run.id, env=env)
    assert human.returncode == 4 and "FAILED" in human.stdout and "INCOMPLETE" in human.stdout
    assert "ValueError: rank 3 had a bad shard" in human.stdout
    assert Path(run.layout.state).read_bytes() == before, "status must not write the registry"
