"""`minitron init` on saved Slurm output (tests/slurm_output/init-*): what it reads, the profile it writes
(which the project's loader loads and `plan` plans), what it asks, and what it refuses."""

from __future__ import annotations

import getpass
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.app.init import gpu_model
from launcher.backends.slurm_cluster import RecordedCluster, parse_scontrol, read_cluster
from launcher.config.profile import load_profile
from tests.conftest import REPO, run_cli

OUT = Path(REPO) / "tests" / "slurm_output"
TESTBED = OUT / "init-testbed"          # recorded from .ci/slurm-testbed (Slurm 22.05.8, slurmdbd)
H100 = OUT / "init-h100-cluster"        # hand-written in the same formats: 5 partitions, 2 TB DGX H100 nodes
FLAGS = ["--container", "nvcr.io/nvidia/nemo:26.02", "--job-dir", "/lustre/fsw/$USER/minitron-runs"]


def init(tmp_path, *args: str, source: Path = H100, name: str = "p.yaml"):
    return run_cli("init", "--from-file", str(source), "--output", str(tmp_path / name), *args, cwd=str(tmp_path))


def one_error_line(proc) -> str:
    assert proc.returncode == 2, (proc.stdout, proc.stderr)
    assert "Traceback" not in proc.stderr and proc.stderr.count("\n") == 1, proc.stderr
    assert proc.stderr.startswith("minitron: error: ")
    return proc.stderr


def copy_of(source: Path, tmp_path, edit=None) -> Path:
    """The saved output in a folder of the test's own, with `edit(name, text) -> text` applied."""
    target = tmp_path / f"out-{source.name}"
    shutil.copytree(source, target)
    for path in target.iterdir():
        if edit:
            path.write_text(edit(path.name, path.read_text()))
    return target


# -- reading --------------------------------------------------------------------------------------

def test_scontrol_records_multi_line_and_one_line():
    text = (H100 / "scontrol_show_node.txt").read_text()
    records = parse_scontrol(text)
    assert [r["NodeName"] for r in records] == ["dgx01", "dgx02", "dgx03", "dgx04", "a100-01", "a100-02",
                                                "cpu01", "cpu02"]
    assert records[3]["Reason"] == "nvidia-smi reports ECC errors on GPU 3 [root@2026-11-30T10:02:11]"
    assert records[0]["OS"].startswith("Linux 5.15.0-1042-nvidia #42-Ubuntu SMP")
    oneliner = "\n".join(" ".join(block.split()) for block in text.split("\n\n") if block.strip())
    assert parse_scontrol(oneliner) == records


def test_the_recorded_testbed():
    facts = read_cluster(RecordedCluster(str(TESTBED)))
    assert list(facts.partitions) == ["gpu", "cpu"] and facts.default_partition == "gpu"
    gpu = facts.partitions["gpu"]
    assert (gpu.nodes, gpu.gpus_per_node, gpu.gpu_types, gpu.cpus, gpu.memory_mb, gpu.time_limit) == \
        (4, 4, [], 8, 4000, None)
    assert facts.account == "ci"


def test_the_h100_cluster():
    facts = read_cluster(RecordedCluster(str(H100)))
    parts = facts.partitions
    assert list(parts) == ["batch", "batch_long", "interactive", "a100", "cpu"] and facts.default_partition == "batch"
    assert (parts["batch"].gpus_per_node, parts["batch"].gpu_types, parts["batch"].cpus,
            parts["batch"].memory_mb) == (8, ["h100"], 224, 2063425)
    assert [parts[p].time_limit for p in parts] == ["04:00:00", "2-00:00:00", "02:00:00", "1-00:00:00", "12:00:00"]
    assert (parts["a100"].gpus_per_node, parts["a100"].gpu_types) == (4, ["a100"])
    assert (parts["cpu"].gpus_per_node, parts["cpu"].memory_mb, parts["interactive"].nodes) == (0, 515000, 1)
    assert facts.account == "llm_research"


@pytest.mark.parametrize("name, known_only, model", [
    ("h100", True, ("H100-80GB", 80)), ("nvidia_h100_80gb_hbm3", True, ("H100-80GB", 80)),
    ("h200", True, ("H200", 139)),
    ("nvidia_a100-sxm4-40gb", True, ("A100-40GB", 40)), ("a100", True, None), ("a10", True, None),
    ("nvidia_a10-24gb", True, ("A10-24GB", 24)), ("1g.10gb", True, None), ("tesla", True, None),
    ("MI300X-192GB", False, ("MI300X-192GB", 192)), ("A100-80GB", False, ("A100-80GB", 80)), ("L4", False, None),
])
def test_gpu_models_from_gres_types_and_the_flag(name, known_only, model):
    assert gpu_model(name, known_only) == model


# -- the profile it writes ------------------------------------------------------------------------

def test_writes_a_commented_profile_that_loads_and_plans(tmp_path):
    proc = init(tmp_path, *FLAGS)
    assert proc.returncode == 0, proc.stderr
    assert "wrote" in proc.stdout and "1 × 8 H100-80GB, partition batch" in proc.stdout
    path = tmp_path / "p.yaml"
    profile = load_profile(str(path))
    assert (profile.executor, profile.nodes, profile.gpus_per_node, profile.gpu.model, profile.gpu.memory_gib) == \
        ("slurm", 1, 8, "H100-80GB", 80)
    assert (profile.partition, profile.cpu_partition, profile.account) == ("batch", "cpu", "llm_research")
    assert (profile.cpus_per_node, profile.mem_per_node) == (224, "2063425M")
    assert profile.timeouts == {"batch": "04:00:00", "cpu": "12:00:00"} and profile.default_time == "04:00:00"
    assert profile.image == "nvcr.io#nvidia/nemo:26.02"
    assert profile.job_dir == f"/lustre/fsw/{os.environ.get('USER') or getpass.getuser()}/minitron-runs"
    text = path.read_text()
    for line, note in (("mem_per_node: 2063425M", "RealMemory=2063425 (MB) of batch's nodes (scontrol show node)"),
                       ("gpus_per_node: 8", "GRES gpu:h100:8(S:0-1) of partition batch (sinfo)"),
                       ("partition: batch", "the default partition (scontrol show partition)"),
                       ("account: llm_research", "your default account (sacctmgr show user)"),
                       ("job_dir: /lustre/fsw/$USER/minitron-runs", "--job-dir")):
        assert any(l.startswith(line) and note in l.split("#", 1)[1] for l in text.splitlines()), (line, text)
    planned = run_cli("plan", "--profile", str(path), "--json")
    assert planned.returncode == 0, planned.stderr
    stages = json.loads(planned.stdout)["stages"]
    assert {s["partition"] for s in stages} == {"batch", "cpu"}
    # max_nodes is there to find, commented out: uncommented, it caps the stages
    commented = next(l for l in text.splitlines() if l.startswith("# max_nodes:"))
    assert "--nodes N" in commented
    path.write_text(text.replace(commented, "max_nodes: 1"))
    assert load_profile(str(path)).node_cap == 1


def test_json_tells_what_was_read_and_written(tmp_path):
    proc = init(tmp_path, *FLAGS, "--partition", "interactive", "--json")
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["output"] == str(tmp_path / "p.yaml")
    assert out["cluster"]["partitions"]["interactive"]["nodes"] == 1
    # the default time is capped at the partition's MaxTime, or the profile would not load
    assert out["profile"]["partition"] == "interactive" and out["profile"]["default_time"] == "02:00:00"
    assert load_profile(out["output"]).timeouts["interactive"] == "02:00:00"


def test_the_testbed_profile_plans_the_tiny_recipe(tmp_path):
    proc = init(tmp_path, "--gpu-model", "H100-80GB", "--container", "none", "--python", sys.executable,
                "--job-dir", str(tmp_path / "jobs"), source=TESTBED)
    assert proc.returncode == 0, proc.stderr
    text = (tmp_path / "p.yaml").read_text()
    assert "gpu: {model: H100-80GB, memory_gib: 80}   # --gpu-model" in text
    assert "# cpu_partition: not set; every partition has GPUs" in text and "container: none" in text
    assert "# timeouts: not set; gpu: no MaxTime" in text
    assert "mpi: none" in text and "MpiDefault=none of this cluster (scontrol show config)" in text
    profile = load_profile(str(tmp_path / "p.yaml"))
    assert (profile.partition, profile.gpus_per_node, profile.mem_per_node, profile.account, profile.python) == \
        ("gpu", 4, "4000M", "ci", sys.executable)
    planned = run_cli("plan", "--profile", str(tmp_path / "p.yaml"), "--recipe", "tiny")
    assert planned.returncode == 0, planned.stderr


def test_gpus_per_node_0_writes_a_profile_whose_stages_run_on_the_cpus(tmp_path):
    """The testbed's GRES is emulated: `--gpus-per-node 0` plans every model stage as one fp32 process on a CPU."""
    proc = init(tmp_path, "--gpus-per-node", "0", "--container", "none", "--python", "/opt/nemo/bin/python",
                "--job-dir", str(tmp_path / "jobs"), source=TESTBED)
    assert proc.returncode == 0, proc.stderr
    assert "1 node, CPUs only, partition gpu" in proc.stdout
    text = (tmp_path / "p.yaml").read_text()
    assert any(line.startswith("gpus_per_node: 0 ") and "--gpus-per-node 0: no GPUs" in line
               for line in text.splitlines()), text
    assert "# gpu: not set; no GPUs" in text and "# cpu_partition: not set; no GPUs (--gpus-per-node 0)" in text
    profile = load_profile(str(tmp_path / "p.yaml"))
    assert (profile.gpus_per_node, profile.gpu, profile.python, profile.cpus_per_node) == \
        (0, None, "/opt/nemo/bin/python", 8)
    planned = run_cli("plan", "--profile", str(tmp_path / "p.yaml"), "--recipe", "tiny", "--json")
    assert planned.returncode == 0, planned.stderr
    stages = json.loads(planned.stdout)["stages"]
    models = [s for s in stages if s["kind"] not in ("data",)]
    assert all(s["gpus_per_node"] == 0 and s["nodes"] == 1 and (s["tp"], s["pp"], s["dp"]) == (1, 1, 1)
               for s in stages)
    assert {(s["precision"], s["attention"]) for s in models} == {("32", "unfused")}
    assert all(s["cpus_per_task"] == 8 for s in models) and {s["partition"] for s in stages} == {"gpu"}
    err = one_error_line(init(tmp_path, "--gpus-per-node", "0", "--container", "nvcr.io/nvidia/nemo:26.02",
                              "--python", "python3", "--job-dir", "/x", source=TESTBED, name="q.yaml"))
    assert "--python: is for --container none" in err
    err = one_error_line(init(tmp_path, "--gpus-per-node", "0", "--container", "none", "--python", "venv/bin/python",
                              "--job-dir", "/x", source=TESTBED, name="q.yaml"))
    assert "--python: give a command name or an absolute path" in err


def test_without_accounting_the_account_is_left_out(tmp_path):
    source = copy_of(TESTBED, tmp_path)
    (source / "sacctmgr_show_user.txt").unlink()
    proc = init(tmp_path, "--gpu-model", "H100-80GB", "--container", "none", "--python", "python3",
                "--job-dir", "/scratch/runs", source=source)
    assert proc.returncode == 0, proc.stderr
    assert "# account: not set; sacctmgr show user did not answer" in (tmp_path / "p.yaml").read_text()
    assert load_profile(str(tmp_path / "p.yaml")).account is None


# -- what it asks, and what it refuses -------------------------------------------------------------

def test_missing_answers_without_a_terminal_name_every_flag(tmp_path):
    err = one_error_line(init(tmp_path, source=TESTBED))
    assert err.startswith("minitron: error: --gpu-model, --container, --job-dir: not given, and stdin is not a "
                          "terminal")
    assert "the GRES of partition gpu names no GPU type" in err
    err = one_error_line(init(tmp_path, "--partition", "a100", "--container", "none", "--job-dir", "/x"))
    assert err.startswith("minitron: error: --gpu-model, --python: ") and "GRES type a100" in err
    assert "the stages run on the nodes' own Python" in err
    assert os.listdir(tmp_path) == []


def test_several_gpu_partitions_and_a_cpu_default_ask_for_the_partition(tmp_path):
    source = copy_of(H100, tmp_path, lambda name, text: text.replace("Default=YES", "Default=NO").replace(
        "PartitionName=cpu\n   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL\n   AllocNodes=ALL Default=NO",
        "PartitionName=cpu\n   AllowGroups=ALL AllowAccounts=ALL AllowQos=ALL\n   AllocNodes=ALL Default=YES"))
    assert read_cluster(RecordedCluster(str(source))).default_partition == "cpu"
    err = one_error_line(init(tmp_path, *FLAGS, source=source))
    assert err.startswith("minitron: error: --partition: ") and "batch, batch_long, interactive, a100" in err
    proc = init(tmp_path, *FLAGS, "--partition", "batch_long", source=source)
    assert proc.returncode == 0, proc.stderr
    profile = load_profile(str(tmp_path / "p.yaml"))
    assert (profile.partition, profile.cpu_partition, profile.timeouts["batch_long"]) == ("batch_long", "cpu",
                                                                                       "2-00:00:00")


@pytest.mark.parametrize("args, says", [
    (["--partition", "cpu"], "--partition: partition cpu offers no GPUs"),
    (["--partition", "bach"], "did you mean 'batch'"),
    (["--cpu-partition", "cpus"], "--cpu-partition: no partition 'cpus'"),
    (["--gpu-model", "tesla"], "--gpu-model: cannot tell the memory of GPU model 'tesla'"),
    (["--gpu-model", "H100-800GB"], "--gpu-model: must be at most 300 GiB"),
    (["--container", "bad image!"], "--container: malformed image reference"),
    (["--job-dir", "runs"], "--job-dir: must be an absolute path"),
    (["--job-dir", "/a;b"], "--job-dir: path '/a;b' contains whitespace or shell metacharacters"),
    (["--nodes", "5"], "--nodes: partition batch has 4 node(s), not 5"),
])
def test_a_bad_flag_is_one_line_naming_it(tmp_path, args, says):
    err = one_error_line(init(tmp_path, *FLAGS, *args))
    assert says in err, err
    assert not (tmp_path / "p.yaml").exists()


def test_a_missing_saved_output_names_its_file(tmp_path):
    source = copy_of(H100, tmp_path)
    (source / "scontrol_show_node.txt").unlink()
    err = one_error_line(init(tmp_path, *FLAGS, source=source))
    assert "scontrol_show_node.txt: --from-file: cannot read it" in err and "scontrol show node" in err
    err = one_error_line(init(tmp_path, *FLAGS, source=tmp_path / "nowhere"))
    assert "--from-file: not a directory of saved Slurm output" in err


def test_an_existing_file_is_kept_without_force(tmp_path):
    path = tmp_path / "p.yaml"
    path.write_text("mine\n")
    err = one_error_line(init(tmp_path, *FLAGS))
    assert "p.yaml: --output: exists" in err and "--force" in err
    assert path.read_text() == "mine\n"
    target = tmp_path / "target.yaml"
    target.write_text("theirs\n")
    os.symlink(target, tmp_path / "link.yaml")
    one_error_line(init(tmp_path, *FLAGS, name="link.yaml"))
    proc = init(tmp_path, *FLAGS, "--force", name="link.yaml")
    assert proc.returncode == 0, proc.stderr
    assert target.read_text() == "theirs\n" and not os.path.islink(tmp_path / "link.yaml")
    assert init(tmp_path, *FLAGS, "--force").returncode == 0
    assert load_profile(str(path)).partition == "batch"


def test_on_a_terminal_it_asks_and_asks_again_after_a_wrong_answer(tmp_path):
    """stdin is a real pseudo-terminal: the GPU model (wrong first), then the container and job_dir defaults."""
    master, slave = os.openpty()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "launcher.app.cli", "init", "--from-file", str(H100),
                             "--partition", "a100", "--output", str(tmp_path / "p.yaml")],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(tmp_path))
    os.close(slave)
    try:
        os.write(master, b"a100\nA100-80GB\n\n\n")
        out, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 0, err
    prompts = err.decode()
    assert prompts.count("GPU model and memory") == 2 and "cannot tell the memory of GPU model 'a100'" in prompts
    assert "(--container) [nvcr.io#nvidia/nemo:26.02]" in prompts
    text = (tmp_path / "p.yaml").read_text()
    assert "gpu: {model: A100-80GB, memory_gib: 80}   # answered at the prompt" in text
    profile = load_profile(str(tmp_path / "p.yaml"))
    assert profile.image == "nvcr.io#nvidia/nemo:26.02" and profile.job_dir == os.path.expanduser("~/minitron-runs")


def test_end_of_input_at_a_prompt_names_the_flag(tmp_path):
    master, slave = os.openpty()
    env = dict(os.environ, PYTHONPATH=REPO + os.pathsep + os.environ.get("PYTHONPATH", ""))
    proc = subprocess.Popen([sys.executable, "-m", "launcher.app.cli", "init", "--from-file", str(H100),
                             "--output", str(tmp_path / "p.yaml"), "--container", "none"],
                            stdin=slave, stdout=subprocess.PIPE, stderr=subprocess.PIPE, env=env, cwd=str(tmp_path))
    os.close(slave)
    try:
        os.write(master, b"\x04")  # Ctrl-D: the terminal's end of input
        _, err = proc.communicate(timeout=60)
    finally:
        os.close(master)
    assert proc.returncode == 2
    assert err.decode().splitlines()[-1] == ("minitron: error: --python: no answer (end of input) (pass --python PATH "
                                             "(a Python with the jobs' stack, NeMo 2.7))")
    assert not (tmp_path / "p.yaml").exists()
