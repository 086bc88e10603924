"""Local executor rendering: the same stage, as a plain bash script the local supervisor runs."""

from __future__ import annotations

import shlex

from . import __version__
from .planner import StagePlan
from .profile import ClusterProfile
from .render import _environment, container_mounts
from .stageconfig import RunPaths


def docker_image(enroot_ref: str) -> str:
    """enroot's REGISTRY#IMAGE:TAG back to Docker's REGISTRY/IMAGE:TAG."""
    return enroot_ref.replace("#", "/", 1)


def render_local_script(run_id: str, paths: RunPaths, profile: ClusterProfile, stage: StagePlan) -> str:
    python = shlex.quote(profile.python)
    launcher = (f"{python} -m torch.distributed.run --standalone --nproc-per-node={stage.gpus_per_node}"
                if stage.gpus_per_node else python)
    env_values = sorted(profile.env_values().items())
    passthrough = profile.env_passthrough()
    image = profile.image
    return _environment().get_template("local_stage.sh.j2").render(
        version=__version__, run_id=run_id, stage=stage, profile=profile, paths=paths,
        env_values=env_values, passthrough=passthrough, image=image,
        image_docker=docker_image(image) if image and not image.startswith("/") else image,
        mounts=container_mounts(profile),
        container_env=sorted(set(passthrough) | {n for n, _ in env_values} | {"MINITRON_RUN_DIR", "MINITRON_STAGE",
                                                                             "MASTER_ADDR", "MASTER_PORT"}),
        launcher=launcher, config_path=paths.stage_config(stage.name))
