"""The launcher ↔ jobs contract, written down once (docs/stage-config.md). Standard library only.

Both sides import this module and nothing else of each other: the launcher (login node, no torch)
writes stage configs and reads markers and progress lines through it; the jobs (inside the
container) read stage configs and write markers and progress lines through it. It holds:

- the run-directory layout (`RunLayout`),
- the marker files, their names and formats (`Marker`, `read_markers`, `write_*`),
- the exit codes a stage may use (`StageExit`),
- the progress line (`progress_line`, `parse_progress`),
- the typed, versioned stage config (`StageConfig`, `write_stage_config`, `read_stage_config`).
"""

from __future__ import annotations

import enum
import json
import os
import re
import tempfile
import time
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any, Iterable, Mapping, Optional, Sequence

SCHEMA_VERSION = 2
DATA_ROLES = ("train", "validation", "test")
TRAINING_KINDS = ("finetune", "distill")
STAGE_KINDS = ("data", "import", "finetune", "prune", "distill", "report", "export")
PROBE_KIND = "probe"  # `minitron check --probe`: a one-stage run that reports what the container offers (jobs/probe.py)
PRUNE_TARGETS = ("target_ffn_hidden_size", "target_hidden_size", "target_num_attention_heads",
                 "target_num_query_groups", "target_num_layers")


class StageExit(enum.IntEnum):
    """The exit codes a stage process may use; anything else non-zero is a failure too."""

    OK = 0
    FAILED = 1         # an exception escaped the stage
    CONFIG = 2         # the stage config breaks this contract; nothing was touched
    CONTINUE = 85      # a checkpoint was saved before the time limit (or a stall): continue the stage


# --------------------------------------------------------------------------------------- layout
class RunLayout:
    """Where everything of one run lives; the one place that knows the run directory's layout."""

    SUBDIRS = ("stages", "scripts", "logs", "markers", "work")

    def __init__(self, run_dir: str):
        self.run_dir = run_dir
        self.code = os.path.join(run_dir, "code")
        self.stages = os.path.join(run_dir, "stages")
        self.scripts = os.path.join(run_dir, "scripts")
        self.logs = os.path.join(run_dir, "logs")
        self.markers = os.path.join(run_dir, "markers")
        self.work = os.path.join(run_dir, "work")
        self.local = os.path.join(run_dir, "local")  # the local executor's supervisor state
        self.state = os.path.join(run_dir, "state.json")
        self.lock = os.path.join(run_dir, "state.lock")
        self.plan = os.path.join(run_dir, "plan.json")
        self.profile = os.path.join(run_dir, "profile.yaml")
        self.recipe = os.path.join(run_dir, "recipe.yaml")
        self.inputs = os.path.join(run_dir, "inputs.json")

    def stage_config(self, stage: str) -> str:
        return os.path.join(self.stages, f"{stage}.json")

    def script(self, stage: str) -> str:
        return os.path.join(self.scripts, f"{stage}.sh")

    def stage_work(self, stage: str) -> str:
        return os.path.join(self.work, stage)

    def model_path(self, stage: str) -> str:
        return os.path.join(self.work, stage, "model")

    def marker(self, stage: str, kind: "Marker") -> str:
        return os.path.join(self.markers, f"{stage}.{kind.value}")

    def slurm_log_pattern(self, stage: str) -> str:
        """sbatch's --output: one log per job id (`%j`), appended to across requeues."""
        return os.path.join(self.logs, f"{stage}-%j.out")

    def slurm_log(self, stage: str, job_id: str) -> str:
        return os.path.join(self.logs, f"{stage}-{job_id}.out")

    def local_log(self, stage: str) -> str:
        return os.path.join(self.logs, f"{stage}.log")

    def stage_log(self, stage: str, job_id: Optional[str]) -> Optional[str]:
        """The stage's current log: the Slurm job's, else the local executor's, else its newest."""
        for path in ([self.slurm_log(stage, job_id)] if job_id else []) + [self.local_log(stage)]:
            if os.path.isfile(path):
                return path
        try:
            names = [n for n in os.listdir(self.logs) if n.startswith(f"{stage}-") and n.endswith(".out")]
        except OSError:
            return None
        paths = [os.path.join(self.logs, n) for n in names]
        paths = [p for p in paths if os.path.isfile(p)]
        return max(paths, key=os.path.getmtime) if paths else None


# --------------------------------------------------------------------------------------- markers
class Marker(enum.Enum):
    """Marker files in RUN_DIR/markers/<stage>.<value>; formats in docs/stage-config.md."""

    STARTED = "started"     # the script, before the command: `job_id host unix_time attempt`
    FINISHED = "finished"   # the script, after the command: the exit code the scheduler saw
    COMPLETE = "complete"   # the job, last: JSON {"outputs": {...}, "finished_at": t}
    CONTINUE = "continue"   # the job, before exiting CONTINUE: JSON {"time": t, "reason": ...}
    FAILED = "failed"       # the first rank that fails: JSON {"exit_code", "exception", "rank", ...}


# Cleared by the script at every (re)start, so a marker always describes the current attempt.
PER_ATTEMPT_MARKERS = (Marker.FINISHED, Marker.CONTINUE, Marker.FAILED)
MAX_MARKER_BYTES = 64 * 1024
MAX_EXCEPTION_CHARS = 400


@dataclass(frozen=True)
class Started:
    job_id: str
    host: str
    time: float
    attempt: int


@dataclass(frozen=True)
class Failure:
    """What the first failing rank recorded about itself."""

    exit_code: int
    exception: Optional[str]
    rank: int
    host: str
    job_id: Optional[str]
    time: float


@dataclass
class Markers:
    started: Optional[Started] = None
    finished_rc: Optional[int] = None
    complete: bool = False                      # the marker exists and lists outputs that all exist
    outputs: dict[str, str] = field(default_factory=dict)
    finished_at: Optional[float] = None
    continue_requested: bool = False
    failure: Optional[Failure] = None


def read_bounded(path: str | Path, limit: int) -> str:
    """A regular file's text, never through a symlink; OSError if it is anything else or over `limit` bytes."""
    fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    try:
        if not os.path.stat.S_ISREG(os.fstat(fd).st_mode):
            raise OSError(f"{path} is not a regular file")
        chunks, size = [], 0
        while size <= limit:
            chunk = os.read(fd, limit + 1 - size)
            if not chunk:
                break
            chunks.append(chunk)
            size += len(chunk)
    finally:
        os.close(fd)
    if size > limit:
        raise OSError(f"{path} is larger than {limit} bytes")
    return b"".join(chunks).decode("utf-8", "replace")


def _read_small(path: str) -> Optional[str]:
    """A marker's text, or None: missing, not a regular file (never followed through a symlink), or oversized."""
    try:
        return read_bounded(path, MAX_MARKER_BYTES)
    except OSError:
        return None


def _read_json(path: str) -> Optional[dict]:
    text = _read_small(path)
    if text is None:
        return None
    try:
        data = json.loads(text)
    except ValueError:
        return None
    return data if isinstance(data, dict) else None


def parse_started(text: str) -> Optional[Started]:
    parts = text.split()
    if len(parts) < 4:
        return None
    try:
        return Started(job_id=parts[0], host=parts[1], time=float(parts[2]), attempt=int(parts[3]))
    except ValueError:
        return None


def parse_finished(text: str) -> Optional[int]:
    try:
        return int(text.strip())
    except ValueError:
        return None


def _as_failure(data: Optional[dict]) -> Optional[Failure]:
    if not data or not isinstance(data.get("exit_code"), int):
        return None
    exception = data.get("exception")
    return Failure(exit_code=data["exit_code"],
                   exception=exception[:MAX_EXCEPTION_CHARS] if isinstance(exception, str) else None,
                   rank=data.get("rank") if isinstance(data.get("rank"), int) else -1,
                   host=str(data.get("host", "")), job_id=str(data["job_id"]) if data.get("job_id") else None,
                   time=float(data.get("time") or 0.0))


def read_markers(layout: RunLayout, stage: str) -> Markers:
    markers = Markers()
    text = _read_small(layout.marker(stage, Marker.STARTED))
    markers.started = parse_started(text) if text is not None else None
    text = _read_small(layout.marker(stage, Marker.FINISHED))
    markers.finished_rc = parse_finished(text) if text is not None else None
    markers.continue_requested = os.path.lexists(layout.marker(stage, Marker.CONTINUE))
    markers.failure = _as_failure(_read_json(layout.marker(stage, Marker.FAILED)))
    complete = _read_json(layout.marker(stage, Marker.COMPLETE))
    if complete is not None:
        outputs = complete.get("outputs")
        if isinstance(outputs, dict):
            markers.outputs = {k: v for k, v in outputs.items() if isinstance(k, str) and isinstance(v, str)}
            markers.complete = all(os.path.exists(p) for p in markers.outputs.values())
        finished_at = complete.get("finished_at")
        markers.finished_at = float(finished_at) if isinstance(finished_at, (int, float)) else None
    return markers


def write_text_atomic(path: str | Path, text: str, mode: int = 0o644) -> None:
    """Temp file in the same directory (O_EXCL), its mode set explicitly, fsync, rename over the
    target (a link there is replaced, never followed), fsync the directory: a reader never sees half a
    file, and the rename survives a power cut."""
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        os.fchmod(fd, mode)
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, path)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    dir_fd = os.open(path.parent, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def write_json_atomic(path: str | Path, obj: Any, mode: int = 0o644) -> None:
    """JSON through write_text_atomic, creating the directory if need be (jobs write into the run's)."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    write_text_atomic(path, json.dumps(obj, indent=2) + "\n", mode)


def write_complete(layout: RunLayout, stage: str, outputs: Mapping[str, str]) -> None:
    missing = [f"{k}={v}" for k, v in outputs.items() if not os.path.exists(v)]
    if missing:
        raise RuntimeError(f"stage {stage} finished but outputs are missing: {', '.join(missing)}")
    write_json_atomic(layout.marker(stage, Marker.COMPLETE),
                      {"outputs": dict(outputs), "finished_at": round(time.time(), 3)})


def write_continue(layout: RunLayout, stage: str, reason: str = "time limit") -> None:
    write_json_atomic(layout.marker(stage, Marker.CONTINUE), {"time": round(time.time(), 3), "reason": reason})


def write_failure(layout: RunLayout, stage: str, exit_code: int, exception: Optional[str], rank: int, host: str,
                  job_id: Optional[str]) -> bool:
    """Record a failing rank; only the first one to fail wins (O_EXCL). Returns whether this one did."""
    path = layout.marker(stage, Marker.FAILED)
    record = {"exit_code": int(exit_code), "exception": (exception or "")[:MAX_EXCEPTION_CHARS] or None,
              "rank": rank, "host": host, "job_id": job_id, "time": round(time.time(), 3)}
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o644)
    except OSError:
        return False
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        json.dump(record, handle)
        handle.write("\n")
    return True


# --------------------------------------------------------------------------------------- progress
PROGRESS_TAG = "MINITRON_PROGRESS"
_PROGRESS = re.compile(PROGRESS_TAG + r"\s+(.*)")


@dataclass
class Progress:
    step: Optional[int] = None
    total: Optional[int] = None
    train_loss: Optional[float] = None
    val_loss: Optional[float] = None
    time: Optional[float] = None          # when the last step was reported (Unix time)
    step_time_s: Optional[float] = None   # median seconds per step between reports


_last_progress: Optional[float] = None


def note_progress(now: Optional[float] = None) -> None:
    """Every rank calls this when it finishes a step (jobs.common.report_progress does), so the stall
    watchdog of jobs.task sees progress on ranks that print nothing."""
    global _last_progress
    _last_progress = time.time() if now is None else now


def last_progress() -> Optional[float]:
    return _last_progress


def progress_line(step: int, total: int, train_loss: Optional[float] = None, val_loss: Optional[float] = None,
                  now: Optional[float] = None) -> str:
    """`MINITRON_PROGRESS step=12 total=30 train_loss=2.3451 time=1764600000.0`: one line per event."""
    parts = [PROGRESS_TAG, f"step={step}", f"total={total}"]
    if train_loss is not None:
        parts.append(f"train_loss={train_loss:.4f}")
    if val_loss is not None:
        parts.append(f"val_loss={val_loss:.4f}")
    parts.append(f"time={time.time() if now is None else now:.1f}")
    return " ".join(parts)


def parse_progress(lines: Iterable[str]) -> Progress:
    """The latest step, losses and timing from a log's progress lines; malformed lines are skipped."""
    progress = Progress()
    stamps: list[tuple[int, float]] = []
    for line in lines:
        match = _PROGRESS.search(line)
        if not match:
            continue
        values = dict(item.split("=", 1) for item in match.group(1).split() if "=" in item)
        try:
            step = int(values["step"]) if "step" in values else None
            total = int(values["total"]) if "total" in values else None
            train = float(values["train_loss"]) if "train_loss" in values else None
            val = float(values["val_loss"]) if "val_loss" in values else None
            stamp = float(values["time"]) if "time" in values else None
        except ValueError:
            continue
        if step is not None:
            progress.step = step
            if stamp is not None and (not stamps or stamps[-1][0] != step):
                stamps.append((step, stamp))
        if total is not None:
            progress.total = total
        if train is not None:
            progress.train_loss = train
        if val is not None:
            progress.val_loss = val
        if stamp is not None:
            progress.time = stamp
    rates = sorted((t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(stamps, stamps[1:]) if s1 > s0)
    if rates:
        progress.step_time_s = rates[len(rates) // 2]
    return progress


# --------------------------------------------------------------------------------------- stage config
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
              "log_every_n_steps", "ckpt_every_n_steps", "seed", "precision", "weight_decay",
              "adam_beta1", "adam_beta2", "clip_grad"),
    "prune": ("num_train_samples",),
    "distill": ("skip_lm_loss", "kd_loss_scale", "logit_layers"),
    "report": ("stages", "limit_val_batches"),
    "export": ("students",),
    "probe": ("role", "job_dir"),
}
KIND_SECTIONS: dict[str, tuple[str, ...]] = {
    "data": ("tokenizer", "data"),
    "import": ("model", "tokenizer"),
    "finetune": ("model", "data", "parallel", "batch", "train"),
    "prune": ("model", "data", "parallel", "batch", "prune"),
    "distill": ("model", "data", "parallel", "batch", "train", "distill"),
    "report": ("model", "data", "parallel", "batch", "report"),
    "export": ("export",),
    "probe": ("probe",),
}
KIND_INPUTS = {"finetune": ("model",), "prune": ("model",), "distill": ("student", "teacher")}
KIND_OUTPUTS = {
    "import": ("model",),
    "finetune": ("model", "log_dir"),
    "prune": ("model",),
    "distill": ("model", "log_dir"),
    "report": ("plot", "summary_md", "summary_json"),
    "probe": ("report",),
}
OPTIONAL_SECTIONS = ("student_shape", "runtime")


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
    report: Optional[dict] = None
    export: Optional[dict] = None
    student_shape: Optional[dict] = None
    runtime: Optional[dict] = None        # {"stall_timeout_s": ...}: how the job watches itself
    probe: Optional[dict] = None          # kind probe: {"role": "gpu"|"cpu", "job_dir": ..., ...}
    path: Optional[Path] = field(default=None, compare=False)

    @property
    def layout(self) -> RunLayout:
        return RunLayout(self.run_dir)

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


def validate(raw: Mapping[str, Any]) -> None:
    """Check what a job relies on: version, required keys per kind, absolute paths, a consistent plan."""
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
    kind = raw["kind"]
    if kind not in KIND_SECTIONS:
        raise ConfigError(f"unknown kind {kind!r}")
    for key in ("run_dir", "markers_dir", "work_dir"):
        _check_absolute(raw[key], key)
    for section in ("inputs", "outputs"):
        if not isinstance(raw[section], Mapping):
            raise ConfigError(f"{section}: expected a mapping")
        for key, value in raw[section].items():
            _check_absolute(value, f"{section}.{key}")
    _require(raw["inputs"], KIND_INPUTS.get(kind, ()), "inputs")
    _require(raw["outputs"], KIND_OUTPUTS.get(kind, ()), "outputs")
    for section in KIND_SECTIONS[kind]:
        if not isinstance(raw.get(section), Mapping):
            raise ConfigError(f"kind {kind} needs the {section!r} section")
        _require(raw[section], SECTION_KEYS[section], section)
    if "data" in KIND_SECTIONS[kind]:
        _require(raw["data"]["prefixes"], DATA_ROLES, "data.prefixes")
        for role, prefix in raw["data"]["prefixes"].items():
            _check_absolute(prefix, f"data.prefixes.{role}")
    if kind == "data":
        _require(raw["data"]["split_map"], DATA_ROLES, "data.split_map")
        for role, path in (raw["data"]["source"].get("files") or {}).items():
            _check_absolute(path, f"data.source.files.{role}")
        if raw["tokenizer"]["train_bpe_vocab"]:
            _check_absolute(raw["tokenizer"]["path_or_id"], "tokenizer.path_or_id (trained BPE)")
    if "parallel" in KIND_SECTIONS[kind]:
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
    if kind == PROBE_KIND:
        if raw["probe"]["role"] not in ("gpu", "cpu"):
            raise ConfigError(f"probe.role must be gpu or cpu, got {raw['probe']['role']!r}")
        _check_absolute(raw["probe"]["job_dir"], "probe.job_dir")


def write_stage_config(path: str | Path, config: StageConfig, mode: int = 0o600) -> None:
    """The launcher's only way to write a stage config: validated first, then written atomically."""
    data = config.to_json()
    validate(data)
    write_json_atomic(path, data, mode=mode)


def stage_config_text(config: StageConfig) -> str:
    """The JSON text of a validated config, for writers that lay out a whole run directory at once."""
    data = config.to_json()
    validate(data)
    return json.dumps(data, indent=2) + "\n"


MAX_STAGE_CONFIG_BYTES = 1024 * 1024


def read_stage_config(path: str | Path) -> StageConfig:
    """The jobs' only way to read a stage config: parsed and validated against this contract."""
    path = Path(path)
    try:
        raw = json.loads(read_bounded(path, MAX_STAGE_CONFIG_BYTES))
    except (OSError, ValueError) as exc:
        raise ConfigError(f"cannot read {path}: {exc}") from exc
    return StageConfig.from_json(raw, path=path.resolve())
