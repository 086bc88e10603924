"""docs/api.md's example against the real Slurm testbed, in this process: submit, cancel a stage,
resume, poll to DONE, report and logs (each rank's too), through launcher.api; the CLI then reads the
same run."""

from __future__ import annotations

import json
import time

import pytest

from helpers import Cli, stages, write_test_profile, write_test_recipe
from tests.conftest import run_api_steps

DOWNSTREAM_OF_FINETUNE = {"finetune", "prune_depth", "prune_width", "distill_depth", "distill_width", "report"}


@pytest.fixture
def api_env(tmp_path, slurm, monkeypatch):
    """The API reads the environment the CLI would: Slurm's client settings, MINITRON_HOME, the workload's."""
    cli = Cli(slurm, tmp_path / "home")
    for name, value in cli.env.items():
        monkeypatch.setenv(name, value)
    profile = write_test_profile(tmp_path / "profile.yaml", tmp_path / "jobs")
    recipe = write_test_recipe(tmp_path / "recipe.yaml", finetune={"steps": 25})
    return cli, profile, recipe


def _settled(api, run_id: str, timeout: float = 120):
    """The run's report once no stage is live or being cancelled (Slurm ends cancelled jobs on its own time)."""
    deadline = time.time() + timeout
    while True:
        report = api.status(run_id)
        if all(s.state not in ("PENDING", "RUNNING", "CANCELLING") for s in report.stages):
            return report
        assert time.time() < deadline, {s.name: s.state for s in report.stages}
        time.sleep(1.0)


def test_the_documented_example_submits_cancels_resumes_and_reports(api_env, capsys):
    cli, profile, recipe = api_env
    ns = run_api_steps(["setup"], {})
    ns.update(profile=profile, recipe=recipe, overrides=[], poll_s=1)
    run_api_steps(["plan", "dry-run", "errors", "submit"], ns)
    api, sub = ns["api"], ns["sub"]
    assert sub.queued == sub.jobs and all(job.isdigit() for job in sub.jobs.values())

    run_api_steps(["cancel"], ns)
    cancelled = capsys.readouterr().out.split("cancelled ", 1)[1].splitlines()[0]
    assert set(json.loads(cancelled.replace("'", '"'))) == {sub.jobs[n] for n in DOWNSTREAM_OF_FINETUNE}
    report = _settled(api, sub.run_id)
    assert {s.name for s in report.stages if s.state == "CANCELLED"} == DOWNSTREAM_OF_FINETUNE

    run_api_steps(["resume"], ns)
    again = ns["again"]
    assert set(again.queued) == DOWNSTREAM_OF_FINETUNE
    assert all(again.jobs[n] == again.queued[n] != sub.jobs[n] for n in DOWNSTREAM_OF_FINETUNE)

    run_api_steps(["poll", "report"], ns)
    assert ns["report"].state == "DONE", {s.name: (s.state, s.reason) for s in ns["report"].stages}
    out = capsys.readouterr().out
    assert "finetune" in out and "GPU-h" in out
    code, cli_report = cli.status(sub.run_id)  # the CLI sees what the API did
    assert code == 0 and {n: s["state"] for n, s in stages(cli_report).items()} == \
        {s.name: s.state for s in ns["report"].stages}
    assert [line.text for line in api.logs(sub.run_id, "finetune", lines=3)] == \
        cli("logs", sub.run_id, "finetune", "-n", "3").stdout.splitlines()
    planned = ns["plan"].stage("finetune")
    world = planned.nodes * planned.gpus_per_node
    assert world > 1
    for rank in range(world):  # under srun each rank also wrote its own log (jobs/runtime/ranklog.py)
        own = [line.text for line in api.logs(sub.run_id, "finetune", lines=0, rank=rank)]
        assert [line for line in own if " started" in line] == [f"finetune: rank {rank} of {world} started"]
