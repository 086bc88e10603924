"""`python -m jobs.runtime.task`: every stage process starts there. It gives a task torch's distributed
variables from Slurm's, and records the first failing rank's own exit code and exception line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from jobs.contract import Marker, RunLayout, read_markers
from jobs.runtime.task import distributed_env
from tests.rendered import render_run, stage_configs

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_slurm_variables_become_torch_s():
    env = {"SLURM_PROCID": "5", "SLURM_NTASKS": "8", "SLURM_LOCALID": "1", "SLURM_NODEID": "2",
           "SLURM_TASKS_PER_NODE": "2(x4)", "MASTER_ADDR": "10.0.0.1", "MASTER_PORT": "29511"}
    assert distributed_env(env) == {"RANK": "5", "WORLD_SIZE": "8", "LOCAL_RANK": "1", "NODE_RANK": "2",
                                    "LOCAL_WORLD_SIZE": "2"}
    uneven = {**env, "SLURM_TASKS_PER_NODE": "4(x2),3", "SLURM_NODEID": "2"}
    assert distributed_env(uneven)["LOCAL_WORLD_SIZE"] == "3"
    step = {**env, "SLURM_STEP_NUM_TASKS": "4", "SLURM_NTASKS": "8"}
    assert distributed_env(step)["WORLD_SIZE"] == "4", "the step's task count, not the allocation's"


def test_what_torchrun_set_is_kept_and_a_lone_process_is_rank_0_of_1():
    assert distributed_env({"RANK": "3", "SLURM_PROCID": "0"}) == {}
    assert distributed_env({}) == {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0", "LOCAL_WORLD_SIZE": "1",
                                   "NODE_RANK": "0"}


@pytest.fixture
def stage(tmp_path):
    layout = RunLayout(str(tmp_path / "run"))
    os.makedirs(layout.markers)
    module = tmp_path / "mods" / "entry.py"
    module.parent.mkdir()
    module.write_text(
        "import json, os, sys\n"
        "mode = sys.argv[sys.argv.index('--mode') + 1]\n"
        "json.dump({k: os.environ.get(k) for k in ('RANK', 'WORLD_SIZE', 'LOCAL_RANK', 'MASTER_ADDR')},"
        " open(os.environ['DUMP'], 'w'))\n"
        "if mode == 'raise':\n    raise RuntimeError('Missing key in checkpoint state_dict: x')\n"
        "if mode == 'exit3':\n    sys.exit(3)\n"
        "if mode == 'continue':\n    sys.exit(85)\n"
        "if mode == 'late-usr1':  # the time-limit signal arriving while the finished process exits\n"
        "    import atexit, signal\n    atexit.register(lambda: os.kill(os.getpid(), signal.SIGUSR1))\n")
    return layout, tmp_path


def run_task(layout, tmp_path, mode, **env):
    environ = {**os.environ, "PYTHONPATH": f"{tmp_path / 'mods'}{os.pathsep}{REPO}", "MINITRON_RUN_DIR": layout.run_dir,
               "MINITRON_STAGE": "finetune", "DUMP": str(tmp_path / "env.json"), **env}
    environ.pop("RANK", None)
    return subprocess.run([sys.executable, "-m", "jobs.runtime.task", "entry", "--mode", mode], env=environ,
                          capture_output=True, text=True, timeout=60)


def test_an_exception_is_recorded_with_its_line_and_still_printed(stage):
    layout, tmp = stage
    proc = run_task(layout, tmp, "raise", SLURM_PROCID="6", SLURM_NTASKS="8", SLURM_JOB_ID="41")
    assert proc.returncode == 1 and "Traceback" in proc.stderr
    failure = read_markers(layout, "finetune").failure
    assert failure.exit_code == 1 and failure.rank == 6 and failure.job_id == "41"
    assert failure.exception == "RuntimeError: Missing key in checkpoint state_dict: x"
    assert json.loads((tmp / "env.json").read_text())["RANK"] == "6"


def test_an_exit_code_is_recorded_and_the_first_failing_rank_wins(stage):
    layout, tmp = stage
    assert run_task(layout, tmp, "exit3", SLURM_PROCID="2", SLURM_NTASKS="4").returncode == 3
    assert run_task(layout, tmp, "raise", SLURM_PROCID="0", SLURM_NTASKS="4").returncode == 1
    failure = read_markers(layout, "finetune").failure
    assert (failure.exit_code, failure.rank, failure.exception) == (3, 2, None)


def test_success_and_continuation_record_no_failure(stage):
    layout, tmp = stage
    assert run_task(layout, tmp, "ok").returncode == 0
    assert run_task(layout, tmp, "continue").returncode == 85
    assert not os.path.exists(layout.marker("finetune", Marker.FAILED))
    assert json.loads((tmp / "env.json").read_text()) == {"RANK": "0", "WORLD_SIZE": "1", "LOCAL_RANK": "0",
                                                         "MASTER_ADDR": os.environ.get("MASTER_ADDR")}


def test_a_time_limit_signal_after_success_does_not_kill_the_task(stage):
    """Seen on the testbed: a continuation finished its steps just before Slurm's SIGUSR1 (signal_lead_s) and
    its ranks died of the signal while exiting, failing a complete stage and cancelling its dependents."""
    layout, tmp = stage
    proc = run_task(layout, tmp, "late-usr1")
    assert proc.returncode == 0, (proc.returncode, proc.stderr)
    assert not os.path.exists(layout.marker("finetune", Marker.FAILED))


def test_the_stall_watchdog_exits_for_requeue_once_steps_stop(stage):
    layout, tmp = stage
    rendered = render_run(tmp / "rendered", stall_timeout_s=60)
    raw = stage_configs(rendered)["finetune"]
    assert raw["runtime"] == {"stall_timeout_s": 60}  # the profile's, through the plan
    config = tmp / "finetune.json"
    config.write_text(json.dumps({**raw, "run_dir": layout.run_dir, "markers_dir": layout.markers,
                                  "runtime": {"stall_timeout_s": 1}}))
    hang = tmp / "mods" / "hang.py"
    hang.write_text("import time\nfrom jobs.contract import note_progress\nnote_progress()\ntime.sleep(600)\n")
    environ = {**os.environ, "PYTHONPATH": f"{tmp / 'mods'}{os.pathsep}{REPO}", "MINITRON_RUN_DIR": layout.run_dir,
               "MINITRON_STAGE": "finetune"}
    proc = subprocess.run([sys.executable, "-m", "jobs.runtime.task", "hang", "--config", str(config)], env=environ,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 85 and "no progress for 1 s" in proc.stderr
    markers = read_markers(layout, "finetune")
    assert markers.continue_requested and markers.failure is None
    quiet = tmp / "mods" / "quiet.py"  # no step ever reported: loading is not a stall
    quiet.write_text("import time\ntime.sleep(2.5)\n")
    proc = subprocess.run([sys.executable, "-m", "jobs.runtime.task", "quiet", "--config", str(config)], env=environ,
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_a_config_that_breaks_the_contract_exits_2_before_the_entrypoint_is_imported(stage):
    """The plan chose fused attention (Transformer Engine), which this stack lacks: exit 2 with the setting and
    its fix, recorded as the task's own failure, and the entrypoint (NeMo's 38 s import in a real stage) never runs."""
    layout, tmp = stage
    raw = stage_configs(render_run(tmp / "rendered"))["finetune"]
    config = tmp / "finetune.json"
    config.write_text(json.dumps({**raw, "run_dir": layout.run_dir, "markers_dir": layout.markers,
                                  "engine": {"attention": "fused", "precision": "bf16-mixed"}}))
    environ = {**os.environ, "PYTHONPATH": f"{tmp / 'mods'}{os.pathsep}{REPO}", "MINITRON_RUN_DIR": layout.run_dir,
               "MINITRON_STAGE": "finetune", "DUMP": str(tmp / "env.json")}
    proc = subprocess.run([sys.executable, "-m", "jobs.runtime.task", "entry", "--mode", "ok", "--config",
                           str(config)], env=environ, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2 and "attention: unfused" in proc.stderr
    assert not (tmp / "env.json").exists(), "the entrypoint ran"
    failure = read_markers(layout, "finetune").failure
    assert failure.exit_code == 2 and "engine.attention is 'fused'" in failure.exception


def test_a_stage_planned_for_gpus_on_a_node_without_any_exits_2_naming_the_profile_setting(stage):
    """Slurm's GRES may say GPUs the node does not have (the testbed emulates them): a stage of the jobs planned
    for GPUs stops before its entrypoint, naming `gpus_per_node: 0`; a stand-in entrypoint is not checked."""
    pytest.importorskip("torch")
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a GPU")
    layout, tmp = stage
    raw = stage_configs(render_run(tmp / "rendered"))["finetune"]
    assert raw["engine"]["device"] == "gpu"
    config = tmp / "finetune.json"
    config.write_text(json.dumps({**raw, "run_dir": layout.run_dir, "markers_dir": layout.markers}))
    environ = {**os.environ, "PYTHONPATH": f"{tmp / 'mods'}{os.pathsep}{REPO}", "MINITRON_RUN_DIR": layout.run_dir,
               "MINITRON_STAGE": "finetune", "DUMP": str(tmp / "env.json"), "CUDA_VISIBLE_DEVICES": "0"}
    proc = subprocess.run([sys.executable, "-m", "jobs.runtime.task", "jobs.stages.finetune", "--config",
                           str(config)], env=environ, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    failure = read_markers(layout, "finetune").failure
    assert failure.exit_code == 2 and "sees no CUDA device here (CUDA_VISIBLE_DEVICES=0" in failure.exception
    assert "`gpus_per_node: 0` in the profile" in failure.exception
    proc = subprocess.run([sys.executable, "-m", "jobs.runtime.task", "entry", "--mode", "ok", "--config",
                           str(config)], env=environ, capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr


def test_a_python_without_the_jobs_stack_exits_2_naming_the_profiles_python(stage):
    """The profile's `python` on the nodes must have torch and NeMo: without torch a stage of the jobs stops before
    its entrypoint, with the interpreter's path and the setting to change."""
    layout, tmp = stage
    raw = stage_configs(render_run(tmp / "rendered"))["finetune"]
    config = tmp / "finetune.json"
    config.write_text(json.dumps({**raw, "run_dir": layout.run_dir, "markers_dir": layout.markers}))
    (tmp / "mods" / "torch.py").write_text("raise ImportError(\"No module named 'torch'\")\n")
    environ = {**os.environ, "PYTHONPATH": f"{tmp / 'mods'}{os.pathsep}{REPO}", "MINITRON_RUN_DIR": layout.run_dir,
               "MINITRON_STAGE": "finetune"}
    proc = subprocess.run([sys.executable, "-m", "jobs.runtime.task", "jobs.stages.finetune", "--config",
                           str(config)], env=environ, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    failure = read_markers(layout, "finetune").failure
    assert f"cannot import torch (No module named 'torch'): {sys.executable} lacks the jobs' stack" in \
        failure.exception and "the profile's `python`" in failure.exception
