"""launcher.api without Slurm: docs/api.md's example up to the submit (plan, dry run, status, a mistake),
and the API and the CLI agreeing on results and errors (the CLI is built on the API)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from launcher import api
from launcher.core.errors import ExitCode, LauncherError, UserError
from tests.conftest import REPO, api_doc_steps, run_api_steps, run_cli, write_profile

UNIT_STEPS = ("setup", "plan", "dry-run", "errors")
LIVE_STEPS = ("submit", "cancel", "resume", "poll", "report")  # tests/integration/test_api_live.py


@pytest.fixture
def profile(tmp_path, minitron_home):
    (tmp_path / "jobdir").mkdir()
    return write_profile(tmp_path / "profile.yaml", job_dir=str(tmp_path / "jobdir"))


def test_every_step_of_the_documented_example_is_run_by_a_test():
    assert list(api_doc_steps()) == ["setup", "plan", "dry-run", "errors", "submit", "poll", "report", "cancel",
                                     "resume"]
    assert set(api_doc_steps()) == set(UNIT_STEPS) | set(LIVE_STEPS)


def test_the_documented_example_plans_dry_runs_and_fails_as_documented(profile, capsys):
    ns = run_api_steps(["setup"], {})
    ns["profile"] = profile
    run_api_steps(UNIT_STEPS[1:], ns)
    out = capsys.readouterr().out
    plan, dry = ns["plan"], ns["dry"]
    assert [s.name for s in plan.stages][:3] == ["data", "import", "finetune"]
    assert plan.stage("finetune").steps == 20  # the documented override reached the plan
    assert "critical path" in out and "#SBATCH" in out  # the plan's lines, then the script's head
    assert os.path.isdir(dry.run_dir) and dry.run_dir.startswith(os.path.dirname(profile))
    assert dry.dry_run and dry.queued == {} and set(dry.jobs) == set(plan.names())
    assert all(job is None for job in dry.jobs.values())
    assert "2 --set stages.finetune.stepz=20" in out and "did you mean 'steps'?" in out


def test_plan_is_the_cli_s_plan(profile):
    ours = api.plan(profile, "tiny", ["stages.distill.steps=7"]).to_json()
    proc = run_cli("plan", "--json", "--profile", profile, "--recipe", "tiny", "--set", "stages.distill.steps=7")
    assert proc.returncode == 0, proc.stderr
    assert ours == json.loads(proc.stdout)


def test_errors_carry_the_cli_s_exit_code_and_line(profile):
    with pytest.raises(UserError) as caught:
        api.plan(profile, "no-such-recipe")
    proc = run_cli("plan", "--profile", profile, "--recipe", "no-such-recipe")
    assert caught.value.exit_code == proc.returncode == ExitCode.USAGE
    assert proc.stderr == f"minitron: error: {caught.value}\n"


def test_a_dry_run_is_listed_rendered_and_refuses_what_needs_a_submitted_run(profile, minitron_home):
    dry = api.submit(profile, "tiny", dry_run=True)
    assert api.status(dry.run_id).state == "RENDERED"
    assert api.status().run_id == dry.run_id  # None: the newest, as `minitron status`
    rows = api.runs()
    assert [(r["run_id"], r["state"]) for r in rows] == [(dry.run_id, "RENDERED")]
    proc = run_cli("runs", "--json", env={"MINITRON_HOME": str(minitron_home)})
    assert json.loads(proc.stdout) == json.loads(json.dumps(rows))
    with pytest.raises(UserError, match="no stage of run .* has started yet"):
        api.logs(dry.run_id)  # checked at the call, before a line is asked for
    with pytest.raises(UserError, match="has no stage 'finetun'.*did you mean 'finetune'"):
        api.logs(dry.run_id, "finetun")
    with pytest.raises(UserError, match="stage finetune has ranks 0 to 7, not 8"):
        api.logs(dry.run_id, "finetune", rank=8)
    with pytest.raises(UserError, match="stage data has no log yet"):
        api.logs(dry.run_id, "data", rank=0)  # one rank: its log is the stage's
    with pytest.raises(UserError, match="is a dry run: nothing of it was ever submitted"):
        api.resume(dry.run_id)
    with pytest.raises(LauncherError) as caught:
        api.cancel("no-such-run")
    assert caught.value.exit_code == ExitCode.USAGE


def test_importing_the_api_loads_no_training_stack():
    code = ("import sys, launcher.api; print(sorted({m.split('.')[0] for m in sys.modules} & "
            "{'torch', 'nemo', 'megatron', 'lightning', 'transformers', 'matplotlib', 'graphviz'}))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
