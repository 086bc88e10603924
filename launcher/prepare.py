"""Profile + recipe → plan → rendered run directory. Shared by `submit` and `submit --dry-run`."""

from __future__ import annotations

import dataclasses
import json
import os
from typing import Any

from .planner import Plan, make_plan
from .profile import ClusterProfile, load_profile
from .recipe import Recipe, load_recipe
from .registry import Run, create_run, new_run_id, runs_root
from .render import render_slurm_script
from .stageconfig import RunPaths, build_stage_config


@dataclasses.dataclass
class Inputs:
    profile: ClusterProfile
    recipe: Recipe
    overrides: list[str]


def load_inputs(profile: str | None, recipe: str | None, overrides: list[str] | None) -> Inputs:
    return Inputs(load_profile(profile), load_recipe(recipe, overrides), list(overrides or []))


def _plain(obj: Any) -> Any:
    data = dataclasses.asdict(obj)
    data.pop("source", None)
    return data


def render_run_files(run_id: str, paths: RunPaths, inputs: Inputs, plan: Plan) -> dict[str, str]:
    import yaml

    from .render import render_local_script

    profile, recipe = inputs.profile, inputs.recipe
    files = {
        "profile.yaml": yaml.safe_dump(_plain(profile), sort_keys=False),
        "recipe.yaml": yaml.safe_dump(_plain(recipe), sort_keys=False),
        "plan.json": json.dumps(plan.to_json(), indent=2) + "\n",
        "inputs.json": json.dumps({"profile": profile.source, "recipe": recipe.source,
                                   "overrides": inputs.overrides}, indent=2) + "\n",
    }
    for stage in plan.stages:
        config = build_stage_config(run_id, paths, recipe, plan, stage)
        files[os.path.relpath(paths.stage_config(stage.name), paths.run_dir)] = json.dumps(config, indent=2) + "\n"
        script = (render_slurm_script(run_id, paths, profile, stage) if profile.executor == "slurm"
                  else render_local_script(run_id, paths, profile, stage))
        files[os.path.relpath(paths.script(stage.name), paths.run_dir)] = script
    return files


def prepare_run(inputs: Inputs, plan: Plan | None = None) -> Run:
    plan = plan or make_plan(inputs.profile, inputs.recipe)
    run_id = new_run_id(inputs.recipe.name)
    paths = RunPaths(os.path.join(runs_root(inputs.profile.job_dir), run_id))
    files = render_run_files(run_id, paths, inputs, plan)
    return create_run(inputs.profile.job_dir, run_id, files, [s.name for s in plan.stages],
                      inputs.profile.executor, source=inputs.profile.source)
