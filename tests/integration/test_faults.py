"""Faults on the real testbed (issues 7 and 24): a failing sbatch mid-submission, slurmctld down while
`status`, `cancel`, `runs` and `logs` run, a slurmd killed under a running stage (no-requeue, then a
training stage that Slurm requeues), and finished jobs purged from slurmctld.

These stop and kill testbed daemons and bring them back before they end, so any order of the suite
works (it runs in random order).
A stage exiting non-zero is covered by test_slurm_executor.py.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from helpers import REPO, Cli, squeue_ids, stages, write_test_profile, write_test_recipe

LIVE = ("PENDING", "RUNNING", "REQUEUED", "CONFIGURING", "COMPLETING", "SUSPENDED")


@pytest.fixture(scope="module")
def setup(slurm, tmp_path_factory):
    root = tmp_path_factory.mktemp("faults")
    profile = write_test_profile(root / "profile.yaml", root / "jobs")
    recipe = write_test_recipe(root / "recipe.yaml", finetune={"steps": 10}, distill={"steps": 5})
    return Cli(slurm, root / "home"), profile, recipe, root


def _live_jobs_named(slurm, run_id: str) -> list[str]:
    proc = slurm.run(["squeue", "--noheader", "--states=all", "--format=%i|%j|%T"])
    assert proc.returncode == 0, proc.stderr
    rows = [line.split("|") for line in proc.stdout.splitlines()]
    return [row[0] for row in rows if run_id in row[1] and row[2] in LIVE]


def test_a_partition_that_does_not_exist_is_refused_before_anything_is_created(setup, slurm):
    cli, profile, recipe, root = setup
    before = squeue_ids_live(slurm)
    runs = Path(root, "jobs", "runs")  # shared with this module's other tests, which may have run first
    runs_before = set(os.listdir(runs)) if runs.exists() else set()
    proc = cli("submit", "--profile", profile, "--recipe", recipe, "--set", "stages.finetune.partition=nosuchpart")
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert proc.stderr.count("\n") == 1 and "partition 'nosuchpart' does not exist" in proc.stderr, proc.stderr
    assert "partitions: cpu, gpu" in proc.stderr
    assert not squeue_ids_live(slurm) - before, "nothing queued (jobs of earlier tests may have ended meanwhile)"
    assert (set(os.listdir(runs)) if runs.exists() else set()) == runs_before, "no run directory created"


@pytest.mark.parametrize("key, value, named", [("mem_per_node", "64G", "of memory per node"),
                                                ("cpus_per_node", 64, "CPUs per node")])
def test_a_node_size_no_node_has_is_refused_before_anything_is_created(setup, slurm, key, value, named):
    """The testbed's nodes have 8 CPUs and 4000 MB (sinfo %c %m): sbatch would refuse the stage's job only
    when its turn came ("Requested node configuration is not available")."""
    cli, _, recipe, root = setup
    jobs = root / f"jobs-{key}"
    profile = write_test_profile(root / f"profile-{key}.yaml", jobs, **{key: value})
    before = squeue_ids_live(slurm)
    proc = cli("submit", "--profile", profile, "--recipe", recipe)
    assert proc.returncode == 2, proc.stderr + proc.stdout
    assert proc.stderr.count("\n") == 1 and f"{profile}:" in proc.stderr and f": {key}: " in proc.stderr, proc.stderr
    assert named in proc.stderr and "no node of partition" in proc.stderr, proc.stderr
    assert f"set {key} to at most" in proc.stderr, proc.stderr
    assert not squeue_ids_live(slurm) - before, "nothing queued"
    assert not jobs.exists(), "nothing created"


def _sbatch_failing_on_call(root: Path, failing_call: int) -> Path:
    """Fault injection: the real sbatch, except that call number `failing_call` fails as a real one does
    when slurmctld drops a request. What it queued before is real, and so is its cancellation."""
    real = subprocess.run(["bash", "-c", "command -v sbatch"], capture_output=True, text=True).stdout.strip()
    bin_dir = root / "flaky-sbatch"
    bin_dir.mkdir(exist_ok=True)
    counter = bin_dir / "calls"
    (bin_dir / "sbatch").write_text(
        f"#!/bin/bash\necho x >> {counter}\n"
        f"if [ $(wc -l < {counter}) -eq {failing_call} ]; then\n"
        f"  echo 'sbatch: error: Batch job submission failed: Socket timed out on send/recv operation' >&2\n"
        f"  exit 1\nfi\nexec {real} \"$@\"\n")
    (bin_dir / "sbatch").chmod(0o755)
    return bin_dir


def test_sbatch_failing_mid_submission_cancels_what_it_queued(setup, slurm):
    cli, profile, recipe, root = setup
    flaky = _sbatch_failing_on_call(root, 3)  # data, import, then finetune's sbatch fails
    proc = cli("submit", "--profile", profile, "--recipe", recipe, "--set", "students=[depth]",
               PATH=f"{flaky}{os.pathsep}{os.environ['PATH']}")
    assert proc.returncode == 7, proc.stderr + proc.stdout
    assert "Traceback" not in proc.stderr
    assert "submitting stage finetune failed" in proc.stderr
    assert "Socket timed out" in proc.stderr, "Slurm's own error is shown"
    runs = json.loads(cli("runs", "--json").stdout)
    run = runs[0]
    assert run["state"] == "SUBMIT_FAILED"
    status = cli("status", run["run_id"], "--json")
    assert status.returncode == 8 and json.loads(status.stdout)["overall"] == "SUBMIT_FAILED"
    state = json.loads(Path(run["dir"], "state.json").read_text())
    (event,) = [e for e in state["events"] if e["event"] == "submit_failed"]
    assert event["stage"] == "finetune" and "Socket timed out" in event["error"]
    cancelled = event["cancelled"]
    assert len(cancelled) == 2, "data and import were queued, then cancelled"
    assert all(s["job_id"] is None for s in state["stages"].values()), "no stage recorded as submitted"
    assert not set(cancelled) & squeue_ids_live(slurm)
    assert _live_jobs_named(slurm, run["run_id"]) == []
    for job in cancelled:
        assert slurm.wait_job(job, timeout=30) == "CANCELLED"


def squeue_ids_live(slurm) -> set[str]:
    proc = slurm.run(["squeue", "--noheader", "--format=%i|%T"])
    return {line.split("|")[0] for line in proc.stdout.splitlines() if line.split("|")[1] in LIVE}


def failed_with_3(stage: dict) -> bool:
    """The 4-node distill_depth exits 3 on every rank. Whatever srun, sacct or the completion log say
    (143, 15, ... when --kill-on-bad-exit terminated the ranks that had not exited yet), status shows
    the tasks' own code, which the first failing rank recorded in its failure marker."""
    return stage["exit_code"] == 3 and stage["exit_source"] == "task"


def submit_depth_run(setup, *, hold_finetune: bool, fail_distill: bool) -> dict:
    """A depth-only run, its fine-tune held running until released and its distill_depth failing (exit 3)
    where asked. Each test gets its own: in random order no test may depend on another having run."""
    cli, profile, recipe, root = setup
    sub = cli.submit(profile, recipe, "--set", "students=[depth]")
    if hold_finetune:
        Path(sub["run_dir"], "hold-finetune").touch()  # long before finetune or distill start
    if fail_distill:
        Path(sub["run_dir"], "fail-distill_depth").touch()
    return sub


def test_slurmctld_down_while_status_runs(setup, slurm, tmp_path):
    cli, *_ = setup
    ctld_run = submit_depth_run(setup, hold_finetune=True, fail_distill=False)
    run_id, run_dir = ctld_run["run_id"], ctld_run["run_dir"]
    # slurmctld goes away while the (held) fine-tune runs on all 4 nodes and comes back before it
    # ends: a job that ends while slurmctld is down leaves its nodes COMPLETING for a minute.
    cli.wait(run_id, timeout=60, until=lambda c, r: stages(r)["finetune"]["state"] == "RUNNING")
    env = {**os.environ, **cli.env, "PYTHONPATH": str(REPO)}
    command = [sys.executable, "-m", "launcher.app.cli", "status", run_id]
    watched = tmp_path / "watch.out"
    with open(watched, "w") as out:
        watcher = subprocess.Popen(command + ["--watch", "1"], env=env, cwd=REPO, text=True,
                                   stdout=out, stderr=subprocess.PIPE)
    deadline = time.time() + 60
    while "run " + run_id not in watched.read_text():  # it has shown the run at least once
        assert watcher.poll() is None, watcher.communicate()
        assert time.time() < deadline, "the watcher never showed the run"
        time.sleep(0.1)
    state_before = Path(run_dir, "state.json").read_bytes()
    index_before = sorted(os.listdir(Path(cli.env["MINITRON_HOME"], "runs")))
    slurm.stop_ctld()
    try:
        once = subprocess.Popen(command + ["--json"], env=env, cwd=REPO, text=True,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE)
        _, watched_err = watcher.communicate(timeout=90)
        watched_out = watched.read_text()
        once_out, once_err = once.communicate(timeout=90)
        cancelled = cli("cancel", run_id, timeout=90)  # refused: the scheduler cannot confirm a cancel
        listed = cli("runs", "--json", timeout=90)
        logs = cli("logs", run_id, "finetune", timeout=90)  # the log is on disk: no scheduler needed
    finally:
        slurm.start_ctld()
    for code, err in ((watcher.returncode, watched_err), (once.returncode, once_err),
                      (cancelled.returncode, cancelled.stderr)):
        assert code == 5, err
        assert "Traceback" not in err
        lines = err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("minitron: error: Slurm is not answering:"), err
        assert "Unable to contact slurm controller" in err
    assert "run " + run_id in watched_out, "the watcher showed the run before slurmctld went away"
    assert once_out == "" and cancelled.stdout == ""
    assert listed.returncode == 0, listed.stderr
    (row,) = [r for r in json.loads(listed.stdout) if r["run_id"] == run_id]
    assert row["state"] == "UNKNOWN" and "Slurm is not answering" in row["error"], row
    assert logs.returncode == 0 and logs.stdout.strip(), logs.stderr
    assert Path(run_dir, "state.json").read_bytes() == state_before, "status changed the registry"
    assert sorted(os.listdir(Path(cli.env["MINITRON_HOME"], "runs"))) == index_before
    code, report = cli.status(run_id)  # back: works again
    assert code == 3 and stages(report)["finetune"]["state"] == "RUNNING", report
    Path(run_dir, "hold-finetune").unlink()
    code, report = cli.wait(run_id, timeout=180)
    assert code == 0, json.dumps(report, indent=1)  # the run carried on and ended DONE
    state = json.loads(Path(run_dir, "state.json").read_text())
    assert all(len(stage["attempts"]) == 1 for stage in state["stages"].values()), "no stage was queued twice"
    assert not any(e["event"] == "cancel" for e in state["events"]), "the refused cancel recorded nothing"


def _wait_for(path: Path, timeout: float, what: str) -> None:
    """Until a task writes `path` (its record of where it runs)."""
    deadline = time.time() + timeout
    while not path.exists():
        assert time.time() < deadline, what
        time.sleep(0.2)


def _wait_node_back(slurm, node: str, timeout: float = 60) -> None:
    deadline = time.time() + timeout
    while True:
        state = slurm.node_states().get(node, "")
        if state in ("idle", "mixed", "allocated", "completing"):
            return
        assert time.time() < deadline, slurm.node_states()
        time.sleep(0.5)


def test_slurmd_killed_under_a_running_stage_then_resume(setup, slurm):
    cli, profile, recipe, root = setup
    sub = cli.submit(profile, recipe, "--set", "students=[depth]")
    run_id, run_dir = sub["run_id"], sub["run_dir"]
    hold = Path(run_dir, "hold-import")
    hold.touch()  # import (no-requeue) waits on this once it runs; data goes first
    cli.wait(run_id, timeout=60, until=lambda c, r: stages(r)["import"]["state"] == "RUNNING")
    task_file = Path(run_dir, "work", "import", "tasks", "0.json")
    _wait_for(task_file, 30, "the import task never started")
    task = json.loads(task_file.read_text())
    node = task["SLURMD_NODENAME"]
    slurm.kill_slurmd(node)
    try:
        code, report = cli.wait(run_id, timeout=120, until=lambda c, r: stages(r)["import"]["state"] != "RUNNING")
        assert stages(report)["import"]["state"] == "NODE_FAIL", stages(report)["import"]
        code, report = cli.wait(run_id, timeout=60, until=lambda c, r: c != 3)
        by = stages(report)
        assert code == 4
        assert by["data"]["state"] == "DONE"
        for name in ("finetune", "prune_depth", "prune_width", "distill_depth", "report"):
            assert by[name]["state"] == "CANCELLED", (name, by[name])
        human = cli("status", run_id)
        assert human.returncode == 4 and "NODE_FAIL" in human.stdout
    finally:
        slurm.start_slurmd(node)
    _wait_node_back(slurm, node)
    deadline = time.time() + 60  # the orphaned task is killed when its slurmd comes back
    while Path(f"/proc/{task['pid']}").exists():
        assert time.time() < deadline, "the import task outlived its node's slurmd restart"
        time.sleep(0.5)
    hold.unlink()
    resumed = cli("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    state = json.loads(Path(run_dir, "state.json").read_text())
    assert state["stages"]["data"]["job_id"] == sub["jobs"]["data"], "done: not resubmitted"
    assert len(state["stages"]["import"]["attempts"]) == 2
    code, report = cli.wait(run_id, timeout=180)
    assert code == 0, json.dumps(report, indent=1)


def test_slurmd_killed_under_a_training_stage_slurm_requeues_it_and_the_run_finishes(setup, slurm):
    """Training stages are --requeue: a node failure puts the job back in the queue under the same job id
    (Slurm decides, not the launcher), status says it was requeued, dependents wait, and the run finishes."""
    cli, profile, recipe, root = setup
    sub = cli.submit(profile, recipe, "--set", "students=[depth]")
    run_id, run_dir = sub["run_id"], sub["run_dir"]
    hold = Path(run_dir, "hold-finetune")
    hold.touch()
    cli.wait(run_id, timeout=60, until=lambda c, r: stages(r)["finetune"]["state"] == "RUNNING")
    task_file = Path(run_dir, "work", "finetune", "tasks", "0.json")
    _wait_for(task_file, 30, "the finetune task never started")
    node = json.loads(task_file.read_text())["SLURMD_NODENAME"]
    slurm.kill_slurmd(node)
    try:
        code, report = cli.wait(run_id, timeout=120,
                                until=lambda c, r: stages(r)["finetune"]["state"] not in ("RUNNING", "STALLED"))
        finetune = stages(report)["finetune"]
        assert code == 3 and finetune["state"] == "PENDING", json.dumps(report, indent=1)
        assert finetune["job_id"] == sub["jobs"]["finetune"], "Slurm requeued the same job"
        assert finetune["reason"].startswith("requeued by Slurm (a node failure or preemption)"), finetune
        assert all(stages(report)[name]["state"] == "PENDING"
                   for name in ("prune_depth", "prune_width", "distill_depth", "report")), "dependents wait"
    finally:
        slurm.start_slurmd(node)
    _wait_node_back(slurm, node)
    task_file.unlink()
    _wait_for(task_file, 120, "the requeued finetune never started again")  # it runs once the node is back
    assert json.loads(task_file.read_text())["SLURM_RESTART_COUNT"] == "1"
    hold.unlink()
    code, report = cli.wait(run_id, timeout=240)
    assert code == 0, json.dumps(report, indent=1)
    state = json.loads(Path(run_dir, "state.json").read_text())
    assert all(len(stage["attempts"]) == 1 for stage in state["stages"].values()), "nothing resubmitted by us"


def test_finished_jobs_purged_from_slurmctld_keep_their_state(setup, slurm, tmp_path):
    cli, *_ = setup
    run_id = submit_depth_run(setup, hold_finetune=False, fail_distill=True)["run_id"]
    code, report = cli.wait(run_id, timeout=180)
    jobs = [s["job_id"] for s in report["stages"]]
    deadline = time.time() + 150  # MinJobAge=30 plus a purge cycle
    while any(slurm.job_info(job) for job in jobs):
        assert time.time() < deadline, "slurmctld never purged the finished jobs"
        time.sleep(2)
    assert not set(jobs) & squeue_ids(slurm)

    def check(report, code, cancelled_states):
        by = stages(report)
        assert code == 4, json.dumps(report, indent=1)
        for name in ("data", "import", "finetune", "prune_depth", "prune_width"):
            assert by[name]["state"] == "DONE", (name, by[name])
        assert by["distill_depth"]["state"] == "FAILED" and failed_with_3(by["distill_depth"])
        assert any("failing on purpose" in line for line in by["distill_depth"]["log_tail"])
        assert by["report"]["state"] in cancelled_states, by["report"]
        assert all(s["source"] != "squeue" for s in report["stages"])

    code, report = cli.status(run_id)  # from sacct, or the jobcomp log through `sacct -c`
    check(report, code, ("CANCELLED",))
    assert stages(report)["distill_depth"]["source"] in ("sacct", "jobcomp")

    # The same with the completion log out of reach: a client-side slurm.conf whose JobCompLoc
    # points nowhere (the testbed itself is untouched). Without accounting, the markers decide;
    # a job cancelled before it started left none, so it is LOST (resubmitted by resume) or, where
    # slurmdbd keeps accounting, CANCELLED.
    conf = Path(slurm.conf).read_text().splitlines()
    conf = [f"JobCompLoc={tmp_path}/no-such-jobcomp.txt" if line.startswith("JobCompLoc=") else line
            for line in conf]
    client_conf = tmp_path / "slurm.conf"
    client_conf.write_text("\n".join(conf) + "\n")
    code, report = _status_with(cli, run_id, SLURM_CONF=str(client_conf))
    check(report, code, ("CANCELLED", "LOST"))
    if not slurm.has_accounting:
        assert stages(report)["distill_depth"]["source"] == "markers"


def _status_with(cli, run_id: str, **env) -> tuple[int, dict]:
    proc = cli("status", run_id, "--json", **env)
    assert proc.returncode in (0, 3, 4), proc.stderr + proc.stdout
    return proc.returncode, json.loads(proc.stdout)
