"""The launcher's stage configs pass the jobs' own validator (jobs.common.validate): the two sides
of docs/stage-config.md agree, for the tutorial and the tiny recipe, on Slurm and local profiles."""

import json
import os

import pytest

from jobs.common import validate
from tests.conftest import run_cli


@pytest.mark.parametrize("profile, recipe", [("h100-1x8", "minitron-8b-wikitext"), ("h100-4x8", "minitron-8b-wikitext"),
                                             ("local", "tiny"), ("a100-40g-2x8", "tiny")])
def test_every_stage_config_satisfies_the_jobs_validator(tmp_path, profile, recipe):
    env = {"MINITRON_HOME": str(tmp_path / "home"), "HOME": str(tmp_path), "USER": "ci"}
    extra = ["--set", "stages.export.enabled=true"]
    proc = run_cli("submit", "--dry-run", "--json", "--profile", profile, "--recipe", recipe, *extra, env=env)
    if profile == "h100-4x8":  # its job_dir is under /lustre: point it somewhere writable
        text = open(os.path.join(os.path.dirname(__file__), "..", "cluster_profiles", "h100-4x8.yaml")).read()
        path = tmp_path / "p.yaml"
        path.write_text(text.replace("/lustre/fsw/$USER/minitron-runs", str(tmp_path / "jobs")))
        proc = run_cli("submit", "--dry-run", "--json", "--profile", str(path), "--recipe", recipe, *extra, env=env)
    assert proc.returncode == 0, proc.stderr
    run_dir = json.loads(proc.stdout)["run_dir"]
    names = sorted(os.listdir(os.path.join(run_dir, "stages")))
    assert "export.json" in names and "report.json" in names
    for name in names:
        config = json.load(open(os.path.join(run_dir, "stages", name)))
        validate(config)  # raises ConfigError on any disagreement
        assert config["work_dir"] == os.path.join(run_dir, "work")
    report = json.load(open(os.path.join(run_dir, "stages", "report.json")))
    assert report["report"]["stages"]["teacher"] == "import"
