"""The local executor end to end: detached supervisor, GPU assignment, kill + resume, cancel.

Stages run the test workload (tests/integration/workload.py) under the real local scripts:
GPU stages through torch.distributed.run, CPU stages as plain processes.
"""

from __future__ import annotations

import json
import os
import signal
import sys
import time

import pytest
import yaml

from tests.conftest import REPO, run_cli
from tests.integration.helpers import write_test_recipe

pytest.importorskip("torch")  # GPU stages start under torch.distributed.run, as on a workstation

WORKLOAD_DIR = os.path.join(REPO, "tests", "integration")


@pytest.fixture
def setup(tmp_path):
    profile = tmp_path / "local.yaml"
    profile.write_text(yaml.safe_dump({
        "executor": "local", "nodes": 1, "gpus_per_node": 2, "gpu": {"model": "H100-80GB", "memory_gib": 80},
        "job_dir": str(tmp_path / "jobs"), "container": "none", "python": sys.executable, "local_parallel": True,
        "attention": "unfused",
        "env_vars": [f"PYTHONPATH={WORKLOAD_DIR}", "MT_STEP_SECONDS"]}))
    env = {"MINITRON_HOME": str(tmp_path / "home"), "MT_STEP_SECONDS": "0.1"}
    return str(profile), env


def cli(env, *args):
    return run_cli(*args, env=env)


def submit(env, profile, recipe, *extra):
    proc = cli(env, "submit", "--json", "--profile", profile, "--recipe", recipe, *extra)
    assert proc.returncode == 0, proc.stderr + proc.stdout
    return json.loads(proc.stdout)


def wait(env, run_id, timeout=180, until=None):
    deadline = time.time() + timeout
    while True:
        proc = cli(env, "status", run_id, "--json")
        report = json.loads(proc.stdout)
        if (until(report) if until else proc.returncode != 3):
            return proc.returncode, report
        assert time.time() < deadline, {s["name"]: s["state"] for s in report["stages"]}
        time.sleep(0.5)


def by_name(report):
    return {s["name"]: s for s in report["stages"]}


def processes_of(run_dir: str) -> list[int]:
    """Every live process whose command line or environment mentions the run directory."""
    found = []
    for pid in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as handle:
                cmdline = handle.read()
            with open(f"/proc/{pid}/environ", "rb") as handle:
                environ = handle.read()
            with open(f"/proc/{pid}/stat") as handle:
                zombie = handle.read().split(") ", 1)[1][0] == "Z"
        except OSError:
            continue
        if not zombie and (run_dir.encode() in cmdline or f"MINITRON_RUN_DIR={run_dir}".encode() in environ):
            found.append(int(pid))
    return found


def test_tiny_pipeline_end_to_end_with_parallel_students_on_distinct_gpus(setup, tmp_path):
    profile, env = setup
    recipe = write_test_recipe(tmp_path / "r.yaml", distill={"steps": 20, "gpus_per_node": 1})
    sub = submit(env, profile, recipe)
    students = ("distill_depth", "distill_width")
    for name in students:  # each waits, running, until both run: side by side by events, not clocks
        open(os.path.join(sub["run_dir"], f"hold-{name}"), "w").close()
    wait(env, sub["run_id"], until=lambda r: all(by_name(r)[n]["state"] == "RUNNING" for n in students))
    for name in students:
        os.remove(os.path.join(sub["run_dir"], f"hold-{name}"))
    code, report = wait(env, sub["run_id"])
    assert code == 0, json.dumps(report, indent=1)
    assert all(s["state"] == "DONE" for s in report["stages"])
    supervisor = json.load(open(os.path.join(sub["run_dir"], "local", "supervisor.json")))["stages"]
    depth, width = supervisor["distill_depth"], supervisor["distill_width"]
    assert depth["gpus"] != width["gpus"] and len(depth["gpus"]) == len(width["gpus"]) == 1
    assert depth["start"] < width["end"] and width["start"] < depth["end"], "students did not run side by side"
    assert supervisor["finetune"]["gpus"] == ["0", "1"]
    ranks = os.listdir(os.path.join(sub["run_dir"], "work", "finetune", "tasks"))
    assert sorted(ranks) == ["0.json", "1.json"]  # torch.distributed.run started one process per GPU


def test_each_rank_of_a_stage_has_its_own_log_beside_the_combined_one(setup, tmp_path):
    profile, env = setup
    sub = submit(env, profile, write_test_recipe(tmp_path / "r.yaml", finetune={"steps": 4}))
    code, report = wait(env, sub["run_id"], until=lambda r: by_name(r)["finetune"]["state"] == "DONE")
    combined = cli(env, "logs", sub["run_id"], "finetune", "-n", "0").stdout.splitlines()
    assert {"finetune: rank 0 of 2 started", "finetune: rank 1 of 2 started"} <= set(combined)
    for rank in (0, 1):
        proc = cli(env, "logs", sub["run_id"], "finetune", "--rank", str(rank), "-n", "0")
        assert proc.returncode == 0, proc.stderr
        own = proc.stdout.splitlines()
        assert f"finetune: rank {rank} of 2 started" in own and f"finetune: rank {1 - rank} of 2 started" not in own
        assert set(own) <= set(combined)
    progress = [cli(env, "logs", sub["run_id"], "finetune", "--rank", str(rank)).stdout.count("MINITRON_PROGRESS")
                for rank in (0, 1)]
    assert progress == [4, 0]  # rank 0 reports the steps
    proc = cli(env, "logs", sub["run_id"], "finetune", "--rank", "2")
    assert proc.returncode == 2 and proc.stderr == "minitron: error: --rank: stage finetune has ranks 0 to 1, not 2\n"
    wait(env, sub["run_id"])


def test_supervisor_killed_then_resume_finishes(setup, tmp_path):
    profile, env = setup
    recipe = write_test_recipe(tmp_path / "r.yaml", finetune={"steps": 30})
    sub = submit(env, profile, recipe)
    code, report = wait(env, sub["run_id"], until=lambda r: by_name(r)["finetune"]["state"] == "RUNNING")
    supervisor = json.load(open(os.path.join(sub["run_dir"], "local", "supervisor.json")))
    os.kill(supervisor["pid"], signal.SIGKILL)
    time.sleep(1)
    code, report = wait(env, sub["run_id"], until=lambda r: by_name(r)["prune_depth"]["state"] != "PENDING")
    assert by_name(report)["prune_depth"]["state"] in ("LOST", "CANCELLED")  # nobody left to start it
    proc = cli(env, "resume", sub["run_id"])
    assert proc.returncode == 0, proc.stderr
    code, report = wait(env, sub["run_id"])
    assert code == 0 and all(s["state"] == "DONE" for s in report["stages"]), json.dumps(report, indent=1)


def test_cancel_stops_the_whole_process_group(setup, tmp_path):
    profile, env = setup
    recipe = write_test_recipe(tmp_path / "r.yaml", finetune={"steps": 400})
    sub = submit(env, profile, recipe)
    wait(env, sub["run_id"], until=lambda r: (by_name(r)["finetune"]["step"] or 0) >= 2)
    assert processes_of(sub["run_dir"]), "the fine-tune should be running"
    proc = cli(env, "cancel", sub["run_id"], "finetune")
    assert proc.returncode == 0, proc.stderr
    proc = cli(env, "status", sub["run_id"], "--json")  # at once: CANCELLING or CANCELLED, never RUNNING
    assert proc.returncode == 4 and json.loads(proc.stdout)["overall"] == "CANCELLED", proc.stdout
    assert by_name(json.loads(proc.stdout))["finetune"]["state"] in ("CANCELLING", "CANCELLED")
    code, report = wait(env, sub["run_id"], until=lambda r: by_name(r)["finetune"]["state"] == "CANCELLED")
    assert code == 4
    states = {s["name"]: s["state"] for s in report["stages"]}
    assert states["finetune"] == "CANCELLED" and states["report"] == "CANCELLED" and states["data"] == "DONE"
    deadline = time.time() + 10
    while processes_of(sub["run_dir"]) and time.time() < deadline:
        time.sleep(0.2)
    assert processes_of(sub["run_dir"]) == [], "processes left behind after cancel"


def test_a_failing_rank_s_own_exit_code_is_shown_not_torchrun_s(setup, tmp_path):
    """The 2-GPU fine-tune runs under torch.distributed.run, which exits 1 when a worker fails: status
    shows the workers' own exit code 3 (their failure marker), and the dependents are cancelled."""
    profile, env = setup
    recipe = write_test_recipe(tmp_path / "r.yaml")
    sub = submit(env, profile, recipe)
    open(os.path.join(sub["run_dir"], "fail-finetune"), "w").close()
    code, report = wait(env, sub["run_id"])
    finetune = by_name(report)["finetune"]
    assert code == 4 and report["overall"] == "FAILED"
    assert (finetune["state"], finetune["exit_code"], finetune["exit_source"]) == ("FAILED", 3, "task"), finetune
    assert open(os.path.join(sub["run_dir"], "markers", "finetune.finished")).read().strip() == "1", "torchrun's"
    assert by_name(report)["report"]["state"] == "CANCELLED"
    assert by_name(report)["report"]["reason"] == "DependencyNeverSatisfied"


def test_the_supervisor_refuses_a_run_directory_that_is_not_private(tmp_path, capsys):
    from launcher.backends import local_supervisor
    from tests.rendered import render_run

    run = render_run(tmp_path / "r")
    link = tmp_path / "link"
    link.symlink_to(run.dir)
    assert local_supervisor.main([str(link), "g1", "data"]) == 2  # a run reached through a link
    os.chmod(os.path.dirname(run.dir), 0o777)
    assert local_supervisor.main([run.dir, "g1", "data"]) == 2     # a runs directory others may write
    errors = capsys.readouterr().err.splitlines()
    assert len(errors) == 2 and all(line.startswith("minitron supervisor: ") for line in errors), errors
    assert not os.path.exists(os.path.join(run.dir, "local"))      # nothing started, no supervisor state
