"""The marker files of a stage (RUN_DIR/markers/<stage>.<marker>): names, formats, readers, writers.

Formats (docs/stage-config.md): `started` and `finished` are one line each, written by the stage
script (launcher/rendering/templates/_markers.sh.j2, from `STARTED_FIELDS`); `complete`, `continue`
and `failed` are JSON written by the job through the functions here. Each format has one writer.
"""

from __future__ import annotations

import enum
import json
import os
import time
from dataclasses import dataclass, field
from typing import Mapping, Optional

from .files import read_bounded, write_json_atomic
from .layout import RunLayout

class Marker(enum.Enum):
    """Marker files in RUN_DIR/markers/<stage>.<value>; formats in docs/stage-config.md."""

    STARTED = "started"     # the script, before the command: `job_id host unix_time attempt`
    FINISHED = "finished"   # the script, after the command: the exit code the scheduler saw
    COMPLETE = "complete"   # the job, last: JSON {"outputs": {...}, "finished_at": t}
    CONTINUE = "continue"   # the job, before exiting CONTINUE: JSON {"time": t, "reason": ...}
    FAILED = "failed"       # the first rank that fails: JSON {"exit_code", "exception", "rank", ...}


# Cleared by the script at every (re)start, so a marker always describes the current attempt.
PER_ATTEMPT_MARKERS = (Marker.FINISHED, Marker.CONTINUE, Marker.FAILED)
# The `started` line, space-separated, as the stage script writes it (its shell words for each field).
STARTED_FIELDS = ("job_id", "host", "time", "attempt")
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
    if len(parts) < len(STARTED_FIELDS):
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
