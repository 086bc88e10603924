"""The CLI as a user runs it: fresh processes, exit codes, files on disk."""

import json
import os
import stat
from pathlib import Path

from tests.conftest import run_cli, write_profile


def test_plan_json_has_every_field():
    proc = run_cli("plan", "--json")
    assert proc.returncode == 0, proc.stderr
    plan = json.loads(proc.stdout)
    required = {"name", "nodes", "gpus_per_node", "tp", "pp", "cp", "dp", "micro_batch_size", "global_batch_size",
                "grad_accum", "steps", "seq_length", "est_memory_gib", "gpu_memory_gib", "depends_on", "est_hours",
                "est_gpu_hours", "why", "partition", "time_limit"}
    assert [s["name"] for s in plan["stages"]] == ["data", "import", "finetune", "prune_depth", "prune_width",
                                                   "distill_depth", "distill_width", "report"]
    for stage in plan["stages"]:
        assert required <= set(stage)


def test_plan_table_for_people():
    proc = run_cli("plan")
    assert proc.returncode == 0
    for text in ("finetune", "TP/PP/CP/DP", "mem/GPU GiB", "critical path"):
        assert text in proc.stdout


def test_bad_input_exits_2_without_traceback(tmp_path):
    path = write_profile(tmp_path / "bad.yaml", gpu={"model": "H100", "memory_gib": -1})
    proc = run_cli("plan", "--profile", path)
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    assert "bad.yaml" in proc.stderr and "gpu.memory_gib" in proc.stderr


def test_help_lists_the_commands():
    proc = run_cli("--help")
    assert proc.returncode == 0
    for command in ("plan", "submit", "status", "runs", "logs", "cancel", "resume", "check", "report"):
        assert command in proc.stdout


def test_dry_run_writes_a_complete_run_directory(tmp_path, minitron_home):
    profile = write_profile(tmp_path / "p.yaml", env_vars=["HF_TOKEN", "NCCL_DEBUG=WARN"])
    secret = "hf_SECRETVALUE_do_not_write"
    proc = run_cli("submit", "--dry-run", "--json", "--profile", profile, "--set", "stages.distill.steps=7",
                   env={"HF_TOKEN": secret, "MINITRON_HOME": str(minitron_home)})
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    run_dir = out["run_dir"]
    assert stat.S_IMODE(os.stat(run_dir).st_mode) == 0o700
    for rel in ("profile.yaml", "recipe.yaml", "plan.json", "state.json", "code/jobs/__init__.py"):
        assert os.path.exists(os.path.join(run_dir, rel)), rel
    stages = json.load(open(os.path.join(run_dir, "plan.json")))["stages"]
    for stage in stages:
        assert os.path.exists(os.path.join(run_dir, "scripts", f"{stage['name']}.sh"))
        config = json.load(open(os.path.join(run_dir, "stages", f"{stage['name']}.json")))
        assert config["stage"] == stage["name"] and config["run_dir"] == run_dir
    distill = json.load(open(os.path.join(run_dir, "stages", "distill_width.json")))
    assert distill["train"]["steps"] == 7 and distill["inputs"]["student"].endswith("prune_width/model")
    for root, _, files in os.walk(run_dir):
        for name in files:
            with open(os.path.join(root, name), "rb") as handle:
                assert secret.encode() not in handle.read(), f"secret written to {name}"
    state = json.load(open(os.path.join(run_dir, "state.json")))
    assert all(s["job_id"] is None for s in state["stages"].values())  # nothing submitted
    listed = run_cli("runs", "--json", env={"MINITRON_HOME": str(minitron_home)})
    assert json.loads(listed.stdout)[0]["run_id"] == out["run_id"]


def test_report_reads_what_the_report_stage_wrote(tmp_path, minitron_home):
    env = {"MINITRON_HOME": str(minitron_home)}
    profile = write_profile(tmp_path / "p.yaml")
    run = json.loads(run_cli("submit", "--dry-run", "--json", "--profile", profile, env=env).stdout)
    early = run_cli("report", run["run_id"], env=env)
    assert early.returncode == 2 and "has no report yet" in early.stderr and "Traceback" not in early.stderr
    outputs = json.load(open(os.path.join(run["run_dir"], "stages", "report.json")))["outputs"]
    os.makedirs(os.path.dirname(outputs["summary_json"]), exist_ok=True)
    with open(outputs["summary_json"], "w") as handle:
        json.dump({"val_loss": {"teacher": 3.25, "width": 3.5}}, handle)
    with open(outputs["summary_md"], "w") as handle:
        handle.write("# Minitron summary\n\nwidth student: 3.5\n")
    proc = run_cli("report", run["run_id"], "--json", env=env)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout)
    assert report["val_loss"] == {"teacher": 3.25, "width": 3.5}
    assert {s["stage"] for s in report["plan_vs_actual"]["stages"]} >= {"finetune", "report"}
    people = run_cli("report", run["run_id"], env=env)
    assert people.returncode == 0 and "Minitron summary" in people.stdout, people.stderr


def test_unwritable_job_dir_fails_cleanly(tmp_path, minitron_home):
    locked = tmp_path / "locked"
    locked.mkdir()
    (locked / "runs").write_text("a file where the registry should be")
    profile = write_profile(tmp_path / "p.yaml", job_dir=str(locked))
    proc = run_cli("submit", "--dry-run", "--profile", profile, env={"MINITRON_HOME": str(minitron_home)})
    assert proc.returncode == 2 and "Traceback" not in proc.stderr
    assert "job_dir" in proc.stderr


def test_local_profile_with_an_image_needs_docker(tmp_path, minitron_home):
    profile = write_profile(tmp_path / "p.yaml", executor="local", gpus_per_node=1)
    proc = run_cli("submit", "--profile", profile, "--recipe", "tiny",
                   env={"MINITRON_HOME": str(minitron_home), "PATH": str(tmp_path)})  # no docker on PATH
    assert proc.returncode == 2 and "docker" in proc.stderr and "container" in proc.stderr
    assert not (tmp_path / "jobdir").exists()


def test_a_dry_run_for_a_job_dir_not_on_this_machine_creates_nothing_there(tmp_path):
    """A cluster path seen from a laptop: the dry run is written under MINITRON_HOME/dry-runs, its scripts still
    name job_dir, nothing is created at job_dir, and it cannot be submitted from here."""
    lustre = Path(f"/minitron-test-lustre-{os.getpid()}")  # a top-level directory this machine lacks
    assert not lustre.exists()
    job_dir = lustre / "fsw" / "runs-here"
    profile = write_profile(tmp_path / "profile.yaml", job_dir=str(job_dir))
    env = {"MINITRON_HOME": str(tmp_path / "home")}
    proc = run_cli("submit", "--dry-run", "--json", "--profile", profile, "--recipe", "tiny", env=env)
    assert proc.returncode == 0, proc.stderr
    sub = json.loads(proc.stdout)
    assert not lustre.exists(), "nothing created where job_dir would be"
    assert sub["run_dir"] == str(tmp_path / "home" / "dry-runs" / sub["run_id"])
    assert sub["rendered_for"] == str(job_dir / "runs" / sub["run_id"])
    script = Path(sub["scripts"]["finetune"]).read_text()
    assert f"{job_dir}/runs/{sub['run_id']}/" in script and str(tmp_path / "home") not in script
    human = run_cli("submit", "--dry-run", "--profile", profile, "--recipe", "tiny", env=env)
    assert "job_dir's file system is not on this machine" in human.stdout.replace("\n", " ")
    status = run_cli("status", sub["run_id"], "--json", env=env)
    assert status.returncode == 8 and json.loads(status.stdout)["overall"] == "RENDERED"
    resumed = run_cli("resume", sub["run_id"], "--submit", env={**env, "PATH": "/nonexistent"})
    assert resumed.returncode == 2 and "written away from its job_dir" in resumed.stderr, resumed.stderr
    assert not lustre.exists()
