"""Profile + recipe → plan → checks → rendered run directory. Shared by `submit` and `submit --dry-run`."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

import yaml

from jobs.contract import RunLayout, stage_config_text

from ..backends import executor_for
from ..config.profile import ClusterProfile, cap_nodes, load_profile
from ..config.recipe import TOKEN_VARS, Recipe, load_recipe
from ..config.tracking import WANDB_KEY_VAR
from ..planning.plan import Plan
from ..planning.planner import make_plan
from ..rendering.stageconfig import build_stage_config
from .registry import Run, check_job_dir, create_run, new_run_id, runs_root


@dataclasses.dataclass
class Inputs:
    profile: ClusterProfile
    recipe: Recipe
    overrides: list[str]
    nodes: int | None = None  # --nodes, which capped the profile


def load_inputs(profile: str | None, recipe: str | None, overrides: list[str] | None,
                nodes: int | None = None) -> Inputs:
    """The profile (capped at `nodes` per stage: `--nodes`) and the recipe with its overrides."""
    loaded = load_profile(profile)
    if nodes is not None:
        cap_nodes(loaded, nodes)
    return Inputs(loaded, load_recipe(recipe, overrides), list(overrides or []), nodes)


def preflight(inputs: Inputs, plan: Plan) -> None:
    """What must hold before anything is created or queued: required variables set, mount sources and a
    squashfs image present (unless check_mounts: false), a token for a gated model, the key W&B online logs in
    with, and what the backend can verify (Slurm: partitions, account, qos, GPUs per node)."""
    profile = inputs.profile
    missing = [name for name in profile.required_env_vars if not os.environ.get(name)]
    if missing:
        raise profile.error("required_env_vars", f"required environment variable(s) not set in this shell: "
                            f"{', '.join(missing)}")
    check_job_dir(profile.job_dir, profile.source)
    if profile.check_mounts:
        for index, mount in enumerate(profile.mounts):
            source = mount.split(":")[0]
            if not os.path.exists(source):
                raise profile.error(f"mounts[{index}]", f"mount source {source} does not exist (set check_mounts: "
                                    f"false if only the compute nodes see it)")
        _check_image(profile)
    _check_hub_token(profile, inputs.recipe)
    _check_wandb_key(profile)
    executor_for(profile.executor).preflight(profile, plan.stages)


def _check_image(profile: ClusterProfile) -> None:
    """A squashfs image every stage starts from must be here: pyxis would fail each job on it instead."""
    image = profile.image
    if not image or not image.startswith("/"):
        return  # a registry reference: the compute nodes pull it
    problem = ("does not exist" if not os.path.exists(image) else "is not a file" if not os.path.isfile(image)
               else "is not readable by you" if not os.access(image, os.R_OK) else None)
    if problem:
        raise profile.error(f"containers.{profile.container}", f"squashfs image {image} {problem} on this node",
                            "fix the path, or set check_mounts: false if only the compute nodes see it")


def _check_hub_token(profile: ClusterProfile, recipe: Recipe) -> None:
    """A gated model (config/recipe.GATED_MODELS) downloads only with a token, in a stage that starts long
    after submit; the token reaches the job from this shell. HF_HUB_OFFLINE=1 reads HF_HOME's cache instead."""
    gated = recipe.gated_models()
    offline = profile.env_values().get("HF_HUB_OFFLINE") or os.environ.get("HF_HUB_OFFLINE", "")
    if not gated or any(os.environ.get(name) for name in TOKEN_VARS) or offline.lower() in ("1", "true", "yes", "on"):
        return
    key, hub_id = gated[0]
    listed = "in env_vars but not" if "HF_TOKEN" in profile.env_passthrough() else "neither in env_vars nor"
    raise profile.error("env_vars", f"{key} {hub_id} is gated on Hugging Face and HF_TOKEN is {listed} set in this "
                        f"shell: the job would have no token", "list HF_TOKEN in env_vars and export it, or set "
                        "HF_HUB_OFFLINE=1 if HF_HOME holds the model")


def _check_wandb_key(profile: ClusterProfile) -> None:
    """W&B online logs in with WANDB_API_KEY, which reaches the jobs from this shell (the profile lists it by name:
    config/tracking.py); unset here, every training stage would fail at its first step, long after submit."""
    wandb = profile.tracking.wandb
    if wandb is None or wandb.mode != "online" or os.environ.get(WANDB_KEY_VAR):
        return
    raise profile.error("env_vars", f"tracking.wandb.mode is online and {WANDB_KEY_VAR} is listed here but not set in "
                        f"this shell: the training stages could not log in to W&B",
                        f"export {WANDB_KEY_VAR} before submit (`wandb login` prints where to find it), or set "
                        f"tracking.wandb.mode: offline and `wandb sync` later")


def _plain(obj: Any) -> Any:
    data = dataclasses.asdict(obj)
    data.pop("source", None)
    return data


def render_run_files(run_id: str, layout: RunLayout, inputs: Inputs, plan: Plan) -> dict[str, str]:
    """Every file of the run directory, by path relative to it."""
    profile, recipe = inputs.profile, inputs.recipe
    executor = executor_for(profile.executor)

    def rel(path: str) -> str:
        return os.path.relpath(path, layout.run_dir)

    files = {
        rel(layout.profile): yaml.safe_dump(_plain(profile), sort_keys=False),
        rel(layout.recipe): yaml.safe_dump(_plain(recipe), sort_keys=False),
        rel(layout.plan): plan.text(),
        rel(layout.inputs): json.dumps({"profile": profile.source, "recipe": recipe.source,
                                        "overrides": inputs.overrides, "nodes": inputs.nodes}, indent=2) + "\n",
    }
    for stage in plan.stages:
        config = build_stage_config(run_id, layout, recipe, stage)
        files[rel(layout.stage_config(stage.name))] = stage_config_text(config)
        files[rel(layout.script(stage.name))] = executor.render_script(run_id, layout.run_dir, profile, stage,
                                                                       plan.stages)
    return files


def prepare_run(inputs: Inputs, plan: Plan | None = None, dry_run: bool = False) -> Run:
    """The rendered run directory. A dry run whose job_dir is not on this machine (a cluster path seen from
    a laptop) is written under MINITRON_HOME/dry-runs instead of creating job_dir."""
    plan = plan or make_plan(inputs.profile, inputs.recipe)
    run_id = new_run_id(inputs.recipe.name)
    layout = RunLayout(os.path.join(runs_root(inputs.profile.job_dir), run_id))
    files = render_run_files(run_id, layout, inputs, plan)
    return create_run(inputs.profile.job_dir, run_id, files, [s.name for s in plan.stages],
                      inputs.profile.executor, source=inputs.profile.source,
                      elsewhere=dry_run and not on_this_machine(inputs.profile.job_dir))


def on_this_machine(job_dir: str) -> bool:
    """Whether job_dir's file system is here: some directory above it, other than `/`, exists (a first run
    creates /lustre/fsw/me/runs where /lustre/fsw/me exists; /lustre itself missing means a laptop)."""
    parent = os.path.abspath(job_dir)
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    return parent != os.path.dirname(parent)
