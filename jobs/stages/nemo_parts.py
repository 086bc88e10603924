"""NeMo 2 building blocks shared by the stage modules, built from a stage config.

Every stage builds its objects here so the planned parallelism, batch sizes, schedule, engine and
paths go into NeMo the same way everywhere. The layer-spec switch lives here too, as the plan chose
it (`engine.attention`, jobs/runtime/engine.py): `fused` keeps NeMo's Transformer Engine spec;
`unfused` sets megatron-core's local spec (NeMo's `local_layer_spec`) even where TE is installed,
turns off the fusions that need TE/apex and asks the data for an explicit attention mask (the
prune stage then registers torch's RMSNorm with ModelOpt so it can prune the local spec).

Checkpoints load the way the tutorial loads them (`legacy_ckpt=True`): see `ckpt_load_strictness`.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import fiddle as fdl
import torch
from lightning.pytorch import Callback, seed_everything
from lightning.pytorch.loggers import TensorBoardLogger
from megatron.core.distributed import DistributedDataParallelConfig
from megatron.core.optimizer import OptimizerConfig
from nemo import lightning as nl
from nemo.collections import llm
from nemo.lightning import io
from nemo.lightning.base import teardown as nemo_teardown
from nemo.lightning.ckpt_utils import ckpt_to_context_subdir
from nemo.lightning.pytorch.callbacks import PreemptionCallback
from nemo.lightning.pytorch.optim import CosineAnnealingScheduler, MegatronOptimizerModule

from jobs.contract import StageConfig, StageExit, seq_length
from jobs.runtime.engine import fused
from jobs.runtime.frame import is_rank_zero, mark_continue, report_progress
from jobs.runtime.signals import CONTINUE_SIGNUM
from jobs.stages import drift, tracking

log = logging.getLogger("jobs")

# Fusions that need Transformer Engine or apex kernels; megatron-core's local spec runs without them.
NON_TE_OFF = ("apply_rope_fusion", "masked_softmax_fusion", "bias_activation_fusion", "bias_dropout_fusion",
              "persist_layer_norm", "gradient_accumulation_fusion", "cross_entropy_loss_fusion")


# Underscore-private functions of NeMo (and one ModelOpt class) the jobs call because no public API does the
# same; they may move or vanish in any release. Each is fetched through `private()`, which names the version the
# jobs were tested with. (module, name, distribution, tested version)
TESTED_NEMO = "2.7.3"
TESTED_MODELOPT = "0.37.0"
PRIVATE_NEMO = (
    ("nemo.collections.llm.inference.base", "_setup_trainer_and_restore_model", "nemo_toolkit", TESTED_NEMO),
    ("nemo.collections.llm.modelopt.model_utils", "_set_gpt_mamba_modelopt_spec", "nemo_toolkit", TESTED_NEMO),
    ("modelopt.torch.nas.modules.norm", "_DynamicLayerNorm", "nvidia-modelopt", TESTED_MODELOPT),
)


def _installed(dist: str) -> str:
    from importlib import metadata

    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "unknown"


def private(module: str, name: str) -> Any:
    """`module.name` from the PRIVATE_NEMO list, or a RuntimeError that says which release the jobs need,
    instead of an ImportError/AttributeError deep inside a stage after its checkpoint has loaded."""
    import importlib

    dist, tested = next((d, v) for m, n, d, v in PRIVATE_NEMO if (m, n) == (module, name))
    where = f"{dist} {_installed(dist)}"
    try:
        found = getattr(importlib.import_module(module), name, None)
    except ImportError as exc:
        raise RuntimeError(f"cannot import {module} (for its private {name}) from {where}: {exc}; the stage jobs "
                           f"were tested with {dist}=={tested}") from exc
    if found is None:
        raise RuntimeError(f"{module}.{name} is missing from {where}: the stage jobs call this private function and "
                           f"were tested with {dist}=={tested}; use a container with that release (see docs/jobs.md)")
    return found


def accelerator() -> str:
    return "gpu" if torch.cuda.is_available() else "cpu"


def stage_precision(cfg: StageConfig) -> str:
    """The plan's precision for this stage (`engine.precision`)."""
    return cfg.engine["precision"]


def unfused_overrides() -> dict:
    """Model-config fields of the unfused engine: megatron-core's local spec (NeMo's `local_layer_spec`, also
    where TE is installed) and none of the fusions that need TE or apex."""
    from nemo.collections.llm.gpt.model.base import local_layer_spec

    return {"transformer_layer_spec": local_layer_spec, **{name: False for name in NON_TE_OFF}}


def engine_overrides(cfg: StageConfig) -> dict:
    """Model-config fields the plan's engine sets: none for fused attention (NeMo's TE spec)."""
    return {} if fused(cfg) else unfused_overrides()


def new_llama_config(cfg: StageConfig) -> llm.GPTConfig:
    """A NeMo config of the named class (`model.nemo_config`, from `llm` or its Llama module) with the stage's
    shape and engine."""
    from nemo.collections.llm.gpt.model import llama

    model = cfg.model
    config_cls = getattr(llm, model["nemo_config"], None) or getattr(llama, model["nemo_config"])
    return config_cls(
        num_layers=model["num_layers"], hidden_size=model["hidden_size"], ffn_hidden_size=model["ffn_hidden_size"],
        num_attention_heads=model["num_attention_heads"], num_query_groups=model["num_query_groups"],
        seq_length=model["seq_length"], rotary_base=model["rotary_base"], vocab_size=model["vocab_size"],
        share_embeddings_and_output_weights=bool(model.get("tie_embeddings", False)),
        **engine_overrides(cfg),
    )


def load_model(cfg: StageConfig, ckpt: str | Path, **overrides) -> llm.GPTModel:
    """The model class and config saved in a NeMo 2 checkpoint's context, with the engine's and the
    caller's overrides applied *before* building, so the layer-spec switch works on checkpoints written
    with TE (a TE-only `apply_rope_fusion=True` fails in the config's __post_init__) and the changes
    reach `__io__`."""
    model_cfg = io.load_context(ckpt_to_context_subdir(ckpt), subpath="model", build=False)
    for key, value in {**engine_overrides(cfg), **overrides}.items():
        setattr(model_cfg.config, key, value)
    return fdl.build(model_cfg)


def recompute_overrides(train: dict) -> dict:
    """Activation recomputation as planned (`train.recompute`: none | selective | full)."""
    mode = train.get("recompute", "none")
    if mode == "selective":
        return {"recompute_granularity": "selective"}
    if mode == "full":
        return {"recompute_granularity": "full", "recompute_method": "uniform", "recompute_num_layers": 1}
    return {}


def register_torch_rmsnorm() -> None:
    """Let ModelOpt prune torch.nn.RMSNorm (the local spec's norm); 0.37 only knows TE's and apex's.

    Same pattern as ModelOpt's own layer-norm dynamic module: the last normalized dimension is the
    traced `num_features` hparam, and `weight`/`normalized_shape` follow it (RMSNorm has no bias). ModelOpt
    0.41 hands the hparam in (`DMRegistry.convert(norm, num_features=hidden_size)`, the megatron plugin's
    call); 0.35/0.37 set it after converting: `_setup` takes both.
    """
    from modelopt.torch.nas.registry import DMRegistry
    from modelopt.torch.nas.traced_hp import TracedHp

    if torch.nn.RMSNorm in DMRegistry:
        return
    _DynamicLayerNorm = private("modelopt.torch.nas.modules.norm", "_DynamicLayerNorm")

    @DMRegistry.register({torch.nn.RMSNorm: "torch.nn.RMSNorm"})
    class _DynamicRMSNorm(_DynamicLayerNorm):
        def _setup(self, *, num_features=None):
            features = num_features or TracedHp(list(range(1, self.normalized_shape[-1] + 1)))
            self._register_hparam("num_features", features)
            self._register_dynamic_attribute("weight", self._cut_to_active_features)
            self._register_dynamic_attribute("normalized_shape", self._get_normalized_shape)


def data_module(cfg: StageConfig, tokenizer, micro_batch_size: int, global_batch_size: int,
                seed: int) -> llm.PreTrainingDataModule:
    """The prepared .bin/.idx splits, one prefix per role (so `split` is ignored), as the tutorial feeds them."""
    return llm.PreTrainingDataModule(
        paths={role: [prefix] for role, prefix in cfg.data["prefixes"].items()},
        seq_length=seq_length(cfg),
        tokenizer=tokenizer,
        micro_batch_size=micro_batch_size,
        global_batch_size=global_batch_size,
        num_workers=2,
        pin_memory=torch.cuda.is_available(),
        create_attention_mask=not fused(cfg),
        seed=seed,
        index_mapping_dir=str(cfg.stage_dir / "index_mappings"),
    )


# A model-side checkpoint key that may be absent on disk: Transformer Engine's per-module `_extra_state` (FP8
# metadata; the sharded-object form ends in /shard_<i>_<n>).
_TE_EXTRA_STATE = re.compile(r"\._extra_state(/shard_[\d_]+)?$")
_UNEXPECTED_MARK = "Unexpected keys (for this rank):"


class _ExtraStateOnlyGuard(logging.Filter):
    """Keeps the lenient load honest: megatron logs (LOG_ALL) the keys the model asked for that the checkpoint
    lacks; anything there but TE's `_extra_state` is a real weight, so the load fails as a strict one would."""

    def filter(self, record: logging.LogRecord) -> bool:
        msg = record.getMessage()
        if _UNEXPECTED_MARK in msg:
            rest = msg.split(_UNEXPECTED_MARK, 1)[1]
            keys = re.findall(r"'([^']+)'", rest)
            bad = sorted(k for k in keys if not _TE_EXTRA_STATE.search(k)) if keys else [rest.strip()]
            if bad:
                raise RuntimeError(f"checkpoint lacks {len(bad)} tensor(s) the model needs (only Transformer Engine's "
                                   f"_extra_state may be absent): {bad[:8]}{' ...' if len(bad) > 8 else ''}")
        return True


def ckpt_load_strictness():
    """How every stage loads a checkpoint: NeMo's `legacy_ckpt=True` (what the tutorial passes), i.e.
    `MegatronStrategy(ckpt_load_strictness=StrictHandling.LOG_ALL)` (NeMo 2.7
    `llm/modelopt/model_utils.py`: `ckpt_load_strictness=StrictHandling.LOG_ALL if legacy_ckpt else None`;
    `scripts/llm/gpt_train.py --legacy_ckpt` the same for training/distillation; `llm.distill` has no flag and
    reads the strategy's value for the teacher too, `distill/utils.py::teacher_provider`).

    Needed with Transformer Engine: the prune stage restores and saves through ModelOpt's spec
    (`_set_gpt_mamba_modelopt_spec`), whose TE norm wrapper drops its `_extra_state` from the state dict
    (megatron `post_training/modelopt/layers.py::Norm`), while the saved context still names NeMo's
    `default_layer_spec`; distill and report build the student with the TE spec, whose final norm asks for
    `decoder.final_layernorm._extra_state`, and the default (`ASSUME_OK_UNEXPECTED`) lets torch's loader fail
    on it ("Missing key in checkpoint state_dict: ..._extra_state/shard_0_1"; on the GPU device that key was
    the only one absent). LOG_ALL drops absent keys from the request; `_ExtraStateOnlyGuard` turns any other
    absent key into an error, so real weights stay strictly checked."""
    from megatron.core.dist_checkpointing.validation import StrictHandling

    validation_log = logging.getLogger("megatron.core.dist_checkpointing.validation")
    if not any(isinstance(f, _ExtraStateOnlyGuard) for f in validation_log.filters):
        validation_log.addFilter(_ExtraStateOnlyGuard())
    # A filter sees only records its logger lets through: NeMo's logger setup copies its level (ERROR on
    # some ranks and setups) onto `megatron.core`, and any `logging.config.dictConfig` (disabling existing
    # loggers by default) turns the logger off; either would silence megatron's warning and the guard.
    if validation_log.level == logging.NOTSET or validation_log.level > logging.WARNING:
        validation_log.setLevel(logging.WARNING)
    validation_log.disabled = False
    return StrictHandling.LOG_ALL


def _dtype(precision: str) -> torch.dtype:
    return torch.bfloat16 if precision.startswith("bf16") else torch.float32


def sharded_optimizer(cfg: StageConfig) -> bool:
    """Megatron's distributed optimizer shards state over data-parallel ranks; with one DP rank there
    is nothing to shard, and its CUDA-only type check would also stop CPU runs."""
    return cfg.parallel["dp"] > 1


def strategy(cfg: StageConfig, precision: str, **overrides) -> nl.MegatronStrategy:
    """MegatronStrategy with the planned TP/PP/CP/SP and the DDP settings of NeMo's Llama recipes."""
    p = cfg.parallel
    shard = sharded_optimizer(cfg)
    kwargs = dict(
        tensor_model_parallel_size=p["tp"],
        pipeline_model_parallel_size=p["pp"],
        context_parallel_size=p["cp"],
        sequence_parallel=bool(p["sequence_parallel"]) and p["tp"] > 1,
        pipeline_dtype=_dtype(precision) if p["pp"] > 1 else None,
        # Synchronous saves: the complete marker and the requeue exit must never race a background write.
        ckpt_async_save=False,
        ckpt_parallel_load=True,
        ckpt_load_strictness=ckpt_load_strictness(),
        ddp=DistributedDataParallelConfig(
            check_for_nan_in_grad=True, grad_reduce_in_fp32=True, overlap_grad_reduce=True,
            overlap_param_gather=shard, average_in_collective=True, use_distributed_optimizer=shard,
        ),
    )
    kwargs.update(overrides)
    return nl.MegatronStrategy(**kwargs)


def precision_plugin(precision: str) -> nl.MegatronMixedPrecision:
    dtype = _dtype(precision)
    return nl.MegatronMixedPrecision(precision=precision, params_dtype=dtype, pipeline_dtype=dtype,
                                     autocast_enabled=False, grad_reduce_in_fp32=True)


def trainer(cfg: StageConfig, strategy: nl.MegatronStrategy, precision: str, **kwargs) -> nl.Trainer:
    """nl.Trainer over the planned nodes x GPUs; `kwargs` carry the stage's loop limits and callbacks."""
    return nl.Trainer(
        devices=cfg.parallel["gpus_per_node"] or 1,  # planned without GPUs: one process on the CPU
        num_nodes=cfg.parallel["nodes"],
        accelerator=accelerator(),
        strategy=strategy,
        plugins=precision_plugin(precision),
        use_distributed_sampler=False,
        num_sanity_val_steps=0,
        **kwargs,
    )


class ProgressCallback(Callback):
    """Prints the MINITRON_PROGRESS lines (rank 0) after every optimizer step and every validation."""

    def __init__(self, total_steps: int):
        self.total_steps = total_steps

    def on_train_batch_end(self, trainer, pl_module, outputs, batch, batch_idx):
        loss = trainer.callback_metrics.get("reduced_train_loss")
        report_progress(trainer.global_step, self.total_steps, train_loss=None if loss is None else float(loss))

    def on_validation_end(self, trainer, pl_module):
        loss = trainer.callback_metrics.get("val_loss")
        if trainer.sanity_checking or trainer.state.fn != "fit" or loss is None:
            return
        report_progress(trainer.global_step, self.total_steps, val_loss=float(loss))


def training_trainer(cfg: StageConfig) -> tuple[nl.Trainer, PreemptionCallback]:
    """Trainer of a finetune/distill stage: planned steps and validation, progress lines, a checkpoint on the continuation signal."""
    t = cfg.train
    preemption = PreemptionCallback(sig=CONTINUE_SIGNUM)
    return trainer(
        cfg, strategy(cfg, stage_precision(cfg)), stage_precision(cfg),
        max_steps=t["steps"], val_check_interval=t["val_check_interval"], limit_val_batches=t["limit_val_batches"],
        limit_test_batches=t["limit_val_batches"], log_every_n_steps=t["log_every_n_steps"],
        callbacks=[ProgressCallback(t["steps"]), preemption],
    ), preemption


def optimizer(cfg: StageConfig) -> MegatronOptimizerModule:
    """Adam + cosine annealing with warmup, as `distributed_fused_adam_with_cosine_annealing` builds it,
    but with the plan's weight decay, betas and clipping."""
    train = cfg.train
    return MegatronOptimizerModule(
        config=OptimizerConfig(
            optimizer="adam", lr=train["lr"], min_lr=train["min_lr"], weight_decay=train["weight_decay"],
            adam_beta1=train["adam_beta1"], adam_beta2=train["adam_beta2"], adam_eps=1e-5,
            clip_grad=train["clip_grad"], bf16=stage_precision(cfg).startswith("bf16"), fp16=False,
            use_distributed_optimizer=sharded_optimizer(cfg),
        ),
        lr_scheduler=CosineAnnealingScheduler(
            max_steps=train["steps"], warmup_steps=train["warmup_steps"], constant_steps=0, min_lr=train["min_lr"],
        ),
    )


def logger(cfg: StageConfig) -> nl.NeMoLogger:
    """Logs and TensorBoard events in outputs.log_dir, and W&B / MLflow where the stage config's `tracking` turns
    them on (tracking.py); one rotating `-last` checkpoint every N steps (all AutoResume needs; the final one
    becomes outputs.model)."""
    return nl.NeMoLogger(
        explicit_log_dir=cfg.outputs["log_dir"],
        ckpt=nl.ModelCheckpoint(
            monitor=None, save_top_k=0, save_last=True, every_n_train_steps=cfg.train["ckpt_every_n_steps"],
            filename="{step}-{consumed_samples}",
        ),
        tensorboard=TensorBoardLogger(save_dir="tb_logs", name=""),
        **tracking.nemo_logger_args(cfg),
    )


def resume(restore_path: str) -> nl.AutoResume:
    """Continue from the newest `-last` checkpoint of this stage if any, else start from `restore_path`."""
    return nl.AutoResume(
        resume_if_exists=True, resume_ignore_no_checkpoint=True,
        restore_config=nl.RestoreConfig(path=restore_path, load_optim_state=False),
    )


def seed(train: dict) -> None:
    seed_everything(train["seed"], workers=True)


_STEP = re.compile(r"step=(\d+)")


def latest_checkpoint(log_dir: str | Path) -> Path:
    """The newest complete `-last` checkpoint a NeMo training wrote under log_dir/checkpoints."""
    candidates = [d for d in Path(log_dir, "checkpoints").glob("*-last") if d.is_dir() and _STEP.search(d.name)]
    if not candidates:
        raise FileNotFoundError(f"no -last checkpoint under {log_dir}/checkpoints")
    return max(candidates, key=lambda d: int(_STEP.search(d.name).group(1)))


def link_final_model(log_dir: str, model_path: str) -> None:
    """outputs.model -> the final checkpoint (relative symlink, replaced atomically): no 16 GB copy."""
    target = latest_checkpoint(log_dir)
    link = Path(model_path)
    link.parent.mkdir(parents=True, exist_ok=True)
    tmp = link.with_name(f".{link.name}.tmp")
    if tmp.is_symlink() or tmp.exists():
        tmp.unlink()
    tmp.symlink_to(os.path.relpath(target, link.parent))
    os.replace(tmp, link)
    log.info("final model %s -> %s", link, target)


@dataclass
class TrainingPlan:
    """Everything `llm.train` gets, built from the stage config (tests check it against the config)."""

    model: Any
    data: Any
    trainer: nl.Trainer
    optim: MegatronOptimizerModule
    log: nl.NeMoLogger
    resume: nl.AutoResume
    preemption: PreemptionCallback
    tokenizer: Any  # what llm.train's `tokenizer=` gets: "model" or a tokenizer object


def run_training(plan: TrainingPlan, cfg: StageConfig) -> None:
    """`llm.train` on the plan, then outputs.model -> final checkpoint. A save on the continuation signal
    ends in NeMo's PreemptionCallback calling sys.exit(0) after the checkpoint is written; that becomes
    exit 85. NeMo's optimizer call is fitted to the installed megatron-core first (drift.py)."""
    log.info("optimizer call: %s", drift.adapt_optimizer_call())
    outcome = tracking.FAILED
    try:
        llm.train(plan.model, plan.data, plan.trainer, log=plan.log, resume=plan.resume, optim=plan.optim,
                  tokenizer=plan.tokenizer)
        outcome = tracking.DONE
    except SystemExit as exc:
        if exc.code not in (0, None):
            raise
        outcome = tracking.CONTINUING
        # The checkpoint is written (a collective save). Rank 0 leaves the continue marker before any
        # rank exits, so srun's kill-on-bad-exit cannot cut it short.
        mark_continue(cfg)
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.barrier()
        raise SystemExit(StageExit.CONTINUE) from exc
    finally:
        tracking.close(cfg, plan.trainer.loggers, outcome)
    if is_rank_zero():
        link_final_model(cfg.outputs["log_dir"], cfg.outputs["model"])
    teardown(plan.trainer)


def teardown(trainer: nl.Trainer) -> None:
    """Wait for every rank, then release NeMo/megatron global state (process groups, parallel state,
    microbatch calculator) so another model can be built in the same process."""
    from megatron.core.num_microbatches_calculator import destroy_num_microbatches_calculator

    if torch.distributed.is_initialized():
        torch.distributed.barrier()
    nemo_teardown(trainer)
    destroy_num_microbatches_calculator()
