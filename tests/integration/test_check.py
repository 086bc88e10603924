"""`minitron check` against the real testbed: each check can pass and can fail."""

import json

from helpers import Cli, write_test_profile


def test_check_passes_on_a_matching_profile(slurm, tmp_path):
    cli = Cli(slurm, tmp_path / "home")
    proc = cli("check", "--profile", write_test_profile(tmp_path / "p.yaml", tmp_path / "jobs"))
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert "slurm reachable" in proc.stdout and "partition gpu" in proc.stdout


def test_check_reports_wrong_partition_missing_pyxis_and_mounts(slurm, tmp_path):
    cli = Cli(slurm, tmp_path / "home")
    profile = write_test_profile(tmp_path / "p.yaml", tmp_path / "jobs", partition="nosuch",
                                 containers={"nemo": "nvcr.io/nvidia/nemo:26.02"}, container="nemo",
                                 mounts=["/definitely/missing:/data"], check_mounts=False)
    proc = cli("check", "--profile", profile)
    assert proc.returncode == 1
    out = proc.stdout
    assert "partition nosuch" in out and "not among" in out
    assert "pyxis" in out and "--container-image" in out
    assert "/definitely/missing" in out and "missing here" in out


def test_check_reports_memory_per_node_no_node_has(slurm, tmp_path):
    """The testbed's nodes have 4000 MB (sinfo %m)."""
    cli = Cli(slurm, tmp_path / "home")
    fits = cli("check", "--profile", write_test_profile(tmp_path / "ok.yaml", tmp_path / "jobs"), "--json")
    too_big = cli("check", "--profile", write_test_profile(tmp_path / "p.yaml", tmp_path / "jobs", mem_per_node="64G"),
                  "--json")
    assert fits.returncode == 0 and too_big.returncode == 1, too_big.stdout + too_big.stderr

    def row(proc):
        return next(c for c in json.loads(proc.stdout)["checks"] if c["name"] == "CPUs and memory per node")
    assert row(fits)["result"] == "ok" and row(fits)["detail"].startswith("4 of 4 nodes have")
    assert row(too_big) == {"name": "CPUs and memory per node", "result": "FAIL", "detail": "0 of 4 nodes have "
                            "cpus_per_node=0 and mem_per_node=64G (largest: 8 CPUs, 4000M)"}
