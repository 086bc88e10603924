"""Does calibration make `minitron plan` predict a run's wall time (issue 14: within ±15 % once
calibrated)? Runs the same small run twice through the launcher with the local executor on this
machine, stages being the test workload (tests/integration/workload.py: it keeps the stage contract
and sleeps per step), and compares the plan's critical path with the measured wall time:

  1. plan (no calibration data) → submit → wait → the run's measured stage times recorded (the local
     supervisor at the run's end, or `minitron calibrate`);
  2. plan again (now "calibrated from 1 run") → submit → wait.

    python benchmarks/calibration_check.py [--steps 40] [--step-seconds 0.1]

It measures the calibration mechanism end to end (record on a finished run, read back by the
planner); the GPU stages' own times are measured on the device (benchmarks/RESULTS.md).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import yaml

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from tests.integration.helpers import write_test_recipe  # noqa: E402


def cli(env: dict, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "launcher.app.cli", *args], capture_output=True, text=True, cwd=REPO,
                          env={**os.environ, "PYTHONPATH": REPO, **env}, timeout=600)


def plan_seconds(env: dict, profile: str, recipe: str) -> tuple[float, int]:
    plan = json.loads(cli(env, "plan", "--json", "--profile", profile, "--recipe", recipe).stdout)
    return plan["est_hours"] * 3600, min(s.get("calibrated_runs", 0) for s in plan["stages"])


def run_once(env: dict, profile: str, recipe: str) -> float:
    sub = json.loads(cli(env, "submit", "--json", "--profile", profile, "--recipe", recipe).stdout)
    while True:
        proc = cli(env, "status", sub["run_id"], "--json")
        if proc.returncode != 3:
            break
        time.sleep(1.0)
    report = json.loads(proc.stdout)
    assert proc.returncode == 0, report
    return report["totals"]["wall_s"]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--step-seconds", type=float, default=0.1)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as root:
        profile = os.path.join(root, "local.yaml")
        with open(profile, "w") as handle:
            yaml.safe_dump({"executor": "local", "nodes": 1, "gpus_per_node": 2,
                            "gpu": {"model": "H100-80GB", "memory_gib": 80}, "job_dir": os.path.join(root, "jobs"),
                            "container": "none", "python": sys.executable, "attention": "unfused",
                            "env_vars": [f"PYTHONPATH={os.path.join(REPO, 'tests', 'integration')}", "MT_STEP_SECONDS"]},
                           handle)
        recipe = write_test_recipe(os.path.join(root, "r.yaml"), finetune={"steps": args.steps},
                                   distill={"steps": args.steps})
        env = {"MINITRON_HOME": os.path.join(root, "home"), "MT_STEP_SECONDS": str(args.step_seconds)}
        rows = []
        for attempt in (1, 2):
            estimate, calibrated = plan_seconds(env, profile, recipe)
            actual = run_once(env, profile, recipe)
            rows.append((attempt, calibrated, estimate, actual))
    print("| run | stages calibrated from | plan: critical path | measured wall | estimate / actual |")
    print("|---|---|---|---|---|")
    for attempt, calibrated, estimate, actual in rows:
        print(f"| {attempt} | {calibrated} run(s) | {estimate:.1f} s | {actual:.1f} s | {estimate / actual:.2f} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
