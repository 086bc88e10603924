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


@pytest.mark.parametrize("gpu", [
    {"model": "H100-80GB", "memory_gib": 80}, {"model": "NVIDIA H100 80GB HBM3", "memory_gib": 79.1},  # torch's GiB
    {"model": "H100", "memory_gib": 94}, {"model": "H200", "memory_gib": 139}, {"model": "GH200", "memory_gib": 96},
    {"model": "A100-SXM4-40GB", "memory_gib": 39.4}, {"model": "L40S", "memory_gib": 44.4},
    {"model": "A10G", "memory_gib": 22.5}, {"model": "RTX-4090", "memory_gib": 24, "achievable_tflops": 80},
])
def test_a_known_gpu_of_its_own_size_or_a_gpu_with_its_throughput_loads(tmp_path, gpu):
    assert load_profile(write_profile(tmp_path / "p.yaml", gpu=gpu)).gpu.memory_gib == gpu["memory_gib"]


@pytest.mark.parametrize("gpu, key, says", [
    ({"model": "L4", "memory_gib": 24}, "gpu.model", "known: GB200, B200, GH200, H200, H100, A100, L40, A10, V100"),
    ({"model": "A100-80GB", "memory_gib": 40}, "gpu.memory_gib",
     "'A100-80GB' has 80 GB (write memory_gib: 80, or model: A100-40GB if that is the card)"),
    ({"model": "H100", "memory_gib": 40}, "gpu.memory_gib", "H100 cards have 80 or 94 GB (write memory_gib: 80)"),
    ({"model": "H100-80GB", "memory_gib": 70}, "gpu.memory_gib", "70 GiB does not match"),  # below 0.9 × 80
])
def test_an_unknown_gpu_or_a_memory_the_model_does_not_have_is_refused(tmp_path, gpu, key, says):
    with pytest.raises(UserError) as info:
        load_profile(write_profile(tmp_path / "p.yaml", gpu=gpu))
    assert info.value.key == key and info.value.line and says in str(info.value), str(info.value)


@pytest.mark.parametrize("value, fix", [("500GiB", "write 500G"), ("1.5T", "write 1536G"), ("0.5 GB", "write 512M"),
                                        ("512000MB", "write 512000M"), ("lots", "for example 480G"),
                                        ("2000T", "at most 1024T")])
def test_memory_is_refused_in_units_slurm_does_not_take(tmp_path, value, fix):
    with pytest.raises(UserError) as info:
        load_profile(write_profile(tmp_path / "p.yaml", mem_per_node=value))
    assert info.value.key == "mem_per_node" and fix in str(info.value)


@pytest.mark.parametrize("value", ["0", "500", "480G", "480g", "512000M", "2T", "64000K"])
def test_memory_in_slurm_s_units_loads(tmp_path, value):
    assert load_profile(write_profile(tmp_path / "p.yaml", mem_per_node=value)).mem_per_node == value


def test_hf_home_under_job_dir_or_a_mount_loads_and_without_a_container_is_not_checked(tmp_path):
    job_dir = tmp_path / "jobdir"
    for extra in ({"env_vars": [f"HF_HOME={job_dir}/hf"]},
                  {"env_vars": ["HF_HOME=/cache/hf"], "mounts": ["/lustre/cache:/cache"]},
                  {"env_vars": ["HF_HOME=/cache/hf"], "container": "none"}):
        load_profile(write_profile(tmp_path / "p.yaml", **extra))
    with pytest.raises(UserError, match="under no path the container mounts"):
        load_profile(write_profile(tmp_path / "p.yaml", env_vars=["HF_HOME=/cache-2/hf"],
                                   mounts=["/lustre/cache:/cache"]))
