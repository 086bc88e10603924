"""Build each stage's config (jobs.contract.StageConfig) from the recipe and the plan: paths, shape,
parallelism, schedule. The contract module defines, validates and writes it; this only fills it in."""

from __future__ import annotations

import os
from typing import Any

from jobs.contract import SCHEMA_VERSION, RunLayout, StageConfig

from .planner import Plan, StagePlan, student_shape
from .recipe import Recipe


def _model_source(recipe: Recipe, paths: RunLayout) -> str:
    source = recipe.model.source
    return source[len("nemo:"):] if source.startswith("nemo:") else paths.model_path("import")


def build_stage_config(run_id: str, paths: RunLayout, recipe: Recipe, plan: Plan, sp: StagePlan) -> StageConfig:
    m = recipe.model
    tokenizer_trained = m.tokenizer.startswith("bpe:")
    data_dir = paths.stage_work("data")
    roles = recipe.data.split_map
    config: dict[str, Any] = {
        "schema_version": SCHEMA_VERSION,
        "run_id": run_id,
        "run_dir": paths.run_dir,
        "stage": sp.name,
        "kind": sp.kind,
        "markers_dir": paths.markers,
        "work_dir": paths.work,
        "tokenizer": {
            "path_or_id": os.path.join(data_dir, "tokenizer") if tokenizer_trained else m.tokenizer,
            "train_bpe_vocab": int(m.tokenizer[4:]) if tokenizer_trained else None,
        },
        "model": {
            "source": m.source, "nemo_config": m.nemo_config, "num_layers": m.num_layers,
            "hidden_size": m.hidden_size, "ffn_hidden_size": m.ffn_hidden_size,
            "num_attention_heads": m.num_attention_heads, "num_query_groups": m.num_query_groups,
            "vocab_size": m.vocab_size, "seq_length": recipe.data.seq_length, "rotary_base": m.rotary_base,
            "tie_embeddings": m.tie_embeddings,
        },
        "data": {
            "source": {k: v for k, v in recipe.data.source.__dict__.items() if v is not None},
            "text_key": recipe.data.text_key,
            "split_map": dict(roles),
            "workers": recipe.data.workers,
            "append_eod": True,
            "prefixes": {role: os.path.join(data_dir, f"{role}_text_document") for role in roles},
        },
        "parallel": {"nodes": sp.nodes, "gpus_per_node": sp.gpus_per_node, "tp": sp.tp, "pp": sp.pp,
                     "cp": sp.cp, "dp": sp.dp, "sequence_parallel": sp.sequence_parallel,
                     "attention": sp.attention},
        "batch": {"micro_batch_size": sp.micro_batch_size, "global_batch_size": sp.global_batch_size,
                  "grad_accum": sp.grad_accum},
        "inputs": {},
        "outputs": {},
    }
    kind = sp.kind
    work = paths.stage_work(sp.name)
    if kind == "data":
        config["outputs"] = {"data": data_dir}
        if tokenizer_trained:
            config["outputs"]["tokenizer"] = config["tokenizer"]["path_or_id"]
    elif kind == "import":
        config["outputs"] = {"model": paths.model_path("import")}
    elif kind in ("finetune", "distill"):
        st = recipe.settings(kind)
        if sp.stall_timeout_s:
            config["runtime"] = {"stall_timeout_s": sp.stall_timeout_s}
        config["train"] = {
            "steps": sp.steps, "lr": sp.lr, "min_lr": sp.min_lr, "warmup_steps": st.warmup_steps,
            "val_check_interval": st.val_check_interval, "limit_val_batches": st.limit_val_batches,
            "log_every_n_steps": st.log_every_n_steps, "ckpt_every_n_steps": st.ckpt_every_n_steps,
            "seed": st.seed, "precision": st.precision, "weight_decay": st.weight_decay,
            "adam_beta1": st.adam_beta1, "adam_beta2": st.adam_beta2, "clip_grad": st.clip_grad,
            "seq_length": sp.seq_length, "recompute": st.recompute,
        }
        config["outputs"] = {"model": paths.model_path(sp.name), "log_dir": os.path.join(work, "logs")}
        if kind == "finetune":
            config["inputs"] = {"model": _model_source(recipe, paths), "data": data_dir}
        else:
            config["inputs"] = {"student": paths.model_path(f"prune_{sp.pruning}"),
                                "teacher": paths.model_path("finetune"), "data": data_dir}
            config["distill"] = {"skip_lm_loss": st.skip_lm_loss, "kd_loss_scale": st.kd_loss_scale,
                                 "logit_layers": list(st.logit_layers)}
            shape = student_shape(recipe, sp.pruning)
            config["student_shape"] = {"num_layers": shape.num_layers, "hidden_size": shape.hidden_size,
                                       "ffn_hidden_size": shape.ffn_hidden_size,
                                       "num_attention_heads": shape.num_attention_heads,
                                       "num_query_groups": shape.num_query_groups}
    elif kind == "prune":
        st = recipe.settings("prune")
        config["inputs"] = {"model": paths.model_path("finetune"), "data": data_dir}
        config["outputs"] = {"model": paths.model_path(sp.name)}
        config["prune"] = {**recipe.pruning[sp.pruning].targets(), "num_train_samples": st.num_train_samples,
                           "seq_length": sp.seq_length}
    elif kind == "report":
        students = {name: [f"prune_{name}", f"distill_{name}"] for name in recipe.students}
        teacher = None if m.source.startswith("nemo:") else "import"
        config["report"] = {"stages": {"teacher": teacher, "finetune": "finetune", "students": students},
                            "limit_val_batches": recipe.settings("finetune").limit_val_batches}
        config["inputs"] = {"data": data_dir}
        config["outputs"] = {"report_dir": work, "summary_json": os.path.join(work, "summary.json"),
                             "summary_md": os.path.join(work, "summary.md"),
                             "plot": os.path.join(work, "val_loss.png")}
    elif kind == "export":
        config["export"] = {"students": {name: paths.model_path(f"distill_{name}") for name in recipe.students}}
        config["outputs"] = {name: os.path.join(work, name) for name in recipe.students}
    return StageConfig.from_json(config)


def build_probe_config(run_id: str, paths: RunLayout, sp: StagePlan, role: str, job_dir: str,
                       settings: dict[str, Any]) -> StageConfig:
    """The config of a `probe` stage (`minitron check --probe`, jobs/probe.py): where to write the report,
    which role it plays (gpu: the GPU partition; cpu: the CPU partition) and what the launcher expects."""
    return StageConfig.from_json({
        "schema_version": SCHEMA_VERSION, "run_id": run_id, "run_dir": paths.run_dir, "stage": sp.name,
        "kind": sp.kind, "markers_dir": paths.markers, "work_dir": paths.work, "inputs": {},
        "outputs": {"report": os.path.join(paths.stage_work(sp.name), "probe.json")},
        "probe": {"role": role, "job_dir": job_dir, "partition": sp.partition, "image": sp.container,
                  "gpus_per_node": sp.gpus_per_node, **settings},
    })
