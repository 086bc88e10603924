"""Build each stage's config (jobs.contract.StageConfig) from the recipe and the plan.

What a stage's config holds is its kind's table entry (jobs/contract/kinds.py): its outputs, paths
in its own work directory; its inputs, resolved through the stage graph to the outputs of the stages
that make them or to a path the recipe gives (launcher/config/graph.py); and the sections it reads,
each filled by one builder here. The contract module defines, validates and writes the config; this
only fills it in.
"""

from __future__ import annotations

import hashlib
import os
import re
from dataclasses import dataclass
from typing import Any, Callable, Optional

from jobs.contract import SCHEMA_VERSION, VARIANT, RunLayout, StageConfig

from ..config.graph import holds, sources, variants
from ..config.recipe import Recipe
from ..planning.plan import StagePlan
from ..planning.shapes import student_shape

WANDB_ID_MAX = 64


@dataclass
class _Stage:
    """What a section builder reads: the recipe, the stage's plan and its resolved inputs and outputs."""

    recipe: Recipe
    sp: StagePlan
    inputs: dict[str, str]
    outputs: dict[str, str]

    @property
    def settings(self) -> Any:
        return self.recipe.settings(self.sp.kind)

    def corpus(self) -> str:
        """The prepared data: the stage's own `data` output (the data stage) or its `data` input."""
        return self.outputs.get("data") or self.inputs["data"]


def _model(st: _Stage) -> dict[str, Any]:
    m = st.recipe.model
    return {"source": m.source, "nemo_config": m.nemo_config, "num_layers": m.num_layers,
            "hidden_size": m.hidden_size, "ffn_hidden_size": m.ffn_hidden_size,
            "num_attention_heads": m.num_attention_heads, "num_query_groups": m.num_query_groups,
            "vocab_size": m.vocab_size, "seq_length": st.recipe.data.seq_length, "rotary_base": m.rotary_base,
            "tie_embeddings": m.tie_embeddings}


def _tokenizer(st: _Stage) -> dict[str, Any]:
    """A tokenizer the data stage trains (its `tokenizer` output, another stage's input) or the recipe's."""
    tokenizer = st.recipe.model.tokenizer
    trained = tokenizer.startswith("bpe:")
    path = (st.outputs.get("tokenizer") or st.inputs.get("tokenizer")) if trained else tokenizer
    return {"path_or_id": path, "train_bpe_vocab": int(tokenizer[4:]) if trained else None}


def _data(st: _Stage) -> dict[str, Any]:
    data = st.recipe.data
    return {"source": {k: v for k, v in data.source.__dict__.items() if v is not None}, "text_key": data.text_key,
            "split_map": dict(data.split_map), "workers": data.workers, "append_eod": True,
            "prefixes": {role: os.path.join(st.corpus(), f"{role}_text_document") for role in data.split_map}}


def _parallel(st: _Stage) -> dict[str, Any]:
    sp = st.sp
    return {"nodes": sp.nodes, "gpus_per_node": sp.gpus_per_node, "tp": sp.tp, "pp": sp.pp, "cp": sp.cp,
            "dp": sp.dp, "sequence_parallel": sp.sequence_parallel}


def _batch(st: _Stage) -> dict[str, Any]:
    sp = st.sp
    return {"micro_batch_size": sp.micro_batch_size, "global_batch_size": sp.global_batch_size,
            "grad_accum": sp.grad_accum}


def _train(st: _Stage) -> dict[str, Any]:
    sp, s = st.sp, st.settings
    return {"steps": sp.steps, "lr": sp.lr, "min_lr": sp.min_lr, "warmup_steps": s.warmup_steps,
            "val_check_interval": s.val_check_interval, "limit_val_batches": s.limit_val_batches,
            "log_every_n_steps": s.log_every_n_steps, "ckpt_every_n_steps": s.ckpt_every_n_steps, "seed": s.seed,
            "weight_decay": s.weight_decay, "adam_beta1": s.adam_beta1, "adam_beta2": s.adam_beta2,
            "clip_grad": s.clip_grad if sp.uses_gpus else 0.0,  # megatron-core clips CUDA tensors only
            "seq_length": sp.seq_length, "recompute": sp.recompute}


def _prune(st: _Stage) -> dict[str, Any]:
    return {**st.recipe.pruning[st.sp.pruning].targets(), "num_train_samples": st.settings.num_train_samples,
            "seq_length": st.sp.seq_length}


def _distill(st: _Stage) -> dict[str, Any]:
    s = st.settings
    return {"skip_lm_loss": s.skip_lm_loss, "kd_loss_scale": s.kd_loss_scale, "logit_layers": list(s.logit_layers)}


def _student_shape(st: _Stage) -> dict[str, Any]:
    shape = student_shape(st.recipe, st.sp.pruning)
    return {"num_layers": shape.num_layers, "hidden_size": shape.hidden_size, "ffn_hidden_size": shape.ffn_hidden_size,
            "num_attention_heads": shape.num_attention_heads, "num_query_groups": shape.num_query_groups}


def _report(st: _Stage) -> dict[str, Any]:
    return {"limit_val_batches": st.recipe.settings(st.sp.stage_kind.batches_from).limit_val_batches}


def _engine(st: _Stage) -> dict[str, Any]:
    return {"attention": st.sp.attention, "precision": st.sp.precision, "device": "gpu" if st.sp.uses_gpus else "cpu"}


def _tracking(run_id: str, sp: StagePlan) -> dict[str, Any]:
    """The plan's trackers, with the stage's identity in each: one W&B / MLflow run per training stage, named
    `<run id>/<stage>`, that a continuation after a requeue resumes rather than starting another (W&B by the id
    here, derived from the names; MLflow by the run name, jobs/stages/tracking.py). W&B groups a run's stages."""
    tracking: dict[str, Any] = {"run_name": f"{run_id}/{sp.name}"}
    if "wandb" in sp.tracking:
        tracking["wandb"] = {**sp.tracking["wandb"], "id": wandb_run_id(run_id, sp.name), "group": run_id,
                             "job_type": sp.kind}
    if "mlflow" in sp.tracking:
        tracking["mlflow"] = dict(sp.tracking["mlflow"])
    return tracking


def wandb_run_id(run_id: str, stage: str) -> str:
    """A W&B run id unique to the stage of this run and stable across its continuations: `<run id>-<stage>` in the
    characters W&B allows (it refuses /\\#?%:), or a digest of it past 64 characters (the id also names the
    offline run's directory)."""
    text = re.sub(r"[^A-Za-z0-9_-]", "-", f"{run_id}-{stage}")
    return text if len(text) <= WANDB_ID_MAX else hashlib.sha256(text.encode()).hexdigest()[:32]


SECTIONS: dict[str, Callable[[_Stage], dict[str, Any]]] = {
    "model": _model, "tokenizer": _tokenizer, "data": _data, "parallel": _parallel, "batch": _batch,
    "train": _train, "prune": _prune, "distill": _distill, "student_shape": _student_shape, "report": _report,
    "engine": _engine,
}


def stage_outputs(recipe: Optional[Recipe], sp: StagePlan, paths: RunLayout) -> dict[str, str]:
    """The stage's outputs: its kind's, in its work directory; per-student ones once per student (a stage
    outside a recipe, the probe, has only unconditional outputs)."""
    work = paths.stage_work(sp.name)
    outputs = {}
    for output in sp.stage_kind.outputs:
        if not holds(output.when, recipe):
            continue
        names = variants(recipe, output.each) if output.each else [None]
        for variant in names:
            name, path = (output.name, output.path) if variant is None else (
                output.name.replace(VARIANT, variant), output.path.replace(VARIANT, variant))
            outputs[name] = os.path.normpath(os.path.join(work, path))
    return outputs


def stage_inputs(recipe: Recipe, sp: StagePlan, paths: RunLayout) -> dict[str, str]:
    """The stage's inputs: each producing stage's output path, or the path the recipe gives instead."""
    return {src.name: src.path or os.path.normpath(os.path.join(paths.stage_work(src.stage), src.output.path))
            for src in sources(recipe, sp.stage_kind, sp.pruning)}


def build_stage_config(run_id: str, paths: RunLayout, recipe: Recipe, sp: StagePlan) -> StageConfig:
    stage = _Stage(recipe, sp, stage_inputs(recipe, sp, paths), stage_outputs(recipe, sp, paths))
    config: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "run_dir": paths.run_dir, "stage": sp.name,
        "kind": sp.kind, "markers_dir": paths.markers, "work_dir": paths.work, "inputs": stage.inputs,
        "outputs": stage.outputs,
    }
    for section in sp.stage_kind.sections:
        config[section] = SECTIONS[section](stage)
    if sp.stall_timeout_s:
        config["runtime"] = {"stall_timeout_s": sp.stall_timeout_s}
    if sp.tracking:
        config["tracking"] = _tracking(run_id, sp)
    return StageConfig.from_json(config)


def build_probe_config(run_id: str, paths: RunLayout, sp: StagePlan, role: str, job_dir: str,
                       settings: dict[str, Any]) -> StageConfig:
    """The config of a probe stage (`minitron check --probe`, jobs/stages/probe.py): where to write the report,
    which role it plays (gpu: the GPU partition; cpu: the CPU partition) and what the launcher expects."""
    return StageConfig.from_json({
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "run_dir": paths.run_dir, "stage": sp.name,
        "kind": sp.kind, "markers_dir": paths.markers, "work_dir": paths.work, "inputs": {},
        "outputs": stage_outputs(None, sp, paths),
        "probe": {"role": role, "job_dir": job_dir, "partition": sp.partition, "image": sp.container,
                  "gpus_per_node": sp.gpus_per_node, **settings},
    })
