"""Stage configs of the tiny recipe (jobs.contract, docs/stage-config.md), written the way the launcher
writes them: one JSON per stage under RUN_DIR/stages, every path absolute.

A 4-layer Llama (hidden 256, ffn 768, 8 heads / 4 query groups) on the pydoc-topics corpus with a
512-token BPE trained by the data stage; teacher fine-tune, depth (drop layers 2-3) and width
(ffn 768->512, hidden 256->192; ModelOpt wants multiples of 64) pruning, distillation of both,
report and export. `cpu=True` gives the settings a CPU-only run needs (fp32, no grad clipping:
megatron's clip asserts CUDA tensors).
"""

from __future__ import annotations

import copy
from pathlib import Path

from jobs.contract import SCHEMA_VERSION, StageConfig, write_stage_config

ORDER = ("data", "import", "finetune", "prune_depth", "prune_width", "distill_depth", "distill_width",
         "report", "export")


def stage_configs(run_dir: str | Path, *, cpu: bool = False, finetune_steps: int = 300, distill_steps: int = 90,
                  micro_batch_size: int = 4, global_batch_size: int = 8, seq_length: int = 128,
                  lr: float = 3e-3) -> dict[str, dict]:
    """All stage configs of one tiny run, keyed by stage name (in run order, see ORDER).

    The teacher gets enough steps to learn the corpus, so pruning costs it accuracy and the
    distillation has something to recover (with 30 steps the near-random teacher's depth-pruned
    copy already scored better than the teacher, and KD pulled it back up: seen on the GPU)."""
    run = Path(run_dir).resolve()
    work = run / "work"
    data_dir = work / "data"
    tok_dir = data_dir / "tokenizer"
    model_dir = {s: str(work / s / "model") for s in ORDER}
    log_dir = {s: str(work / s / "logs") for s in ORDER}
    prefixes = {role: str(data_dir / f"{role}_text_document") for role in ("train", "validation", "test")}
    base = {
        "schema_version": SCHEMA_VERSION, "run_id": run.name, "run_dir": str(run), "markers_dir": str(run / "markers"),
        "work_dir": str(work),
        "tokenizer": {"path_or_id": str(tok_dir), "train_bpe_vocab": 512},
        "model": {"source": "random", "nemo_config": "Llama31Config", "num_layers": 4, "hidden_size": 256,
                  "ffn_hidden_size": 768, "num_attention_heads": 8, "num_query_groups": 4, "vocab_size": 512,
                  "seq_length": seq_length, "rotary_base": 500000.0},
        "data": {"source": {"builtin": "pydoc-topics"}, "text_key": "text",
                 "split_map": {"train": "train", "validation": "validation", "test": "test"},
                 "workers": 2, "append_eod": True, "prefixes": prefixes},
        "parallel": {"nodes": 1, "gpus_per_node": 1, "tp": 1, "pp": 1, "cp": 1, "dp": 1,
                     "sequence_parallel": False, "attention": "unfused"},
        "batch": {"micro_batch_size": micro_batch_size, "global_batch_size": global_batch_size,
                  "grad_accum": global_batch_size // micro_batch_size},
    }
    def train(steps: int) -> dict:
        return {"steps": steps, "lr": lr, "min_lr": lr / 10, "warmup_steps": 2,
                "val_check_interval": max(1, steps // 3), "limit_val_batches": 4, "log_every_n_steps": 1,
                "ckpt_every_n_steps": max(1, steps // 3), "seed": 1234,
                "precision": "32" if cpu else "bf16-mixed", "weight_decay": 0.1, "adam_beta1": 0.9,
                "adam_beta2": 0.95, "clip_grad": 0.0 if cpu else 1.0}

    distill = {"skip_lm_loss": True, "kd_loss_scale": 1.0, "logit_layers": ["output_layer", "output_layer"]}
    data_in = str(data_dir)
    specific = {
        "data": {"inputs": {}, "outputs": {"data": data_in, "tokenizer": str(tok_dir)}},
        "import": {"inputs": {"data": data_in}, "outputs": {"model": model_dir["import"]}},
        "finetune": {"inputs": {"model": model_dir["import"], "data": data_in},
                     "outputs": {"model": model_dir["finetune"], "log_dir": log_dir["finetune"]},
                     "train": train(finetune_steps)},
        "prune_depth": {"inputs": {"model": model_dir["finetune"], "data": data_in},
                        "outputs": {"model": model_dir["prune_depth"]},
                        "prune": {"drop_layers": [2, 3], "num_train_samples": 16}},
        "prune_width": {"inputs": {"model": model_dir["finetune"], "data": data_in},
                        "outputs": {"model": model_dir["prune_width"]},
                        "prune": {"target_ffn_hidden_size": 512, "target_hidden_size": 192, "num_train_samples": 16}},
        "distill_depth": {"inputs": {"student": model_dir["prune_depth"], "teacher": model_dir["finetune"],
                                     "data": data_in},
                          "outputs": {"model": model_dir["distill_depth"], "log_dir": log_dir["distill_depth"]},
                          "train": train(distill_steps), "distill": distill},
        "distill_width": {"inputs": {"student": model_dir["prune_width"], "teacher": model_dir["finetune"],
                                     "data": data_in},
                          "outputs": {"model": model_dir["distill_width"], "log_dir": log_dir["distill_width"]},
                          "train": train(distill_steps), "distill": distill},
        "report": {"inputs": {"data": data_in},
                   "outputs": {"report_dir": str(work / "report"),
                               **{name: str(work / "report" / fname) for name, fname in
                                  (("plot", "val_loss.png"), ("summary_md", "summary.md"),
                                   ("summary_json", "summary.json"))}},
                   "report": {"stages": {"teacher": "import", "finetune": "finetune",
                                         "students": {"depth": ["prune_depth", "distill_depth"],
                                                      "width": ["prune_width", "distill_width"]}},
                              "limit_val_batches": 4}},
        "export": {"inputs": {}, "outputs": {s: str(work / "export" / s) for s in ("depth", "width")},
                   "export": {"students": {"depth": model_dir["distill_depth"], "width": model_dir["distill_width"]}}},
    }
    configs = {}
    for stage in ORDER:
        kind = stage.split("_")[0]
        cfg = copy.deepcopy(base)
        cfg.update({"stage": stage, "kind": kind, **copy.deepcopy(specific[stage])})
        configs[stage] = cfg
    return configs


def write_stage_configs(run_dir: str | Path, configs: dict[str, dict]) -> dict[str, Path]:
    """RUN_DIR/stages/<stage>.json for each config, through the contract's writer; returns their paths."""
    stages = Path(run_dir).resolve() / "stages"
    stages.mkdir(parents=True, exist_ok=True)
    paths = {}
    for stage, cfg in configs.items():
        paths[stage] = stages / f"{stage}.json"
        write_stage_config(paths[stage], StageConfig.from_json(cfg), mode=0o644)
    return paths
