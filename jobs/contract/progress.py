"""The progress line a training stage prints (rank 0) and status parses, and the per-rank progress clock."""

from __future__ import annotations

import re
import time
from dataclasses import dataclass
from typing import Iterable, Optional

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
    """Every rank calls this when it finishes a step (jobs.runtime.frame.report_progress does), so the stall
    watchdog of jobs.runtime.task sees progress on ranks that print nothing."""
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
    # A pair whose time runs backwards straddles two clocks (a continuation on another node): it says nothing.
    rates = sorted((t1 - t0) / (s1 - s0) for (s0, t0), (s1, t1) in zip(stamps, stamps[1:]) if s1 > s0 and t1 >= t0)
    if rates:
        progress.step_time_s = rates[len(rates) // 2]
    return progress
