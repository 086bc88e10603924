"""Prune stage: depth (`prune.drop_layers`, 1-indexed) or width (`prune.target_*`) pruning of the
fine-tuned teacher with NeMo's `PruningConfig` / `prune_language_model` / `save_pruned_model`.

This is `llm.prune` step by step, because `llm.prune` always builds ModelOpt's TE-based layer spec:
with fused attention (the plan's `engine.attention`) we set that same spec (NeMo's
`_set_gpt_mamba_modelopt_spec`), with unfused the model keeps megatron-core's local spec and torch's
RMSNorm is registered with ModelOpt. The
restore (`_setup_trainer_and_restore_model`), the calibration forward loop over training data
(`num_train_samples`, GBS = MBS as `llm.prune` requires) and the save are NeMo's own. Both private
functions are fetched through `nemo_parts.private` before anything is built, so a NeMo release without
them fails at once with the version the jobs were tested with.
"""

from __future__ import annotations

import contextlib
import sys
from dataclasses import dataclass
from typing import Any

from jobs.contract import PRUNE_TARGETS, StageConfig, seq_length
from jobs.runtime.engine import fused
from jobs.runtime.frame import run_stage
from jobs.stages import nemo_parts

CALIBRATION_SEED = 1234


@dataclass
class Plan:
    model: Any
    trainer: Any
    data: Any
    pruning_config: Any


def pruning_config(prune: dict):
    from nemo.collections.llm.modelopt import PruningConfig

    if prune.get("drop_layers"):
        return PruningConfig(drop_layers=list(prune["drop_layers"]))
    return PruningConfig(**{k: prune[k] for k in PRUNE_TARGETS if prune.get(k) is not None})


def build(cfg: StageConfig) -> Plan:
    precision = nemo_parts.stage_precision(cfg)
    model = nemo_parts.load_model(cfg, cfg.inputs["model"], seq_length=seq_length(cfg), sequence_parallel=False)
    if fused(cfg):
        nemo_parts.private("nemo.collections.llm.modelopt.model_utils", "_set_gpt_mamba_modelopt_spec")(model.config)
    else:
        nemo_parts.register_torch_rmsnorm()
    del model.optim  # inference only, as NeMo's loader does: no optimizer or DDP setup
    mbs = cfg.batch["micro_batch_size"]
    steps = max(1, cfg.prune["num_train_samples"] // mbs)
    strategy = nemo_parts.strategy(
        cfg, precision, sequence_parallel=False, ckpt_load_optimizer=False, ckpt_parallel_save_optim=False,
        setup_optimizers=False, ddp="pytorch", replace_progress_bar=False,
    )
    trainer = nemo_parts.trainer(cfg, strategy, precision, max_steps=steps, limit_val_batches=steps,
                                 val_check_interval=steps, logger=False)
    return Plan(model=model, trainer=trainer,
                data=nemo_parts.data_module(cfg, model.tokenizer, mbs, mbs, CALIBRATION_SEED),
                pruning_config=pruning_config(cfg.prune))


def check_private_functions(te: bool) -> dict:
    """NeMo's private functions this stage calls, fetched before any model is built: a NeMo release without
    them fails here with the version the jobs were tested with (nemo_parts.private)."""
    found = {"restore": nemo_parts.private("nemo.collections.llm.inference.base", "_setup_trainer_and_restore_model")}
    if te:
        found["modelopt_spec"] = nemo_parts.private("nemo.collections.llm.modelopt.model_utils",
                                                    "_set_gpt_mamba_modelopt_spec")
    else:
        found["dynamic_norm"] = nemo_parts.private("modelopt.torch.nas.modules.norm", "_DynamicLayerNorm")
    return found


def run(cfg: StageConfig) -> None:
    from nemo.collections.llm.modelopt import prune_language_model, save_pruned_model

    restore = check_private_functions(fused(cfg))["restore"]
    plan = build(cfg)
    restore(cfg.inputs["model"], plan.trainer, plan.model)
    plan.trainer.strategy.restore_config = None  # weights are in; calibration must not reload them
    cfg.stage_dir.mkdir(parents=True, exist_ok=True)
    # NeMo's calibration loop (llm.validate without a logger) writes ./nemo_experiments: keep it in the stage dir.
    with contextlib.chdir(cfg.stage_dir):
        prune_language_model(plan.model, plan.pruning_config, plan.data, plan.trainer)
    save_pruned_model(plan.trainer, cfg.outputs["model"])
    nemo_parts.teardown(plan.trainer)


def main(argv=None) -> int:
    return run_stage("prune", run, argv)


if __name__ == "__main__":
    sys.exit(main())
