"""Finetune stage (teacher correction): NeMo 2 training of the imported teacher on the prepared data.

`llm.train` with the planned TP/PP/CP/SP, MBS/GBS, steps and cosine schedule; TensorBoard events and
a rotating `-last` checkpoint every `ckpt_every_n_steps` in outputs.log_dir; AutoResume continues from
that checkpoint after a requeue, else restores the weights of inputs.model. SIGUSR1 during training
saves a checkpoint at the next step boundary and exits 85 (NeMo's PreemptionCallback does the save).
The final checkpoint is linked at outputs.model.
"""

from __future__ import annotations

import sys

from jobs.contract import StageConfig, seq_length
from jobs.runtime.frame import run_stage
from jobs.stages import nemo_parts


def build(cfg: StageConfig) -> nemo_parts.TrainingPlan:
    nemo_parts.seed(cfg.train)
    model = nemo_parts.load_model(cfg, cfg.inputs["model"], seq_length=seq_length(cfg),
                                  **nemo_parts.recompute_overrides(cfg.train))
    trainer, preemption = nemo_parts.training_trainer(cfg)
    return nemo_parts.TrainingPlan(
        model=model,
        data=nemo_parts.data_module(cfg, model.tokenizer, cfg.batch["micro_batch_size"],
                                    cfg.batch["global_batch_size"], cfg.train["seed"]),
        trainer=trainer,
        optim=nemo_parts.optimizer(cfg),
        log=nemo_parts.logger(cfg),
        resume=nemo_parts.resume(cfg.inputs["model"]),
        preemption=preemption,
        tokenizer="model",
    )


def run(cfg: StageConfig) -> None:
    nemo_parts.run_training(build(cfg), cfg)


def main(argv=None) -> int:
    return run_stage("finetune", run, argv)


if __name__ == "__main__":
    sys.exit(main())
