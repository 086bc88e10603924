"""`minitron check --probe` and `minitron submit --smoke` against the real Slurm testbed.

The probe runs in the repository's .venv (container: none), which has the NeMo 2.7.3 stack and no
Transformer Engine and no GPU: the report must say exactly that, and check must print a line for TE.
"""

from __future__ import annotations

import glob
import json
import os
import sys
from pathlib import Path

import pytest

from helpers import REPO, Cli, stages, write_test_profile

VENV_PYTHON = REPO / ".venv" / "bin" / "python"
PYTHON = str(VENV_PYTHON) if VENV_PYTHON.exists() else sys.executable


def test_check_probe_reports_the_venv_stack_and_te_missing(slurm, tmp_path):
    cli = Cli(slurm, tmp_path / "home")
    profile = write_test_profile(tmp_path / "p.yaml", tmp_path / "jobs", python=PYTHON, attention="fused")
    proc = cli("check", "--probe", "--profile", profile, "--timeout", "400", timeout=600)
    out = proc.stdout
    assert proc.returncode == 1, out + proc.stderr  # no TE, no GPU on the testbed
    lines = out.splitlines()
    te = [line for line in lines if line.startswith("FAIL probe_gpu: Transformer Engine is not importable")]
    assert len(te) == 1 and "attention: unfused" in te[0], out
    assert not [line for line in lines if line.startswith(("FAIL probe_cpu", "warn probe_cpu"))], out
    assert "probe_gpu PENDING" in proc.stderr or "probe_gpu RUNNING" in proc.stderr  # progress while it waited
    runs = glob.glob(str(tmp_path / "jobs" / "runs" / "probe-*"))
    assert len(runs) == 1
    reports = {Path(p).parent.name: json.loads(Path(p).read_text())
               for p in glob.glob(os.path.join(runs[0], "work", "*", "probe.json"))}
    assert set(reports) == {"probe_gpu", "probe_cpu"}  # one job per partition: gpu and cpu differ
    for name, report in reports.items():
        assert report["finished"] and report["stage"] == name and report["partition"] == name[len("probe_"):]
        versions = report["versions"]
        assert versions["torch"] and versions["megatron-core"] and versions["modelopt"], versions
        assert versions["nemo"].startswith("2.7"), versions
        assert versions["transformer-engine"] is None
        caps = report["capabilities"]
        assert caps["te_importable"] is False
        assert caps["functions_missing"] == [] and all(f["present"] for f in report["functions"])
        assert caps["job_dir_writable"] is True and caps["hf_home_writable"] is True
        assert caps["optimizer_api_ok"] is True  # megatron-core 0.15.3 takes what NeMo 2.7.3 passes
        assert report["python"]["executable"] == PYTHON
        assert report["env"]["SLURM_JOB_PARTITION"] == report["partition"]
    # the probe run is a run like the others: registered, DONE, its scripts rendered like a stage's
    run_id = os.path.basename(runs[0])
    code, status = cli.status(run_id)
    assert code == 0 and {s["state"] for s in status["stages"]} == {"DONE"}
    script = Path(runs[0], "scripts", "probe_gpu.sh").read_text()
    assert "#SBATCH --gpus-per-node=2" in script and "-m jobs.runtime.task jobs.stages.probe --config" in script
    # --json: the whole report and the problems (a second, shorter probe: the CPU partition only)
    single = write_test_profile(tmp_path / "cpu.yaml", tmp_path / "jobs", python=PYTHON, gpus_per_node=0,
                                cpu_partition="gpu")
    proc = cli("check", "--probe", "--json", "--profile", single, "--timeout", "400", timeout=600)
    data = json.loads(proc.stdout)
    assert proc.returncode == 0, data["problems"]
    assert list(data["probes"]) == ["probe"] and data["probes"]["probe"]["role"] == "cpu"
    assert data["ok"] and data["problems"] == [] and any(s["runs"] == [] for s in data["compatibility"])


def _smoke_sets(**extra):
    sets = []
    for kind in ("data", "import", "finetune", "prune", "distill", "report"):
        sets += ["--set", f"stages.{kind}.entrypoint=workload"]
    for key, value in extra.items():
        sets += ["--set", f"{key}={value}"]
    return sets


@pytest.fixture
def smoke_env(slurm, tmp_path):
    return Cli(slurm, tmp_path / "home", {"MT_STEP_SECONDS": "0.05"}), \
        write_test_profile(tmp_path / "p.yaml", tmp_path / "jobs")


def test_smoke_run_done_says_the_cluster_is_ready(smoke_env):
    cli, profile = smoke_env
    proc = cli("submit", "--smoke", "--json", "--profile", profile, *_smoke_sets())
    assert proc.returncode == 0, proc.stderr
    sub = json.loads(proc.stdout)
    assert sub["run_id"].startswith("smoke-")
    code, report = cli.wait(sub["run_id"], timeout=300)
    assert code == 0 and report["verdict"] == "smoke run DONE: cluster ready for the real recipe", report
    assert all(s["state"] == "DONE" for s in report["stages"])
    plan = json.load(open(os.path.join(sub["run_dir"], "plan.json")))
    assert all(s["nodes"] == 1 for s in plan["stages"])
    text = cli("status", sub["run_id"])
    assert text.returncode == 0 and text.stdout.rstrip().splitlines()[-1] == \
        "smoke run DONE: cluster ready for the real recipe"


def test_smoke_run_failure_names_the_stage(smoke_env):
    cli, profile = smoke_env
    proc = cli("submit", "--smoke", "--json", "--profile", profile, *_smoke_sets())
    assert proc.returncode == 0, proc.stderr
    sub = json.loads(proc.stdout)
    open(os.path.join(sub["run_dir"], "raise-finetune"), "w").close()
    code, report = cli.wait(sub["run_id"], timeout=300, until=lambda c, r: all(
        s["state"] not in ("PENDING", "RUNNING") for s in r["stages"]))
    assert code == 4, report
    assert stages(report)["finetune"]["state"] == "FAILED"
    verdict = report["verdict"]
    assert verdict.startswith("smoke run FAILED: stage finetune FAILED: RuntimeError: finetune: raising on purpose")
    assert "NOT ready" in verdict
    text = cli("status", sub["run_id"])
    assert "the cluster is NOT ready" in text.stdout.splitlines()[-1]
