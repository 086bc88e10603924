"""Stage configs as the product writes them: a run directory the launcher renders (`prepare_run`) from a
bundled recipe on a one-GPU local profile. The job tests run the jobs on these, never on a hand-written twin.

`CPU_OVERRIDES` make the tiny recipe small enough to train every stage on the CPU in seconds: fp32
(megatron's gradient clipping asserts CUDA tensors, so no clipping either), a few steps, validation and
a checkpoint every couple of steps, and the width student only (megatron's layer drop all-gathers a 0-d
tensor, which gloo refuses; depth pruning runs on the GPU device).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Sequence

import pytest
import yaml

from launcher.config.profile import load_profile
from launcher.config.recipe import load_recipe
from launcher.runs.prepare import Inputs, prepare_run
from launcher.runs.registry import Run

CPU_OVERRIDES = (
    'precision="32"', "students=[width]", "stages.export.enabled=true", "stages.prune.micro_batch_size=2",
    "stages.finetune.steps=6", "stages.finetune.micro_batch_size=2", "stages.finetune.global_batch_size=4",
    "stages.finetune.val_check_interval=2", "stages.finetune.ckpt_every_n_steps=2", "stages.finetune.clip_grad=0",
    "stages.distill.steps=3", "stages.distill.micro_batch_size=2", "stages.distill.global_batch_size=4",
    "stages.distill.val_check_interval=1", "stages.distill.ckpt_every_n_steps=1", "stages.distill.clip_grad=0",
)


def local_profile(folder: Path, **overrides) -> str:
    """A one-GPU local profile without a container or Transformer Engine (attention: unfused), as YAML."""
    profile = {"executor": "local", "nodes": 1, "gpus_per_node": 1, "gpu": {"model": "H100-80GB", "memory_gib": 80},
               "job_dir": str(folder / "jobs"), "container": "none", "attention": "unfused"}
    profile.update(overrides)
    path = folder / "profile.yaml"
    path.write_text(yaml.safe_dump(profile))
    return str(path)


def render_run(folder: Path, recipe: str = "tiny", overrides: Sequence[str] = CPU_OVERRIDES, **profile) -> Run:
    """A rendered, never submitted run of `recipe` under `folder` (its own MINITRON_HOME too)."""
    folder.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:
        patch.setenv("MINITRON_HOME", str(folder / "home"))
        return prepare_run(Inputs(load_profile(local_profile(folder, **profile)), load_recipe(recipe, list(overrides)),
                                  list(overrides)))


def stage_configs(run: Run) -> dict[str, dict]:
    """Every stage config of the run as JSON, by stage name, in plan order."""
    return {name: json.loads(Path(run.layout.stage_config(name)).read_text()) for name in run.plan.names()}
