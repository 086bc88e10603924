"""Distill stage: logits-KL knowledge distillation of a pruned student from the fine-tuned teacher.

`llm.distill` step by step: NeMo's `DistillationGPTModel` (student + frozen teacher, ModelOpt KD loss
from a distillation YAML written from the `distill` block: logit pair, `skip_lm_loss`,
`kd_loss_scale`) trained with `llm.train`. Done here rather than through `llm.distill` so both
configs get the backend overrides before they are built (see `nemo_parts.load_model`); the model is
the same object `llm.distill` builds. Parallelism, schedule, checkpoints, resume, SIGUSR1 and
outputs.model work as in the finetune stage; only the student is saved.
"""

from __future__ import annotations

import sys
from pathlib import Path

from jobs.contract import StageConfig, seq_length
from jobs.runtime.frame import global_rank, run_stage
from jobs.stages import nemo_parts


def write_distillation_config(cfg: StageConfig) -> Path:
    """The YAML `DistillationGPTModel` reads (NeMo's DistillationConfig fields)."""
    import yaml

    d = cfg.distill
    path = cfg.stage_dir / "distillation.yaml"
    text = yaml.safe_dump({"logit_layers": list(d["logit_layers"]), "intermediate_layer_pairs": [],
                           "skip_lm_loss": bool(d["skip_lm_loss"]), "kd_loss_scale": float(d["kd_loss_scale"])})
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{global_rank()}")
    tmp.write_text(text)
    tmp.replace(path)  # every rank writes the same bytes; the rename keeps readers from seeing half a file
    return path


def check_student_shape(cfg: StageConfig, config) -> None:
    """The planner's `student_shape` must be what the prune stage saved: catches a miswired input."""
    for key, planned in cfg.student_shape.items():
        if getattr(config, key) != planned:
            raise ValueError(f"student {cfg.inputs['student']} has {key}={getattr(config, key)}, plan says {planned}")


def build(cfg: StageConfig) -> nemo_parts.TrainingPlan:
    from nemo.collections.llm.modelopt import DistillationGPTModel

    nemo_parts.seed(cfg.train)
    seq = seq_length(cfg)
    student = nemo_parts.load_model(cfg, cfg.inputs["student"], seq_length=seq,
                                    **nemo_parts.recompute_overrides(cfg.train))
    teacher = nemo_parts.load_model(cfg, cfg.inputs["teacher"], seq_length=seq)
    check_student_shape(cfg, student.config)
    model = DistillationGPTModel(student.config, teacher.config, teacher_ckpt_path=cfg.inputs["teacher"],
                                 distillation_config_path=str(write_distillation_config(cfg)))
    model.__io__ = student.__io__  # checkpoints reload as the student's own class
    trainer, preemption = nemo_parts.training_trainer(cfg)
    return nemo_parts.TrainingPlan(
        model=model,
        data=nemo_parts.data_module(cfg, student.tokenizer, cfg.batch["micro_batch_size"],
                                    cfg.batch["global_batch_size"], cfg.train["seed"]),
        trainer=trainer,
        optim=nemo_parts.optimizer(cfg),
        log=nemo_parts.logger(cfg),
        resume=nemo_parts.resume(cfg.inputs["student"]),
        preemption=preemption,
        tokenizer=student.tokenizer,
    )


def run(cfg: StageConfig) -> None:
    nemo_parts.run_training(build(cfg), cfg)


def main(argv=None) -> int:
    return run_stage("distill", run, argv)


if __name__ == "__main__":
    sys.exit(main())
