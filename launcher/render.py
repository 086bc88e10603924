"""Render one script per stage from the template files in launcher/templates/: sbatch for Slurm,
plain bash for the local executor's supervisor."""

from __future__ import annotations

import os
import re
import shlex
from typing import Any

from . import __version__
from .planner import StagePlan
from .profile import ClusterProfile
from .stageconfig import RunPaths

TEMPLATE_DIR = os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")
CONTINUE_EXIT_CODE = 85  # a training job saved a checkpoint before its time limit


def _comment(text: str) -> str:
    return re.sub(r"[\r\n]+", " ", str(text))


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True, trim_blocks=False)
    env.filters["q"] = lambda value: shlex.quote(str(value))
    env.filters["comment"] = _comment
    return env


def job_name(run_id: str, stage: str) -> str:
    return f"mt-{stage}-{run_id}"


def container_mounts(profile: ClusterProfile) -> list[str]:
    """The profile's mounts plus job_dir at the same path, so every path in a stage config is valid inside."""
    return [f"{profile.job_dir}:{profile.job_dir}"] + list(profile.mounts)


def _common_context(run_id: str, paths: RunPaths, profile: ClusterProfile, stage: StagePlan) -> dict[str, Any]:
    """What both templates render: the stage, its paths, the environment to set and to pass through."""
    env_values = sorted(profile.env_values().items())
    passthrough = profile.env_passthrough()
    container_env = sorted(set(passthrough) | {name for name, _ in env_values}
                           | {"MINITRON_RUN_DIR", "MINITRON_STAGE", "MASTER_ADDR", "MASTER_PORT"})
    return dict(version=__version__, run_id=run_id, stage=stage, profile=profile, paths=paths,
                env_values=env_values, passthrough=passthrough, image=profile.image,
                mounts=container_mounts(profile), container_env=container_env,
                config_path=paths.stage_config(stage.name))


def render_slurm_script(run_id: str, paths: RunPaths, profile: ClusterProfile, stage: StagePlan) -> str:
    tasks = stage.gpus_per_node or 1
    cpus = None
    if stage.gpus_per_node == 0:
        cpus = stage.cpus_per_task
    elif profile.cpus_per_node:
        cpus = max(1, profile.cpus_per_node // tasks)
    return _environment().get_template("slurm_stage.sh.j2").render(
        **_common_context(run_id, paths, profile, stage), job_name=job_name(run_id, stage.name),
        tasks_per_node=tasks, cpus_per_task=cpus, continue_code=CONTINUE_EXIT_CODE)


def docker_image(enroot_ref: str) -> str:
    """enroot's REGISTRY#IMAGE:TAG back to Docker's REGISTRY/IMAGE:TAG."""
    return enroot_ref.replace("#", "/", 1)


def render_local_script(run_id: str, paths: RunPaths, profile: ClusterProfile, stage: StagePlan) -> str:
    python = shlex.quote(profile.python)
    launcher = (f"{python} -m torch.distributed.run --standalone --nproc-per-node={stage.gpus_per_node}"
                if stage.gpus_per_node else python)
    image = profile.image
    return _environment().get_template("local_stage.sh.j2").render(
        **_common_context(run_id, paths, profile, stage), launcher=launcher,
        image_docker=docker_image(image) if image and not image.startswith("/") else image)
