"""Rendered scripts against the reviewed goldens (tests/golden/), and `bash -n` on each.

This test only compares. After an intended change, regenerate with `python -m tools.goldens` and read the
diff (`git diff tests/golden`) before committing it.
"""

import os
import subprocess

import pytest

from jobs.contract import Marker, RunLayout
from launcher.config.profile import LAUNCHER_SBATCH, load_profile
from launcher.config.recipe import load_recipe
from launcher.planning.plan import StagePlan
from launcher.planning.planner import make_plan
from launcher.rendering.scripts import job_names, render_slurm_script
from tests.conftest import write_profile
from tools.goldens import CASES, ENVIRONMENT, GOLDEN, RUN_ID, render_case


@pytest.fixture(autouse=True)
def fixed_environment(monkeypatch):
    for name, value in ENVIRONMENT.items():
        monkeypatch.setenv(name, value)


def render_all(profile_name, recipe_name):
    return render_case(profile_name, recipe_name)


@pytest.mark.parametrize("profile_name, recipe_name", CASES)
def test_rendered_scripts_match_goldens(profile_name, recipe_name):
    scripts = render_all(profile_name, recipe_name)
    folder = os.path.join(GOLDEN, profile_name)
    assert sorted(os.listdir(folder)) == sorted(f"{n}.sh" for n in scripts)
    for name, text in scripts.items():
        with open(os.path.join(folder, f"{name}.sh")) as handle:
            assert text == handle.read(), (f"{profile_name}/{name}.sh differs from its golden: if intended, run "
                                           f"`python -m tools.goldens` and review the diff")


@pytest.mark.parametrize("profile_name, recipe_name", CASES)
def test_rendered_scripts_are_valid_bash(profile_name, recipe_name):
    for name, text in render_all(profile_name, recipe_name).items():
        proc = subprocess.run(["bash", "-n"], input=text, capture_output=True, text=True)
        assert proc.returncode == 0, f"{profile_name}/{name}: {proc.stderr}"


def test_pyxis_flags_and_gpu_request_styles():
    scripts = render_all("h100-1x8", None)
    ft = scripts["finetune"]
    assert "--container-image='nvcr.io#nvidia/nemo:26.02'" in ft
    assert "--no-container-mount-home" in ft and "--mpi=pmix" in ft and "#SBATCH --gpus-per-node=8" in ft
    assert "--container-env=" in ft and "HF_TOKEN" in ft
    assert "#SBATCH --signal=USR1@300" in ft and "#SBATCH --requeue" in ft
    data = scripts["data"]
    assert "#SBATCH --partition=cpu" in data and "gpus-per-node" not in data and "#SBATCH --no-requeue" in data
    a100 = render_all("a100-40g-2x8", None)["finetune"]
    assert "#SBATCH --gres=gpu:8" in a100 and "--mpi=pmi2" in a100 and "#SBATCH --nodes=2" in a100


def test_bare_metal_profile_has_no_container_flags(tmp_path):
    scripts = render_all("local", "tiny")
    assert all("--container" not in s for s in scripts.values())
    assert "torch.distributed.run --standalone --nproc-per-node=1" in scripts["finetune"]


@pytest.mark.parametrize("srun_exit, marker, requeued", [(85, False, True), (143, True, True), (143, False, False),
                                                         (0, False, False)])
def test_continuation_decision_of_the_batch_script(tmp_path, srun_exit, marker, requeued):
    """The script requeues on exit 85, or on the job's continue marker whatever srun reports (a rank
    terminated by kill-on-bad-exit after another exited 85 makes srun return 143); nothing else."""
    profile = load_profile("h100-1x8")
    stage = make_plan(profile, load_recipe()).stage("finetune")
    paths = RunLayout(str(tmp_path / "run"))
    os.makedirs(paths.markers)
    script = tmp_path / "finetune.sh"
    script.write_text(render_slurm_script(RUN_ID, paths.run_dir, profile, stage))
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    calls = tmp_path / "calls"
    touch = f"printf '{{}}' > {paths.marker('finetune', Marker.CONTINUE)}; " if marker else ""
    (bin_dir / "srun").write_text(f"#!/bin/bash\n{touch}exit {srun_exit}\n")
    (bin_dir / "scontrol").write_text(f"#!/bin/bash\necho \"$*\" >> {calls}\n[ \"$1\" = show ] && echo n1\nexit 0\n")
    for tool in ("srun", "scontrol"):
        os.chmod(bin_dir / tool, 0o755)
    env = {"PATH": f"{bin_dir}:/usr/bin:/bin", "SLURM_JOB_ID": "42", "SLURM_JOB_NODELIST": "n1"}
    proc = subprocess.run(["bash", str(script)], env=env, capture_output=True, text=True)
    requeue_calls = [line for line in calls.read_text().splitlines() if line.startswith("requeue")]
    assert (requeue_calls == ["requeue 42"]) == requeued, proc.stdout + proc.stderr
    assert proc.returncode == (0 if requeued else srun_exit)
    assert open(paths.marker("finetune", Marker.FINISHED)).read().strip() == str(srun_exit)


def test_job_names_differ_in_what_plain_squeue_shows():
    """Plain `squeue` cuts names at 8 characters: every stage of a run must still be told apart there,
    and the run must be visible in the name (and in --comment)."""
    def stage(kind, variant=None):
        return StagePlan(f"{kind}_{variant}" if variant else kind, kind, [], "m", 1, 1, pruning=variant)

    stages = [stage("data"), stage("import"), stage("finetune"), stage("prune", "depth"), stage("prune", "width"),
              stage("distill", "depth"), stage("distill", "width"), stage("report"), stage("export")]
    names = job_names(RUN_ID, stages)
    assert len({name[:8] for name in names.values()}) == len(stages), names
    assert names["prune_depth"][:8] == "pr-depth" and names["distill_width"][:8] == "kd-width"
    assert all(name.endswith(RUN_ID) for name in names.values())
    alike = job_names(RUN_ID, [stage("prune", "depth_a"), stage("prune", "depth_b"), stage("distill", "depth_a"),
                               stage("distill", "depth_b")])
    assert len({name[:8] for name in alike.values()}) == 4, alike
    script = render_all("h100-1x8", None)["prune_depth"]
    assert f"#SBATCH --job-name=pr-depth.{RUN_ID}" in script
    assert f"#SBATCH --comment=minitron:{RUN_ID}:prune_depth" in script


def test_only_multi_gpu_stages_take_whole_nodes():
    scripts = render_all("h100-1x8", None)
    assert "#SBATCH --exclusive" in scripts["finetune"]
    for single in ("data", "import", "report"):
        if "--gpus-per-node=8" not in scripts[single]:
            assert "#SBATCH --exclusive" not in scripts[single], single


def test_every_stage_runs_through_the_task_runner():
    for name, script in render_all("h100-1x8", None).items():
        assert " -m jobs.runtime.task jobs.stages." in script, name
    assert " -m jobs.runtime.task jobs.stages.finetune --config" in render_all("local", "tiny")["finetune"]


def _sbatch_options(script: str) -> list[str]:
    return [line.split()[1][2:].partition("=")[0] for line in script.splitlines() if line.startswith("#SBATCH ")]


def test_every_sbatch_option_is_written_once_and_listed_as_the_launchers():
    """sbatch keeps the last of a repeated option: the h100-4x8 profile's --comment once replaced the
    launcher's minitron:RUN:STAGE tag (issue 23). The options the template writes (and sbatch's command line)
    are those a profile may not set (LAUNCHER_SBATCH), so the list cannot fall behind the template."""
    written = set()
    for profile_name, recipe_name in CASES:
        if load_profile(profile_name).executor != "slurm":
            continue
        for name, script in render_all(profile_name, recipe_name).items():
            options = _sbatch_options(script)
            assert len(options) == len(set(options)), (profile_name, name, options)
            written |= set(options)
    assert {"gres", "gpus-per-node", "exclusive", "mem", "account", "qos", "requeue", "signal"} <= written
    assert written <= set(LAUNCHER_SBATCH) | {"comment"}
    assert {"parsable", "kill-on-invalid-dep", "dependency"} <= set(LAUNCHER_SBATCH)  # backends/slurm.py's argv
    finetune = render_all("h100-4x8", None)["finetune"]
    assert f"#SBATCH --comment=minitron:{RUN_ID}:finetune,llm-pruning\n" in finetune


def test_profile_comments_join_the_launchers_tag_and_other_extras_follow(tmp_path):
    profile = load_profile(write_profile(tmp_path / "p.yaml", sbatch_args=["--comment=team", "--mail-type=FAIL",
                                                                           "--comment=cost-42"]))
    stage = make_plan(profile, load_recipe()).stage("finetune")
    script = render_slurm_script(RUN_ID, str(tmp_path / "run"), profile, stage)
    comments = [line for line in script.splitlines() if line.startswith("#SBATCH --comment")]
    assert comments == [f"#SBATCH --comment=minitron:{RUN_ID}:finetune,team,cost-42"]
    assert comments[0].split("=", 1)[1].split(",")[0].split(":") == ["minitron", RUN_ID, "finetune"]
    assert _sbatch_options(script)[-1] == "mail-type"
