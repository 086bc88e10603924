"""Render one script per stage from the template files in launcher/rendering/templates/: sbatch for
Slurm, plain bash for the local executor's supervisor. The backends call these (Executor.render_script).
Both templates write the markers through one partial (_markers.sh.j2)."""

from __future__ import annotations

import os
import re
import shlex
from typing import Any, Iterable, Sequence

from jobs.contract import CONTINUE_SIGNAL, PER_ATTEMPT_MARKERS, STARTED_FIELDS, Marker, RunLayout, StageExit

from .. import __version__
from ..config.profile import ClusterProfile
from ..config.values import memory_megabytes
from ..core import bundled
from ..planning.plan import StagePlan

TEMPLATE_DIR = bundled.template_dir()
SQUEUE_NAME_CHARS = 8  # plain `squeue` shows this much of a job name


def _comment(text: str) -> str:
    return re.sub(r"[\r\n]+", " ", str(text))


def _environment() -> Any:
    import jinja2

    env = jinja2.Environment(loader=jinja2.FileSystemLoader(TEMPLATE_DIR), undefined=jinja2.StrictUndefined,
                             autoescape=False, keep_trailing_newline=True, trim_blocks=False)
    env.filters["q"] = lambda value: shlex.quote(str(value))
    env.filters["comment"] = _comment
    return env


def _tag(stage: StagePlan) -> str:
    """A per-variant stage's kind tag and variant (`kd-width`), else its name."""
    tag = stage.stage_kind.tag
    return f"{tag}{stage.pruning}" if tag and stage.pruning else stage.name


def job_names(run_id: str, stages: Iterable[StagePlan]) -> dict[str, str]:
    """Slurm job names whose first 8 characters differ between the stages of a run (plain `squeue`
    cuts names there): `finetune.<run>`, `pr-depth.<run>`, `kd-width.<run>`; where two stages would
    still look alike, the stage's position in the graph makes them differ."""
    stages = list(stages)
    names = {stage.name: f"{_tag(stage)}.{run_id}" for stage in stages}
    prefixes = [name[:SQUEUE_NAME_CHARS] for name in names.values()]
    for index, stage in enumerate(stages):
        if prefixes.count(names[stage.name][:SQUEUE_NAME_CHARS]) > 1:
            names[stage.name] = f"{index:02d}{_tag(stage)[:SQUEUE_NAME_CHARS - 2]}.{run_id}"
    return names


def container_mounts(profile: ClusterProfile) -> list[str]:
    """The profile's mounts plus job_dir at the same path, so every path in a stage config is valid inside."""
    return [f"{profile.job_dir}:{profile.job_dir}"] + list(profile.mounts)


def _common_context(run_id: str, layout: RunLayout, profile: ClusterProfile, stage: StagePlan) -> dict[str, Any]:
    """What both templates render: the stage, its paths, the environment to set and to pass through."""
    env_values = sorted(profile.env_values().items())
    passthrough = profile.env_passthrough()
    container_env = sorted(set(passthrough) | {name for name, _ in env_values}
                           | {"MINITRON_RUN_DIR", "MINITRON_STAGE", "MASTER_ADDR", "MASTER_PORT"})
    markers = {marker.name.lower(): os.path.basename(layout.marker(stage.name, marker)) for marker in Marker}
    return dict(version=__version__, run_id=run_id, stage=stage, profile=profile, layout=layout,
                env_values=env_values, passthrough=passthrough, image=profile.image,
                mounts=container_mounts(profile), container_env=container_env,
                config_path=layout.stage_config(stage.name), markers=markers,
                per_attempt=[os.path.basename(layout.marker(stage.name, k)) for k in PER_ATTEMPT_MARKERS],
                started_fields=STARTED_FIELDS, continue_code=int(StageExit.CONTINUE),
                continue_signal=CONTINUE_SIGNAL)


def node_share(profile: ClusterProfile, stage: StagePlan) -> tuple[bool, int | None, str | None]:
    """(exclusive, cpus per task, --mem) for a stage. Only multi-GPU stages take whole nodes (with
    `exclusive`) and all of their memory; a 1-GPU stage asks for its GPUs' share of the node's CPUs and
    memory, so that several can share a node; a CPU stage asks for what its plan says."""
    tasks = stage.gpus_per_node or 1
    if stage.gpus_per_node == 0:
        return False, stage.cpus_per_task, None
    whole_node = stage.nodes * stage.gpus_per_node > 1 or stage.gpus_per_node >= profile.gpus_per_node
    share = 1.0 if whole_node else stage.gpus_per_node / profile.gpus_per_node
    cpus = max(1, int(profile.cpus_per_node * share) // tasks) if profile.cpus_per_node else None
    memory: str | None = profile.mem_per_node
    if not whole_node:
        mib = memory_megabytes(profile.mem_per_node)  # the profile checked its form
        memory = f"{max(1, int(mib * share))}M" if mib else None  # 0 means "all of it": not for a share
    return whole_node and profile.exclusive and stage.nodes * stage.gpus_per_node > 1, cpus, memory


def render_slurm_script(run_id: str, run_dir: str, profile: ClusterProfile, stage: StagePlan,
                        stages: Sequence[StagePlan] = ()) -> str:
    """The stage's sbatch script; `stages` (the run's) make its job name differ from theirs in squeue. Its
    --comment is the launcher's tag `minitron:RUN:STAGE`, then the profile's comments after commas."""
    layout = RunLayout(run_dir)
    exclusive, cpus, memory = node_share(profile, stage)
    names = job_names(run_id, stages or [stage])
    comments, sbatch_args = profile.sbatch_extras()
    return _environment().get_template("slurm_stage.sh.j2").render(
        **_common_context(run_id, layout, profile, stage), job_name=names[stage.name],
        comment=",".join([f"minitron:{run_id}:{stage.name}", *comments]), sbatch_args=sbatch_args,
        log_pattern=layout.slurm_log_pattern(stage.name), exclusive=exclusive, memory=memory,
        tasks_per_node=stage.gpus_per_node or 1, cpus_per_task=cpus)


def docker_image(enroot_ref: str) -> str:
    """enroot's REGISTRY#IMAGE:TAG back to Docker's REGISTRY/IMAGE:TAG."""
    return enroot_ref.replace("#", "/", 1)


def render_local_script(run_id: str, run_dir: str, profile: ClusterProfile, stage: StagePlan) -> str:
    """The stage's script for the local executor's supervisor."""
    layout = RunLayout(run_dir)
    python = shlex.quote(profile.python)
    launcher = (f"{python} -m torch.distributed.run --standalone --nproc-per-node={stage.gpus_per_node}"
                if stage.gpus_per_node else python)
    image = profile.image
    return _environment().get_template("local_stage.sh.j2").render(
        **_common_context(run_id, layout, profile, stage), launcher=launcher,
        image_docker=docker_image(image) if image and not image.startswith("/") else image)
