"""The typed, versioned stage config: what the launcher writes for a stage and the job reads.

Which sections, inputs and outputs a stage's config must have comes from its kind (kinds.py); what
each section must hold, and the rules between values, are checked here by section. The launcher
writes through `stage_config_text`/`write_stage_config`, the jobs read through `read_stage_config`:
both validate, so a config that breaks the contract never reaches a GPU.
"""

from __future__ import annotations

import json
import os
import re
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Callable, Mapping, Optional, Sequence
from urllib.parse import unquote, urlsplit

from .files import read_bounded, write_json_atomic
from .kinds import BY_NAME, StageKind
from .layout import RunLayout

SCHEMA_VERSION = 3
DATA_ROLES = ("train", "validation", "test")
PRUNE_TARGETS = ("target_ffn_hidden_size", "target_hidden_size", "target_num_attention_heads",
                 "target_num_query_groups", "target_num_layers")
ATTENTION = ("fused", "unfused")   # fused: Transformer Engine's layer spec; unfused: megatron-core's local spec
PRECISIONS = ("bf16-mixed", "16-mixed", "32")
DEVICES = ("gpu", "cpu")   # engine.device (optional, gpu when absent): cpu = one process on a node's CPUs
MAX_STAGE_CONFIG_BYTES = 1024 * 1024
# tracking (training kinds only): the experiment trackers the trainer logs to besides TensorBoard, each through
# Lightning's own logger; the probe reports each under its name (jobs/stages/probe.py PACKAGES)
TRACKERS = ("wandb", "mlflow")
WANDB_MODES = ("online", "offline")
MLFLOW_SCHEMES = ("file", "http", "https")  # what mlflow-skinny stores to without a database driver
RUN_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")  # quoted as is in MLflow searches


class ConfigError(ValueError):
    """The stage config breaks this contract; the job exits StageExit.CONFIG before touching anything."""


# Keys each section must have; a missing one is a launcher bug and fails before any GPU work starts.
SECTION_KEYS: dict[str, tuple[str, ...]] = {
    "model": ("source", "nemo_config", "num_layers", "hidden_size", "ffn_hidden_size",
              "num_attention_heads", "num_query_groups", "vocab_size", "seq_length", "rotary_base"),
    "tokenizer": ("path_or_id", "train_bpe_vocab"),
    "data": ("source", "text_key", "split_map", "workers", "append_eod", "prefixes"),
    "parallel": ("nodes", "gpus_per_node", "tp", "pp", "cp", "dp", "sequence_parallel"),
    "batch": ("micro_batch_size", "global_batch_size"),
    "train": ("steps", "lr", "min_lr", "warmup_steps", "val_check_interval", "limit_val_batches",
              "log_every_n_steps", "ckpt_every_n_steps", "seed", "weight_decay", "adam_beta1", "adam_beta2",
              "clip_grad", "recompute"),
    "prune": ("num_train_samples",),
    "distill": ("skip_lm_loss", "kd_loss_scale", "logit_layers"),
    "student_shape": ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups"),
    "report": ("limit_val_batches",),
    "engine": ("attention", "precision"),
    "runtime": ("stall_timeout_s",),
    "probe": ("role", "job_dir"),
    "tracking": ("run_name",),
}
# runtime: how a training job watches itself; tracking: where it logs metrics (both written when the profile asks)
OPTIONAL_SECTIONS = ("runtime", "tracking")
TRACKER_KEYS: dict[str, tuple[str, ...]] = {"wandb": ("project", "mode", "id"),
                                            "mlflow": ("tracking_uri", "experiment")}


@dataclass(frozen=True)
class StageConfig:
    """One stage's config. Sections a kind does not use are None; sections stay plain mappings so the
    JSON a user reads is the JSON a job reads."""

    run_id: str
    run_dir: str
    stage: str
    kind: str
    markers_dir: str
    work_dir: str
    inputs: dict
    outputs: dict
    schema_version: int = SCHEMA_VERSION
    model: Optional[dict] = None
    tokenizer: Optional[dict] = None
    data: Optional[dict] = None
    parallel: Optional[dict] = None
    batch: Optional[dict] = None
    train: Optional[dict] = None
    prune: Optional[dict] = None
    distill: Optional[dict] = None
    student_shape: Optional[dict] = None
    report: Optional[dict] = None
    engine: Optional[dict] = None         # how the job runs its model: attention path, precision
    runtime: Optional[dict] = None        # {"stall_timeout_s": ...}: how the job watches itself
    tracking: Optional[dict] = None       # {"run_name", "wandb"?, "mlflow"?}: W&B / MLflow of a training stage
    probe: Optional[dict] = None          # kind probe: {"role": "gpu"|"cpu", "job_dir": ..., ...}
    path: Optional[Path] = field(default=None, compare=False)

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

    @property
    def stage_kind(self) -> StageKind:
        return BY_NAME[self.kind]

    @property
    def stage_dir(self) -> Path:
        """Scratch space of this stage (index caches, generated configs) inside the run's work dir."""
        return Path(self.work_dir) / self.stage

    def to_json(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)
                if f.name != "path" and getattr(self, f.name) is not None}

    @classmethod
    def from_json(cls, raw: Mapping[str, Any], path: Optional[Path] = None) -> "StageConfig":
        validate(raw)
        known = {f.name for f in fields(cls)} - {"path"}
        return cls(**{k: v for k, v in raw.items() if k in known}, path=path)


def seq_length(cfg: StageConfig) -> int:
    """The stage's sequence length: its own `train.seq_length` / `prune.seq_length` when the planner
    shortened it (unfused attention at 8192 may not fit), else `model.seq_length`."""
    for section in (cfg.train, cfg.prune):
        if section and section.get("seq_length"):
            return section["seq_length"]
    return cfg.model["seq_length"]


def _require(obj: Mapping, keys: Sequence[str], where: str) -> None:
    missing = [k for k in keys if k not in obj]
    if missing:
        raise ConfigError(f"{where}: missing key(s) {', '.join(missing)}")


def _check_absolute(value: Any, where: str) -> None:
    if not isinstance(value, str) or not os.path.isabs(value):
        raise ConfigError(f"{where}: expected an absolute path, got {value!r}")


# -- rules of one section (given the whole config, for rules between sections) ------------------------
def _data(raw: Mapping[str, Any]) -> None:
    data = raw["data"]
    _require(data["split_map"], DATA_ROLES, "data.split_map")
    _require(data["prefixes"], DATA_ROLES, "data.prefixes")
    for role, prefix in data["prefixes"].items():
        _check_absolute(prefix, f"data.prefixes.{role}")
    for role, path in (data["source"].get("files") or {}).items():
        _check_absolute(path, f"data.source.files.{role}")


def _tokenizer(raw: Mapping[str, Any]) -> None:
    if raw["tokenizer"]["train_bpe_vocab"]:
        _check_absolute(raw["tokenizer"]["path_or_id"], "tokenizer.path_or_id (trained BPE)")


def _parallel(raw: Mapping[str, Any]) -> None:
    p = raw["parallel"]
    if p["tp"] * p["pp"] * p["cp"] * p["dp"] != p["nodes"] * (p["gpus_per_node"] or 1):
        raise ConfigError(f"parallel: tp*pp*cp*dp != nodes*gpus_per_node (1 process per node without GPUs) in {p}")
    b = raw.get("batch")
    if isinstance(b, Mapping) and b["global_batch_size"] % (b["micro_batch_size"] * p["dp"]):
        raise ConfigError(f"batch: global_batch_size not a multiple of micro_batch_size*dp ({b}, dp={p['dp']})")


def _prune(raw: Mapping[str, Any]) -> None:
    pr = raw["prune"]
    targets = [k for k in PRUNE_TARGETS if pr.get(k) is not None]
    if bool(pr.get("drop_layers")) == bool(targets):
        raise ConfigError("prune: give either drop_layers or target_* sizes, not both or neither")
    if not pr.get("drop_layers") and isinstance(raw.get("parallel"), Mapping) and raw["parallel"]["tp"] != 1:
        raise ConfigError("prune: width pruning runs with tp=1 (ModelOpt minitron needs TP=1)")


def _engine(raw: Mapping[str, Any]) -> None:
    engine = raw["engine"]
    if engine["attention"] not in ATTENTION:
        raise ConfigError(f"engine.attention must be one of {', '.join(ATTENTION)}, got {engine['attention']!r}")
    if engine["precision"] not in PRECISIONS:
        raise ConfigError(f"engine.precision must be one of {', '.join(PRECISIONS)}, got {engine['precision']!r}")
    if engine.get("device", "gpu") not in DEVICES:
        raise ConfigError(f"engine.device must be one of {', '.join(DEVICES)}, got {engine['device']!r}")
    if engine.get("device") == "cpu" and engine["precision"] != "32":
        raise ConfigError(f"engine.device cpu runs precision 32, got {engine['precision']!r}")
    parallel = raw.get("parallel")
    if engine.get("device") == "cpu" and isinstance(parallel, Mapping) and parallel.get("gpus_per_node"):
        raise ConfigError(f"engine.device cpu with parallel.gpus_per_node={parallel['gpus_per_node']}")


def _probe(raw: Mapping[str, Any]) -> None:
    if raw["probe"]["role"] not in ("gpu", "cpu"):
        raise ConfigError(f"probe.role must be gpu or cpu, got {raw['probe']['role']!r}")
    _check_absolute(raw["probe"]["job_dir"], "probe.job_dir")


def _tracking(raw: Mapping[str, Any]) -> None:
    """Only a kind that trains logs metrics; each tracker holds its keys, a known W&B mode and an MLflow URI
    mlflow-skinny can store to (a `file:` one absolute: a relative path would land in each job's working directory)."""
    tracking = raw["tracking"]
    if not BY_NAME[raw["kind"]].trains:
        raise ConfigError(f"tracking: kind {raw['kind']} does not train, so it logs no metrics")
    if not isinstance(tracking["run_name"], str) or not RUN_NAME.match(tracking["run_name"]):
        raise ConfigError(f"tracking.run_name must be <run id>/<stage> in letters, digits and ._-, "
                          f"got {tracking['run_name']!r}")
    unknown = sorted(set(tracking) - {"run_name", *TRACKERS})
    if unknown:
        raise ConfigError(f"tracking: unknown key(s) {', '.join(unknown)} (trackers: {', '.join(TRACKERS)})")
    for tracker in TRACKERS:
        if tracker in tracking:
            if not isinstance(tracking[tracker], Mapping):
                raise ConfigError(f"tracking.{tracker}: expected a mapping")
            _require(tracking[tracker], TRACKER_KEYS[tracker], f"tracking.{tracker}")
    if "wandb" in tracking and tracking["wandb"]["mode"] not in WANDB_MODES:
        raise ConfigError(f"tracking.wandb.mode must be one of {', '.join(WANDB_MODES)}, "
                          f"got {tracking['wandb']['mode']!r}")
    if "mlflow" in tracking:
        uri = str(tracking["mlflow"]["tracking_uri"])
        scheme = uri.partition(":")[0]
        if scheme not in MLFLOW_SCHEMES:
            raise ConfigError(f"tracking.mlflow.tracking_uri must start with "
                              f"{', '.join(s + ':' for s in MLFLOW_SCHEMES)}, got {uri!r}")
        if scheme == "file":
            _check_absolute(file_uri_path(uri), "tracking.mlflow.tracking_uri (its path)")


def file_uri_path(uri: str) -> Optional[str]:
    """The path of a `file:` URI on this host (`file:///abs`, `file:/abs`), or None when it names another host
    or none at all (`file://rel/path` reads `rel` as a host name)."""
    parts = urlsplit(uri)
    return unquote(parts.path) if parts.netloc in ("", "localhost") and parts.path else None


SECTION_RULES: dict[str, Callable[[Mapping[str, Any]], None]] = {
    "data": _data, "tokenizer": _tokenizer, "parallel": _parallel, "prune": _prune, "engine": _engine,
    "probe": _probe, "tracking": _tracking,
}


def validate(raw: Mapping[str, Any]) -> None:
    """Check what a job relies on: version, the kind's sections, inputs and outputs, absolute paths, and the
    rules of each section."""
    if not isinstance(raw, Mapping):
        raise ConfigError("the stage config is not a JSON object")
    if raw.get("schema_version") != SCHEMA_VERSION:
        raise ConfigError(f"schema_version must be {SCHEMA_VERSION}, got {raw.get('schema_version')!r} "
                          f"(the run was written by another launcher version: resubmit it)")
    _require(raw, ("run_id", "run_dir", "stage", "kind", "markers_dir", "work_dir", "inputs", "outputs"), "config")
    known = {f.name for f in fields(StageConfig)} - {"path"}
    unknown = sorted(set(raw) - known)
    if unknown:
        raise ConfigError(f"config: unknown key(s) {', '.join(unknown)}")
    stage_kind = BY_NAME.get(raw["kind"])
    if stage_kind is None:
        raise ConfigError(f"unknown kind {raw['kind']!r} (known: {', '.join(BY_NAME)})")
    for key in ("run_dir", "markers_dir", "work_dir"):
        _check_absolute(raw[key], key)
    for group in ("inputs", "outputs"):
        if not isinstance(raw[group], Mapping):
            raise ConfigError(f"{group}: expected a mapping")
        for key, value in raw[group].items():
            _check_absolute(value, f"{group}.{key}")
    _require(raw["inputs"], [i.name for i in stage_kind.inputs if not i.optional and i.each is None], "inputs")
    _require(raw["outputs"], [o.name for o in stage_kind.outputs if o.when is None and o.each is None], "outputs")
    extra = sorted((set(SECTION_KEYS) - set(stage_kind.sections) - set(OPTIONAL_SECTIONS)) & set(raw))
    if extra:
        raise ConfigError(f"kind {stage_kind.name} does not read the section(s) {', '.join(extra)}")
    for section in stage_kind.sections:
        if not isinstance(raw.get(section), Mapping):
            raise ConfigError(f"kind {stage_kind.name} needs the {section!r} section")
        _require(raw[section], SECTION_KEYS[section], section)
    for section in OPTIONAL_SECTIONS:
        if raw.get(section) is not None:
            if not isinstance(raw[section], Mapping):
                raise ConfigError(f"{section}: expected a mapping")
            _require(raw[section], SECTION_KEYS[section], section)
    for section in (*stage_kind.sections, *(s for s in OPTIONAL_SECTIONS if raw.get(s) is not None)):
        rule = SECTION_RULES.get(section)
        if rule is not None:
            rule(raw)


def write_stage_config(path: str | Path, config: StageConfig, mode: int = 0o600) -> None:
    """Write a stage config: validated first, then written atomically."""
    data = config.to_json()
    validate(data)
    write_json_atomic(path, data, mode=mode)


def stage_config_text(config: StageConfig) -> str:
    """The JSON text of a validated config, for writers that lay out a whole run directory at once."""
    data = config.to_json()
    validate(data)
    return json.dumps(data, indent=2) + "\n"


def read_stage_config(path: str | Path) -> StageConfig:
    """The jobs' only way to read a stage config: parsed and validated against this contract."""
    path = Path(path)
    try:
        raw = json.loads(read_bounded(path, MAX_STAGE_CONFIG_BYTES))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from None
    return StageConfig.from_json(raw, path=path.resolve())
