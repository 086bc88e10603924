"""`minitron submit/status/logs/cancel/resume` against a real slurmctld + slurmd (tests/integration/)."""

from __future__ import annotations

import json
import os
import time

import pytest

from helpers import Cli, squeue_ids, stages, started_at, write_test_profile, write_test_recipe

TINY_STAGES = ["data", "import", "finetune", "prune_depth", "prune_width", "distill_depth", "distill_width", "report"]


@pytest.fixture
def env(tmp_path, slurm):
    profile = write_test_profile(tmp_path / "profile.yaml", tmp_path / "jobs")
    recipe = write_test_recipe(tmp_path / "recipe.yaml")
    return Cli(slurm, tmp_path / "home"), profile, recipe


def test_pipeline_runs_in_dependency_order_with_parallel_branches(env, slurm):
    cli, profile, recipe = env
    slow = write_test_recipe(env[2].replace("recipe.yaml", "slow.yaml"),
                             distill={"steps": 15}, finetune={"steps": 10})
    sub = cli.submit(profile, slow)
    run_id, run_dir = sub["run_id"], sub["run_dir"]
    students = ("distill_depth", "distill_width")
    for name in students:  # each student waits, running, until the other runs too: side by side by events
        open(os.path.join(run_dir, f"hold-{name}"), "w").close()
    assert set(sub["jobs"]) == set(TINY_STAGES) and all(j.isdigit() for j in sub["jobs"].values())
    code, first = cli.status(run_id)
    assert code == 3
    pending = [s for s in first["stages"] if s["state"] == "PENDING"]
    assert any(s["reason"] == "Dependency" for s in pending), first
    # plain squeue cuts names at 8 characters: the stages of a run still differ there, and the run is named
    listing = slurm.run(["squeue", "--noheader", "--states=all", "--format=%i|%.8j|%k"]).stdout.splitlines()
    ours = [line.split("|") for line in listing if line.split("|")[0] in sub["jobs"].values()]
    assert len({short for _, short, _ in ours}) == len(ours) == len(TINY_STAGES), listing
    assert all(comment.startswith(f"minitron:{run_id}:") for _, _, comment in ours), listing
    cli.wait(run_id, until=lambda c, r: all(stages(r)[n]["state"] == "RUNNING" for n in students))
    for name in students:
        os.remove(os.path.join(run_dir, f"hold-{name}"))
    code, report = cli.wait(run_id)
    assert code == 0, json.dumps(report, indent=1)
    assert all(s["state"] == "DONE" for s in report["stages"])
    plan = json.load(open(os.path.join(run_dir, "plan.json")))
    for stage in plan["stages"]:
        for parent in stage["depends_on"]:
            assert started_at(run_dir, stage["name"]) >= started_at(run_dir, parent)
    # the two students ran side by side: each started before the other finished
    logs = {name: open(os.path.join(run_dir, "logs", f"{name}-{sub['jobs'][name]}.out")).read()
            for name in ("distill_depth", "distill_width")}
    assert all("done after 15 steps" in text for text in logs.values())
    # the multi-node fine-tune: 4 nodes × 2 tasks, distinct node ids, one rendezvous address, and torch's
    # variables (set by jobs.runtime.task) consistent with Slurm's
    tasks = [json.load(open(os.path.join(run_dir, "work", "finetune", "tasks", f)))
             for f in os.listdir(os.path.join(run_dir, "work", "finetune", "tasks"))]
    assert len(tasks) == 8
    assert {t["SLURM_NODEID"] for t in tasks} == {"0", "1", "2", "3"}
    assert len({(t["MASTER_ADDR"], t["MASTER_PORT"]) for t in tasks}) == 1 and tasks[0]["MASTER_PORT"]
    for t in tasks:
        assert (t["RANK"], t["WORLD_SIZE"], t["LOCAL_RANK"], t["NODE_RANK"]) == \
            (t["SLURM_PROCID"], t["SLURM_NTASKS"], t["SLURM_LOCALID"], t["SLURM_NODEID"]), t
        assert t["LOCAL_WORLD_SIZE"] == "2", t
    assert sorted(int(t["RANK"]) for t in tasks) == list(range(8))
    logs = cli("logs", run_id, "finetune")
    assert logs.returncode == 0 and "MINITRON_PROGRESS step=10 total=10" in logs.stdout
    progress = stages(report)["finetune"]
    assert progress["step"] == 10 and progress["total_steps"] == 10 and progress["train_loss"] == pytest.approx(0.5)


def test_failed_stage_cancels_dependents_and_resume_reruns_only_what_follows(env, slurm, tmp_path):
    cli, profile, recipe = env
    sub = cli.submit(profile, recipe)
    run_id, run_dir = sub["run_id"], sub["run_dir"]
    open(os.path.join(run_dir, "fail-import"), "w").close()  # before the import starts
    code, report = cli.wait(run_id, until=lambda c, r: all(
        s["state"] not in ("PENDING", "RUNNING") for s in r["stages"]))
    assert code == 4
    by = stages(report)
    assert by["data"]["state"] == "DONE"
    assert by["import"]["state"] == "FAILED" and by["import"]["exit_code"] == 3
    assert any("failing on purpose" in line for line in by["import"]["log_tail"])
    for name in ("finetune", "prune_depth", "prune_width", "distill_depth", "distill_width", "report"):
        assert by[name]["state"] == "CANCELLED", (name, by[name])
    assert not squeue_ids(slurm) & set(sub["jobs"].values()), "dependents left pending forever"
    human = cli("status", run_id)
    assert "FAILED" in human.stdout and "failing on purpose" in human.stdout
    os.remove(os.path.join(run_dir, "fail-import"))
    resumed = cli("resume", run_id)
    assert resumed.returncode == 0, resumed.stderr
    state = json.load(open(os.path.join(run_dir, "state.json")))
    assert state["stages"]["data"]["job_id"] == sub["jobs"]["data"]          # done: not resubmitted
    assert state["stages"]["import"]["job_id"] != sub["jobs"]["import"]  # failed: resubmitted
    code, report = cli.wait(run_id)
    assert code == 0 and all(s["state"] == "DONE" for s in report["stages"]), json.dumps(report, indent=1)
    assert len(state["stages"]["report"]["attempts"]) == 2


def test_cancel_a_stage_cancels_it_and_everything_downstream(env, slurm):
    cli, profile, recipe = env
    slow = write_test_recipe(env[2].replace("recipe.yaml", "slow.yaml"), finetune={"steps": 25})
    sub = cli.submit(profile, slow)
    run_id = sub["run_id"]
    proc = cli("cancel", run_id, "prune_width")
    assert proc.returncode == 0, proc.stderr
    code, report = cli.status(run_id)  # at once: the user's cancel shows before Slurm has ended the jobs
    assert {stages(report)[n]["state"] for n in ("prune_width", "distill_width", "report")} <= \
        {"CANCELLING", "CANCELLED"}, json.dumps(report, indent=1)
    code, report = cli.wait(run_id, until=lambda c, r: all(
        s["state"] not in ("PENDING", "RUNNING", "CANCELLING") for s in r["stages"]))
    by = stages(report)
    assert code == 4
    for name in ("prune_width", "distill_width", "report"):
        assert by[name]["state"] == "CANCELLED", (name, by[name])
    for name in ("data", "import", "finetune", "prune_depth", "distill_depth"):
        assert by[name]["state"] == "DONE", (name, by[name])
    assert cli("resume", run_id).returncode == 0
    code, report = cli.wait(run_id)
    assert code == 0


def test_time_limit_signal_checkpoint_and_continuation(env, slurm, tmp_path):
    _, profile, _ = env
    cli = Cli(slurm, tmp_path / "home", {"MT_STEP_SECONDS": "2"})  # sbatch passes it to the job
    recipe = write_test_recipe(tmp_path / "timed.yaml", finetune={"steps": 45, "time": "00:02:00"},
                               distill={"steps": 3})
    sub = cli.submit(profile, recipe, "--set", "students=[depth]")
    run_id, run_dir = sub["run_id"], sub["run_dir"]
    code, report = cli.wait(run_id, timeout=600)
    assert code == 0, json.dumps(report, indent=1)
    log = open(os.path.join(run_dir, "logs", f"finetune-{sub['jobs']['finetune']}.out")).read()
    assert "SIGUSR1 → checkpoint" in log and "continuing (attempt 1" in log
    assert "done after 45 steps" in log
    attempt = int(open(os.path.join(run_dir, "markers", "finetune.started")).read().split()[3])
    assert attempt >= 1


def test_a_stage_killed_after_it_completed_is_done_and_its_dependents_run(env, slurm, tmp_path):
    """The ranks of a finished stage die during teardown (seen: Slurm's time-limit signal arriving just after
    the last step). The complete marker, newer than the attempt's start, makes the job exit 0: the stage is
    DONE and the stages that depend on it (afterok) run instead of being cancelled."""
    _, profile, recipe = env
    cli = Cli(slurm, tmp_path / "home")
    sub = cli.submit(profile, recipe, "--set", "students=[depth]")
    run_id, run_dir = sub["run_id"], sub["run_dir"]
    open(os.path.join(run_dir, "die-after-complete-finetune"), "w").close()  # read after finetune's last step
    code, report = cli.wait(run_id, timeout=300)
    assert code == 0, json.dumps(report, indent=1)
    assert all(s["state"] == "DONE" for s in report["stages"]), report
    log = open(os.path.join(run_dir, "logs", f"finetune-{sub['jobs']['finetune']}.out")).read()
    assert "dying after completion" in log and "exit 143 after completion ignored" in log, log[-2000:]


def test_a_stage_that_stops_making_progress_is_stalled_then_continued(env, slurm, tmp_path):
    """A hung training stage (the workload stops between steps while `stall-finetune` exists): status
    marks it STALLED with its last log line; the profile's stall_timeout_s makes the job itself exit
    for requeue (continue marker, exit 85); the continuation then finishes the stage."""
    profile = write_test_profile(tmp_path / "stall.yaml", tmp_path / "jobs", stall_timeout_s=20)
    recipe = write_test_recipe(tmp_path / "stall-recipe.yaml", finetune={"steps": 40})
    cli = Cli(slurm, tmp_path / "home")
    sub = cli.submit(profile, recipe, "--set", "students=[depth]")
    run_id, run_dir = sub["run_id"], sub["run_dir"]
    stall = os.path.join(run_dir, "stall-finetune")
    cli.wait(run_id, until=lambda c, r: (stages(r)["finetune"]["step"] or 0) >= 3)
    open(stall, "w").close()
    code, report = cli.wait(run_id, until=lambda c, r: stages(r)["finetune"]["state"] == "STALLED")
    stalled = stages(report)["finetune"]
    assert code == 3 and stalled["reason"].startswith("no progress for"), stalled
    assert stalled["log_tail"] and "MINITRON_PROGRESS" in stalled["log_tail"][-1], stalled
    human = cli("status", run_id)
    assert "STALLED" in human.stdout
    log = os.path.join(run_dir, "logs", f"finetune-{sub['jobs']['finetune']}.out")
    deadline = time.time() + 120
    while "no progress for 20 s" not in open(log).read():  # the job's own watchdog
        assert time.time() < deadline, open(log).read()[-2000:]
        time.sleep(0.5)
    os.remove(stall)
    code, report = cli.wait(run_id, timeout=300)
    assert code == 0, json.dumps(report, indent=1)
    text = open(log).read()
    assert "continuing (attempt 1" in text and "done after 40 steps" in text
    assert json.load(open(os.path.join(run_dir, "stages", "finetune.json")))["runtime"] == {"stall_timeout_s": 20}
