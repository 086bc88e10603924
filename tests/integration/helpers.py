"""Profiles, recipes and CLI calls for the executor tests against the real Slurm testbed."""

from __future__ import annotations

import json
import os
import sys
import time
from pathlib import Path

import yaml

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
sys.path.insert(0, str(REPO))

from tests.conftest import run_cli  # noqa: E402


def write_test_profile(path: Path, job_dir: Path, **overrides) -> str:
    profile = {
        "executor": "slurm", "nodes": 4, "gpus_per_node": 2, "gpu": {"model": "H100-80GB", "memory_gib": 80},
        "partition": "gpu", "cpu_partition": "cpu", "mem_per_node": "500", "exclusive": False,
        "timeouts": {"gpu": "01:00:00", "cpu": "01:00:00"}, "default_time": "00:10:00",
        "container": "none", "mpi": "none", "python": sys.executable, "job_dir": str(job_dir),
        "env_vars": [f"PYTHONPATH={HERE}", "MT_STEP_SECONDS", "HF_TOKEN"],
        "signal_lead_s": 60, "max_continuations": 6, "attention": "unfused",  # no Transformer Engine here
    }
    profile.update(overrides)
    Path(path).write_text(yaml.safe_dump(profile))
    return str(path)


def write_test_recipe(path: Path, entrypoint: str = "workload", **stage_overrides) -> str:
    recipe = yaml.safe_load((REPO / "launcher" / "recipes" / "tiny.yaml").read_text())
    recipe["name"] = "tiny-test"
    for kind in ("data", "import", "finetune", "prune", "distill", "report"):
        recipe["stages"].setdefault(kind, {})["entrypoint"] = entrypoint
        recipe["stages"][kind].update(stage_overrides.get(kind, {}))
    Path(path).write_text(yaml.safe_dump(recipe))
    return str(path)


class Cli:
    def __init__(self, slurm, home: Path, extra_env: dict | None = None):
        self.env = {**slurm.env, "MINITRON_HOME": str(home), "MT_STEP_SECONDS": "0.2", **(extra_env or {})}

    def __call__(self, *args: str, timeout: float = 120, **env):
        return run_cli(*args, env={**self.env, **env}, timeout=timeout)

    def submit(self, profile: str, recipe: str, *extra: str) -> dict:
        proc = self("submit", "--json", "--profile", profile, "--recipe", recipe, *extra)
        assert proc.returncode == 0, proc.stderr + proc.stdout
        return json.loads(proc.stdout)

    def status(self, run_id: str) -> tuple[int, dict]:
        proc = self("status", run_id, "--json")
        assert proc.returncode in (0, 3, 4), proc.stderr + proc.stdout
        return proc.returncode, json.loads(proc.stdout)

    def wait(self, run_id: str, timeout: float = 240, until=lambda code, report: code != 3) -> tuple[int, dict]:
        deadline = time.time() + timeout
        while True:
            code, report = self.status(run_id)
            if until(code, report):
                return code, report
            if time.time() > deadline:
                raise AssertionError(f"run {run_id} did not settle in {timeout}s: "
                                     + json.dumps({s['name']: s['state'] for s in report['stages']}))
            time.sleep(1.0)


def stages(report: dict) -> dict[str, dict]:
    return {s["name"]: s for s in report["stages"]}


def started_at(run_dir: str, stage: str) -> float:
    return float(open(os.path.join(run_dir, "markers", f"{stage}.started")).read().split()[2])


def squeue_ids(slurm) -> set[str]:
    proc = slurm.run(["squeue", "--noheader", "--format=%i"])
    return set(proc.stdout.split())
