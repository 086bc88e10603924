"""The job side of the stage contract (docs/stage-config.md), stdlib only so it imports fast.

Reads and validates the stage JSON, knows ranks, writes markers atomically, decides whether a
stage is already done, prints the MINITRON_PROGRESS lines the launcher's status command parses,
and turns the pre-time-limit SIGUSR1 into exit code 85 (checkpoint saved, requeue me).
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import signal
import sys
import tempfile
import time
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Any, Callable, Sequence

SCHEMA_VERSION = 1
EXIT_CONFIG = 2
EXIT_REQUEUE = 85
PROGRESS_TAG = "MINITRON_PROGRESS"
DATA_ROLES = ("train", "validation", "test")
TRAINING_KINDS = ("finetune", "distill")

log = logging.getLogger("jobs")

# Keys each kind reads; a missing one is a planner bug and fails before any GPU work starts.
_SECTION_KEYS = {
    "model": ("source", "nemo_config", "num_layers", "hidden_size", "ffn_hidden_size",
              "num_attention_heads", "num_query_groups", "vocab_size", "seq_length", "rotary_base"),
    "tokenizer": ("path_or_id", "train_bpe_vocab"),
    "data": ("source", "text_key", "split_map", "workers", "append_eod", "prefixes"),
    "parallel": ("nodes", "gpus_per_node", "tp", "pp", "cp", "dp", "sequence_parallel"),
    "batch": ("micro_batch_size", "global_batch_size"),
    "train": ("steps", "lr", "min_lr", "warmup_steps", "val_check_interval", "limit_val_batches",
              "log_every_n_steps", "ckpt_every_n_steps", "seed", "precision", "weight_decay",
              "adam_beta1", "adam_beta2", "clip_grad"),
    "prune": ("num_train_samples",),
    "distill": ("skip_lm_loss", "kd_loss_scale", "logit_layers"),
    "report": ("stages", "limit_val_batches"),
    "export": ("students",),
}
_KIND_SECTIONS = {
    "data": ("tokenizer", "data"),
    "import": ("model", "tokenizer"),
    "finetune": ("model", "data", "parallel", "batch", "train"),
    "prune": ("model", "data", "parallel", "batch", "prune"),
    "distill": ("model", "data", "parallel", "batch", "train", "distill"),
    "report": ("model", "data", "parallel", "batch", "report"),
    "export": ("export",),
}
_KIND_INPUTS = {"finetune": ("model",), "prune": ("model",), "distill": ("student", "teacher")}
_KIND_OUTPUTS = {
    "import": ("model",),
    "finetune": ("model", "log_dir"),
    "prune": ("model",),
    "distill": ("model", "log_dir"),
    "report": ("plot", "summary_md", "summary_json"),
}
PRUNE_TARGETS = ("target_ffn_hidden_size", "target_hidden_size", "target_num_attention_heads",
                 "target_num_query_groups", "target_num_layers")


class ConfigError(ValueError):
    """The stage JSON breaks the contract; the job exits with EXIT_CONFIG before touching anything."""


@dataclass(frozen=True)
class StageConfig:
    """One stage's JSON. Sections a kind does not use are None."""

    path: Path
    raw: dict

    def __getattr__(self, name: str) -> Any:
        if name in {"stage", "kind", "run_id", "run_dir", "markers_dir", "work_dir", "inputs", "outputs",
                    "model", "tokenizer", "data", "parallel", "batch", "train", "prune", "distill",
                    "report", "export"}:
            return self.raw.get(name)
        raise AttributeError(name)

    @property
    def stage_dir(self) -> Path:
        """Scratch space of this stage (index caches, generated configs) inside the run's work dir."""
        return Path(self.work_dir) / self.stage


def seq_length(cfg: StageConfig) -> int:
    """The stage's sequence length: its own `train.seq_length` / `prune.seq_length` when the planner
    shortened it (unfused attention at 8192 may not fit), else `model.seq_length`."""
    for section in (cfg.train, cfg.prune):
        if section and section.get("seq_length"):
            return section["seq_length"]
    return cfg.model["seq_length"]


def _require(obj: dict, keys: Sequence[str], where: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")


def _check_absolute(value: Any, where: str) -> None:
    if not isinstance(value, str) or not os.path.isabs(value):
        raise ConfigError(f"{where}: expected an absolute path, got {value!r}")


def validate(raw: dict) -> None:
    """Check the schema a job relies on: required keys per kind, absolute paths, consistent plan."""
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(f"schema_version must be {SCHEMA_VERSION}, got {raw.get('schema_version')!r}")
    _require(raw, ("run_id", "run_dir", "stage", "kind", "markers_dir", "work_dir", "inputs", "outputs"), "config")
    kind = raw["kind"]
    if kind not in _KIND_SECTIONS:
        raise ConfigError(f"unknown kind {kind!r}")
    for key in ("run_dir", "markers_dir", "work_dir"):
        _check_absolute(raw[key], key)
    for section in ("inputs", "outputs"):
        for key, value in raw[section].items():
            _check_absolute(value, f"{section}.{key}")
    _require(raw["inputs"], _KIND_INPUTS.get(kind, ()), "inputs")
    _require(raw["outputs"], _KIND_OUTPUTS.get(kind, ()), "outputs")
    for section in _KIND_SECTIONS[kind]:
        if not isinstance(raw.get(section), dict):
            raise ConfigError(f"kind {kind} needs the {section!r} section")
        _require(raw[section], _SECTION_KEYS[section], section)

    if "data" in _KIND_SECTIONS[kind]:
        _require(raw["data"]["prefixes"], DATA_ROLES, "data.prefixes")
        for role, prefix in raw["data"]["prefixes"].items():
            _check_absolute(prefix, f"data.prefixes.{role}")
    if kind == "data":
        _require(raw["data"]["split_map"], DATA_ROLES, "data.split_map")
        for role, path in raw["data"]["source"].get("files", {}).items():
            _check_absolute(path, f"data.source.files.{role}")
        if raw["tokenizer"]["train_bpe_vocab"]:
            _check_absolute(raw["tokenizer"]["path_or_id"], "tokenizer.path_or_id (trained BPE)")
    if "parallel" in _KIND_SECTIONS[kind]:
        p, b = raw["parallel"], raw["batch"]
        if p["tp"] * p["pp"] * p["cp"] * p["dp"] != p["nodes"] * p["gpus_per_node"]:
            raise ConfigError(f"parallel: tp*pp*cp*dp != nodes*gpus_per_node in {p}")
        if b["global_batch_size"] % (b["micro_batch_size"] * p["dp"]):
            raise ConfigError(f"batch: global_batch_size not a multiple of micro_batch_size*dp ({b}, dp={p['dp']})")
    if kind == "prune":
        pr = raw["prune"]
        targets = [k for k in PRUNE_TARGETS if pr.get(k) is not None]
        if bool(pr.get("drop_layers")) == bool(targets):
            raise ConfigError("prune: give either drop_layers or target_* sizes, not both or neither")
        if not pr.get("drop_layers") and raw["parallel"]["tp"] != 1:
            raise ConfigError("prune: width pruning runs with tp=1 (ModelOpt minitron needs TP=1)")
    if kind == "import" and raw["model"]["source"].startswith("nemo:"):
        raise ConfigError("model.source is a NeMo checkpoint: the plan must skip the import stage")
    if kind == "export":
        for name, path in raw["export"]["students"].items():
            _check_absolute(path, f"export.students.{name}")
        _require(raw["outputs"], tuple(raw["export"]["students"]), "outputs (one HF dir per exported student)")


def load_config(argv: Sequence[str] | None = None) -> StageConfig:
    """Parse `--config PATH`, read the JSON and validate it."""
    parser = argparse.ArgumentParser(description="Run one pipeline stage from its stage config.")
    parser.add_argument("--config", required=True, type=Path, help="RUN_DIR/stages/<stage>.json")
    args = parser.parse_args(argv)
    try:
        raw = json.loads(args.config.read_text())
    except (OSError, json.JSONDecodeError) as exc:
        raise ConfigError(f"cannot read {args.config}: {exc}") from exc
    validate(raw)
    return StageConfig(path=args.config.resolve(), raw=raw)


def _env_int(*names: str, default: int) -> int:
    for name in names:
        if os.environ.get(name):
            return int(os.environ[name])
    return default


def global_rank() -> int:
    """Rank of this process: torchrun sets RANK, a bare srun task SLURM_PROCID."""
    return _env_int("RANK", "SLURM_PROCID", default=0)


def world_size() -> int:
    return _env_int("WORLD_SIZE", "SLURM_NTASKS", default=1)


def local_rank() -> int:
    return _env_int("LOCAL_RANK", "SLURM_LOCALID", default=0)


def is_rank_zero() -> bool:
    return global_rank() == 0


def marker_path(cfg: StageConfig, suffix: str) -> Path:
    return Path(cfg.markers_dir) / f"{cfg.stage}.{suffix}"


def write_json_atomic(path: Path, obj: Any) -> None:
    """Temp file in the same directory + rename, so a reader never sees half a marker."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, 0o644)
        with os.fdopen(fd, "w") as f:
            json.dump(obj, f, indent=2)
            f.write("\n")
        os.replace(tmp, path)
    except BaseException:
        os.unlink(tmp)
        raise


def is_complete(cfg: StageConfig) -> bool:
    """Done = complete marker for these very outputs, and every one of them exists."""
    try:
        marker = json.loads(marker_path(cfg, "complete").read_text())
    except (OSError, json.JSONDecodeError):
        return False
    outputs = marker.get("outputs")
    return outputs == cfg.outputs and all(os.path.exists(p) for p in outputs.values())


def write_complete(cfg: StageConfig) -> None:
    """Last act of a successful job: check the outputs really exist, then mark the stage done."""
    missing = [f"{k}={v}" for k, v in cfg.outputs.items() if not os.path.exists(v)]
    if missing:
        raise RuntimeError(f"stage {cfg.stage} finished but outputs are missing: {', '.join(missing)}")
    write_json_atomic(marker_path(cfg, "complete"), {"outputs": cfg.outputs, "finished_at": round(time.time(), 3)})


def progress_line(step: int, total: int, train_loss: float | None = None, val_loss: float | None = None) -> str:
    parts = [PROGRESS_TAG, f"step={step}", f"total={total}"]
    if train_loss is not None:
        parts.append(f"train_loss={train_loss:.4f}")
    if val_loss is not None:
        parts.append(f"val_loss={val_loss:.4f}")
    return " ".join(parts)


def report_progress(step: int, total: int, train_loss: float | None = None, val_loss: float | None = None) -> None:
    """Print a progress line from global rank 0 only, flushed so `minitron status` sees it live."""
    if is_rank_zero():
        print(progress_line(step, total, train_loss, val_loss), flush=True)


def apply_env_defaults(cfg: StageConfig) -> None:
    """NVIDIA's launch defaults (NeMo-Run executors / PerfEnvPlugin); the profile may override them."""
    os.environ.setdefault("TORCH_NCCL_AVOID_RECORD_STREAMS", "1")
    os.environ.setdefault("NCCL_NVLS_ENABLE", "0")
    parallel = cfg.parallel or {}
    if parallel.get("tp", 1) > 1 or parallel.get("cp", 1) > 1:
        os.environ.setdefault("CUDA_DEVICE_MAX_CONNECTIONS", "1")


@lru_cache(maxsize=1)
def te_available() -> bool:
    """Same test NeMo uses for HAVE_TE (a plain import), so our layer-spec choice agrees with NeMo's."""
    try:
        import transformer_engine  # noqa: F401
    except Exception:  # a broken TE install counts as absent, as in nemo.utils.import_utils.safe_import
        return False
    return True


def _requeue_on_signal(signum: int, _frame: Any) -> None:
    log.warning("signal %d before training started: nothing new to save, exiting %d for requeue", signum, EXIT_REQUEUE)
    raise SystemExit(EXIT_REQUEUE)


def install_requeue_handler() -> None:
    """SIGUSR1 while loading = exit 85 at once; during training NeMo's PreemptionCallback takes over."""
    signal.signal(signal.SIGUSR1, _requeue_on_signal)


def mark_continue(cfg: StageConfig) -> None:
    """Rank 0 leaves `<stage>.continue` before an exit 85: the script trusts it even when srun reports
    another code (kill-on-bad-exit can terminate the ranks that had not exited yet) or torchrun masks it."""
    if is_rank_zero():
        write_json_atomic(marker_path(cfg, "continue"), {"time": time.time()})


def run_stage(kind: str, body: Callable[[StageConfig], None], argv: Sequence[str] | None = None) -> int:
    """Common frame of every stage: config, idempotency, env, body, complete marker. Returns the exit code."""
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s", stream=sys.stderr)
    try:
        cfg = load_config(argv)
        if cfg.kind != kind:
            raise ConfigError(f"config is for kind {cfg.kind!r}, this entrypoint runs {kind!r}")
    except ConfigError as exc:
        log.error("invalid stage config: %s", exc)
        return EXIT_CONFIG
    if is_complete(cfg):
        log.info("stage %s already complete (marker and outputs present); nothing to do", cfg.stage)
        return 0
    apply_env_defaults(cfg)
    if kind in TRAINING_KINDS:
        install_requeue_handler()
    log.info("stage %s (%s) starting on rank %d/%d", cfg.stage, kind, global_rank(), world_size())
    try:
        body(cfg)
    except SystemExit as exc:
        if exc.code == EXIT_REQUEUE:
            mark_continue(cfg)
        raise
    if is_rank_zero():
        write_complete(cfg)
        log.info("stage %s complete", cfg.stage)
    return 0
