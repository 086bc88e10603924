"""Storage faults on the real testbed (issue 24): job_dir full or read-only at submit, the disk filling
while `submit` queues the stages, and the disk filling under a running stage.

job_dir is a small tmpfs mounted for each test (so the tests need root, as CI has); the stages are the
workload stand-in on the 4-node testbed. Filling a mount is real ENOSPC, not a patched write.
"""

from __future__ import annotations

import errno
import json
import os
import subprocess
from pathlib import Path

import pytest

from helpers import Cli, squeue_ids, stages, write_test_profile, write_test_recipe

MiB = 2**20


@pytest.fixture
def mount(tmp_path):
    """Mounts a tmpfs of the given size at tmp_path/jobs; unmounted after the test."""
    mounted = []

    def make(size_mib: int) -> Path:
        if os.geteuid() != 0:
            pytest.skip("mounting a small tmpfs as job_dir needs root (CI runs as root)")
        point = tmp_path / "jobs"
        point.mkdir()
        proc = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size_mib}m,mode=0700", "tmpfs", str(point)],
                              capture_output=True, text=True)
        if proc.returncode != 0:
            pytest.skip(f"cannot mount a tmpfs here: {proc.stderr.strip()}")
        mounted.append(point)
        return point

    yield make
    for point in mounted:
        subprocess.run(["umount", "-l", str(point)], check=False)


def fill(point: Path, leave_bytes: int = 0) -> Path:
    """Write zeros into `point` until the file system is full (or `leave_bytes` remain)."""
    filler = point / "filler"
    free = os.statvfs(point).f_bavail * os.statvfs(point).f_frsize
    try:
        with open(filler, "wb") as handle:  # creating it fails too when the disk is full already
            remaining = max(0, free - leave_bytes)
            while remaining > 0:
                remaining -= handle.write(b"\0" * min(MiB, remaining))
            handle.flush()
    except OSError as exc:
        if exc.errno != errno.ENOSPC:
            raise
    return filler


def setup_run(tmp_path, slurm, job_dir: Path):
    profile = write_test_profile(tmp_path / "profile.yaml", job_dir)
    recipe = write_test_recipe(tmp_path / "recipe.yaml", finetune={"steps": 3}, distill={"steps": 3})
    return Cli(slurm, tmp_path / "home"), profile, recipe


def test_a_nearly_full_job_dir_is_refused_before_anything_is_created(slurm, tmp_path, mount):
    point = mount(16)  # below the floor the launcher asks for (MIN_FREE_BYTES, 64 MiB)
    cli, profile, recipe = setup_run(tmp_path, slurm, point)
    before = squeue_ids(slurm)
    proc = cli("submit", "--profile", profile, "--recipe", recipe, "--set", "students=[depth]")
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert f"{profile}: job_dir: {point} has" in proc.stderr and "KiB free" in proc.stderr, proc.stderr
    assert "choose another job_dir" in proc.stderr
    assert os.listdir(point) == [], "nothing created"
    assert not squeue_ids(slurm) - before, "nothing queued (jobs of earlier tests may have ended meanwhile)"


@pytest.mark.parametrize("registry_exists", [False, True])
def test_a_read_only_job_dir_is_refused_before_anything_is_created(slurm, tmp_path, mount, registry_exists):
    point = mount(80)
    if registry_exists:
        (point / "runs").mkdir(mode=0o700)
    subprocess.run(["mount", "-o", "remount,ro", str(point)], check=True)
    cli, profile, recipe = setup_run(tmp_path, slurm, point)
    before = squeue_ids(slurm)
    proc = cli("submit", "--profile", profile, "--recipe", recipe, "--set", "students=[depth]")
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert proc.stderr.count("\n") == 1 and "Read-only file system" in proc.stderr, proc.stderr
    assert f"{profile}: job_dir: cannot create the run registry" in proc.stderr
    assert os.listdir(point) == (["runs"] if registry_exists else [])
    assert not squeue_ids(slurm) - before, "nothing queued (jobs of earlier tests may have ended meanwhile)"


def _sbatch_filling_the_disk_on_call(root: Path, point: Path, call: int) -> Path:
    """The real sbatch, except that call number `call` first fills job_dir's file system: the disk fills
    while `submit` queues the stages, and the run record's write after them meets ENOSPC."""
    real = subprocess.run(["bash", "-c", "command -v sbatch"], capture_output=True, text=True).stdout.strip()
    bin_dir = root / "filling-sbatch"
    bin_dir.mkdir()
    counter = bin_dir / "calls"
    (bin_dir / "sbatch").write_text(
        f"#!/bin/bash\necho x >> {counter}\n"
        f"if [ $(wc -l < {counter}) -eq {call} ]; then cat /dev/zero > {point}/filler 2>/dev/null; fi\n"
        f"exec {real} \"$@\"\n")
    (bin_dir / "sbatch").chmod(0o755)
    return bin_dir


def test_the_disk_filling_during_submit_leaves_no_job_and_no_half_made_run(slurm, tmp_path, mount):
    point = mount(80)
    cli, profile, recipe = setup_run(tmp_path, slurm, point)
    filling = _sbatch_filling_the_disk_on_call(tmp_path, point, 2)
    proc = cli("submit", "--profile", profile, "--recipe", recipe, "--set", "students=[depth]",
               PATH=f"{filling}{os.pathsep}{os.environ['PATH']}")
    assert proc.returncode == 7, proc.stderr + proc.stdout
    assert proc.stderr.count("\n") == 1 and "Traceback" not in proc.stderr, proc.stderr
    assert "could not record the submission" in proc.stderr and "No space left on device" in proc.stderr
    assert "the run directory was removed" in proc.stderr
    queued = proc.stderr.split("job(s) it had queued (")[1].split(")")[0].split(", ")
    assert len(queued) == 7, proc.stderr  # every stage of the depth-only graph was queued, then cancelled
    for job in queued:
        assert slurm.wait_job(job, timeout=60) == "CANCELLED", job
    assert os.listdir(point / "runs") == [], "no run directory left behind"
    assert json.loads(cli("runs", "--json").stdout) == [], "no run in the index"


def test_the_disk_filling_under_a_running_stage_fails_it_says_why_and_resume_finishes(slurm, tmp_path, mount):
    point = mount(80)
    cli, profile, recipe = setup_run(tmp_path, slurm, point)
    sub = cli.submit(profile, recipe, "--set", "students=[depth]")
    run_id, run_dir = sub["run_id"], sub["run_dir"]
    hold = Path(run_dir, "hold-data")
    hold.touch()
    cli.wait(run_id, timeout=60, until=lambda c, r: stages(r)["data"]["state"] == "RUNNING")
    filler = fill(point)
    hold.unlink()  # the data stage now writes its outputs and markers into a full disk
    code, report = cli.wait(run_id, timeout=120)
    by = stages(report)
    assert code == 4, json.dumps(report, indent=1)
    assert by["data"]["state"] == "FAILED", by["data"]
    assert all(by[name]["state"] == "CANCELLED" for name in by if name != "data"), by
    assert any("KiB free: a full disk can be why data failed" in note for note in report["notes"]), report["notes"]
    human = cli("status", run_id)
    assert human.returncode == 4 and "a full disk can be why data failed" in human.stdout.replace("\n", " ")
    json.loads(Path(run_dir, "state.json").read_text())  # the record is whole
    filler.unlink(missing_ok=True)
    resumed = cli("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    code, report = cli.wait(run_id, timeout=180)
    assert code == 0, json.dumps(report, indent=1)
    assert not any("full disk" in note for note in report["notes"])
