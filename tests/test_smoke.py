"""`minitron submit --smoke`: the bundled tiny recipe on the user's profile, one node per stage, short
limits, and the verdict `minitron status` ends a smoke run with (no Slurm needed: dry runs)."""

from __future__ import annotations

import json
import os
from types import SimpleNamespace

from launcher.runs.smoke import SMOKE_NAME, smoke_verdict
from launcher.config.profile import parse_time_minutes
from tests.conftest import run_cli, write_profile


def test_smoke_dry_run_is_the_tiny_recipe_on_one_node_of_the_users_profile(tmp_path):
    profile = write_profile(tmp_path / "mine.yaml", nodes=4, gpus_per_node=8, partition="batch", cpu_partition="cpu")
    env = {"MINITRON_HOME": str(tmp_path / "home")}
    proc = run_cli("submit", "--smoke", "--dry-run", "--json", "--profile", profile,
                   "--set", "stages.finetune.steps=12", env=env)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["run_id"].startswith(f"{SMOKE_NAME}-") and out["dry_run"]
    plan = json.load(open(os.path.join(out["run_dir"], "plan.json")))
    assert plan["recipe"] == SMOKE_NAME
    stages = {s["name"]: s for s in plan["stages"]}
    assert list(stages) == ["data", "import", "finetune", "prune_depth", "prune_width", "distill_depth",
                            "distill_width", "report"]
    assert all(s["nodes"] == 1 for s in stages.values())
    assert all(parse_time_minutes(s["time_limit"]) <= 15 for s in stages.values())
    assert stages["finetune"]["gpus_per_node"] == 8 and stages["finetune"]["steps"] == 12  # the user's --set wins
    assert stages["distill_depth"]["steps"] == 20 and stages["data"]["partition"] == "cpu"
    inputs = json.load(open(os.path.join(out["run_dir"], "inputs.json")))
    assert inputs["recipe"].endswith("tiny.yaml") and inputs["profile"] == profile
    script = open(os.path.join(out["run_dir"], "scripts", "finetune.sh")).read()
    assert "#SBATCH --nodes=1" in script and "nvcr.io#nvidia/nemo:26.02" in script  # the user's own image
    status = run_cli("status", out["run_id"], "--json", env=env)
    assert status.returncode == 8  # rendered: nothing proven yet
    assert json.loads(status.stdout)["verdict"] == ("smoke run RENDERED (a dry run): nothing ran, the cluster is not proven "
                                                   "ready yet (`minitron resume RUN --submit` submits it)")


def test_smoke_refuses_a_recipe(tmp_path):
    profile = write_profile(tmp_path / "mine.yaml")
    proc = run_cli("submit", "--smoke", "--dry-run", "--recipe", "tiny", "--profile", profile,
                   env={"MINITRON_HOME": str(tmp_path / "home")})
    assert proc.returncode == 2 and "--smoke runs the bundled tiny recipe" in proc.stderr
    assert not os.path.exists(tmp_path / "jobdir" / "runs")


def _stage(name, state, exception=None, exit_code=None):
    return SimpleNamespace(name=name, state=state, exception=exception, exit_code=exit_code)


def test_the_verdict():
    done = [_stage("data", "DONE"), _stage("report", "DONE")]
    assert smoke_verdict(SMOKE_NAME, "DONE", done) == "smoke run DONE: cluster ready for the real recipe"
    assert smoke_verdict("tiny", "DONE", done) is None
    assert smoke_verdict(SMOKE_NAME, "RUNNING", done) is None
    failed = [_stage("data", "DONE"), _stage("import", "FAILED", "RuntimeError: no TE"), _stage("report", "CANCELLED")]
    verdict = smoke_verdict(SMOKE_NAME, "FAILED", failed)
    assert "stage import FAILED: RuntimeError: no TE" in verdict and "NOT ready" in verdict
    verdict = smoke_verdict(SMOKE_NAME, "FAILED", [_stage("data", "TIMEOUT", exit_code=0)])
    assert "stage data TIMEOUT (exit 0)" in verdict


def test_a_bare_status_shows_the_pipeline_run_not_a_later_probe(tmp_path, monkeypatch):
    """`submit`, then `check --probe`, then `minitron status`: the user asks about their run, not the probe."""
    from launcher.app.probe import prepare_probe_run, probe_targets
    from launcher.config.profile import load_profile

    profile = write_profile(tmp_path / "mine.yaml", nodes=2, gpus_per_node=8, partition="batch")
    env = {"MINITRON_HOME": str(tmp_path / "home")}
    monkeypatch.setenv("MINITRON_HOME", env["MINITRON_HOME"])
    probe_only = prepare_probe_run(load_profile(profile), probe_targets(load_profile(profile)))
    status = run_cli("status", "--json", env=env)
    assert json.loads(status.stdout)["run_id"] == probe_only.id, status.stderr  # nothing else to show
    pipeline = json.loads(run_cli("submit", "--dry-run", "--json", "--profile", profile, env=env).stdout)
    probe = prepare_probe_run(load_profile(profile), probe_targets(load_profile(profile)))
    status = run_cli("status", "--json", env=env)
    assert json.loads(status.stdout)["run_id"] == pipeline["run_id"], status.stderr
    named = run_cli("status", probe.id, "--json", env=env)
    assert json.loads(named.stdout)["run_id"] == probe.id  # a probe run is still reachable by its id
