"""Tests of the Slurm testbed itself (.ci/slurm-testbed + slurm_cluster.py)."""

from __future__ import annotations

import time

import pytest

from slurm_cluster import SlurmTestbedError


def read_when_done(slurm, job_id, path, timeout=60):
    state = slurm.wait_job(job_id, timeout=timeout)
    assert state == "COMPLETED", f"job {job_id} ended {state}\n{slurm.logs()}"
    return path.read_text()


def test_all_nodes_idle(slurm):
    slurm.wait_idle(timeout=30)
    states = slurm.node_states()
    assert sorted(states) == sorted(slurm.node_names)
    assert set(states.values()) == {"idle"}


def test_two_node_job_sees_both_node_ids(slurm, tmp_path):
    out = tmp_path / "two.out"
    job = slurm.sbatch(
        "-N2", "--ntasks-per-node=1", "--time=2", f"--output={out}",
        wrap='srun bash -c \'echo "$SLURM_NODEID $(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n1)"\'',
    )
    lines = [line.split() for line in read_when_done(slurm, job, out).splitlines() if line.strip()]
    assert len(lines) == 2, lines
    assert {node_id for node_id, _ in lines} == {"0", "1"}
    first_hosts = {host for _, host in lines}
    assert len(first_hosts) == 1 and first_hosts.pop() in slurm.node_names


@pytest.mark.parametrize("gpu_arg", ["--gpus-per-node=2", "--gres=gpu:2"])
def test_fake_gpus_are_scheduled(slurm, tmp_path, gpu_arg):
    out = tmp_path / "gpu.out"
    job = slurm.sbatch(
        "-N1", gpu_arg, "--time=1", f"--output={out}",
        wrap='echo "GPUS=$SLURM_GPUS_ON_NODE CVD=$CUDA_VISIBLE_DEVICES"',
    )
    text = read_when_done(slurm, job, out)
    assert "GPUS=2" in text
    assert "CVD=0,1" in text


def test_too_many_gpus_is_rejected(slurm):
    proc = slurm.run(["sbatch", "--parsable", "-N1", "--gpus-per-node=5", "--time=1", "--wrap", "true"])
    assert proc.returncode != 0
    assert "not available" in proc.stderr


def test_account_flag_is_accepted(slurm):
    job = slurm.sbatch("-N1", "--account=ci", "-p", "cpu", "--time=1", "--output=/dev/null", wrap="true")
    assert slurm.wait_job(job, timeout=30) == "COMPLETED"


def test_ctld_restart_keeps_jobs(slurm, tmp_path):
    running = slurm.sbatch("-N1", "--time=2", "--output=/dev/null", wrap="sleep 60")
    held = slurm.sbatch("-N1", "--hold", "--time=1", "--output=/dev/null", wrap="true")
    try:
        slurm.wait_job(running, timeout=30, states=frozenset({"RUNNING"}))
        slurm.stop_ctld()
        try:
            proc = slurm.run(["squeue"], timeout=60)
            assert proc.returncode != 0, proc.stdout
        finally:
            slurm.start_ctld()
        assert slurm.job_state(running) == "RUNNING"
        info = slurm.job_info(held)
        assert info.get("JobState") == "PENDING"
        assert info.get("Reason") == "JobHeldUser"
        squeue = slurm.run(["squeue", "-h", "-o", "%i"], check=True).stdout.split()
        assert running in squeue and held in squeue
    finally:
        slurm.run(["scancel", running, held])
    assert slurm.wait_job(running, timeout=30) == "CANCELLED"


def test_killed_slurmd_comes_back(slurm):
    node = slurm.node_names[-1]
    slurm.kill_slurmd(node)
    try:
        with pytest.raises(SlurmTestbedError):
            slurm.kill_slurmd(node)  # it is gone: nothing to kill
    finally:
        slurm.start_slurmd(node)
    # back in service: no '*' (not responding), not down/drained; jobs of
    # other tests may keep it mixed/allocated
    deadline = time.monotonic() + 30
    while True:
        state = slurm.node_states().get(node, "")
        if state in ("idle", "mixed", "allocated", "completing"):
            break
        assert time.monotonic() < deadline, slurm.node_states()
        time.sleep(0.2)
