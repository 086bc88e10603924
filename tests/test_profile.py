import os

import pytest

from launcher.core.errors import UserError
from launcher.config.profile import PROFILE_DIR, load_profile, normalize_image, parse_time_minutes
from tests.conftest import write_profile

BUNDLED = sorted(f[:-5] for f in os.listdir(PROFILE_DIR) if f.endswith(".yaml"))


def test_required_profiles_are_bundled():
    assert {"local", "h100-1x8", "h100-4x8", "a100-40g-2x8"} <= set(BUNDLED)


@pytest.mark.parametrize("name", BUNDLED)
def test_bundled_profiles_load(name):
    profile = load_profile(name)
    assert os.path.isabs(profile.job_dir)
    assert profile.executor in ("slurm", "local")


@pytest.mark.parametrize("ref, expected", [
    ("nvcr.io/nvidia/nemo:26.02", "nvcr.io#nvidia/nemo:26.02"),
    ("nvcr.io#nvidia/nemo:26.02", "nvcr.io#nvidia/nemo:26.02"),
    ("docker://nvcr.io/nvidia/nemo:25.11.01", "nvcr.io#nvidia/nemo:25.11.01"),
    ("ubuntu:22.04", "ubuntu:22.04"),
    ("localhost:5000/team/img:v1", "localhost:5000#team/img:v1"),
    ("/lustre/images/nemo.sqsh", "/lustre/images/nemo.sqsh"),
])
def test_image_references_are_normalised_to_enroot_form(ref, expected):
    assert normalize_image(ref) == expected


@pytest.mark.parametrize("ref", ["nemo.sqsh", "nvcr.io/NVIDIA/Nemo:26.02", "nvcr.io/nvidia/nemo:bad tag",
                                 "nvcr.io/nvidia/nemo:26.02;rm -rf /", ""])
def test_malformed_image_references_are_rejected(ref):
    with pytest.raises(ValueError):
        normalize_image(ref)


def test_time_formats():
    assert parse_time_minutes("04:00:00") == 240
    assert parse_time_minutes("1-00:00:00") == 1440
    assert parse_time_minutes("30") == 30
    with pytest.raises(ValueError):
        parse_time_minutes("four hours")


def test_errors_name_file_key_and_line(tmp_path):
    path = write_profile(tmp_path / "p.yaml", gpus_per_node="eight")
    with pytest.raises(UserError) as info:
        load_profile(path)
    err = info.value
    assert err.file == path and err.key == "gpus_per_node" and err.line is not None
    assert "expected an integer" in str(err)


def test_unknown_key_suggests_the_right_one(tmp_path):
    path = write_profile(tmp_path / "p.yaml", partion="batch")
    with pytest.raises(UserError) as info:
        load_profile(path)
    assert info.value.key == "partion" and "did you mean 'partition'" in str(info.value)


def test_secret_values_are_refused(tmp_path):
    path = write_profile(tmp_path / "p.yaml", env_vars=["HF_TOKEN=hf_abc"])
    with pytest.raises(UserError, match="looks like a secret"):
        load_profile(path)


def test_relative_job_dir_is_refused(tmp_path):
    path = write_profile(tmp_path / "p.yaml", job_dir="runs")
    with pytest.raises(UserError, match="absolute"):
        load_profile(path)


def test_job_dir_expands_variables(tmp_path, monkeypatch):
    monkeypatch.setenv("SCRATCH", str(tmp_path))
    path = write_profile(tmp_path / "p.yaml", job_dir="$SCRATCH/runs")
    assert load_profile(path).job_dir == f"{tmp_path}/runs"


@pytest.mark.parametrize("arg, fix", [
    ("--time=02:00:00", "set timeouts or default_time"),
    ("--job-name=mine", "remove it"),
    ("--gpus=16", "gpus_per_node"),
    ("--output=/tmp/x.out", "minitron logs"),
    ("--export=NONE", "env_vars"),
    ("--requeue", "signal_lead_s"),
    ("--part=debug", "partition"),            # sbatch takes an unambiguous prefix of an option
    ("--comm=team", "write --comment=TEXT in full"),
    ("--comment", "appended to the launcher's tag"),
])
def test_sbatch_args_the_launcher_sets_itself_are_refused(tmp_path, arg, fix):
    """sbatch keeps the last of a repeated option, so one in sbatch_args would replace the launcher's (issue 23)."""
    path = write_profile(tmp_path / "p.yaml", sbatch_args=["--mail-type=FAIL", arg])
    with pytest.raises(UserError) as info:
        load_profile(path)
    err = info.value
    assert err.file == path and err.key == "sbatch_args[1]" and fix in str(err), str(err)


@pytest.mark.parametrize("arg", ["--comment=team", "--mail-type=FAIL", "--exclude=n1", "--constraint=h100",
                                 "--time-min=30", "--gpu-bind=closest", "--nodelist=n1"])
def test_other_sbatch_args_are_kept(tmp_path, arg):
    assert load_profile(write_profile(tmp_path / "p.yaml", sbatch_args=[arg])).sbatch_args == [arg]
