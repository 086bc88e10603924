"""`minitron check` against the real testbed: each check can pass and can fail."""

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
