"""Everything printed for people: rich tables for plans, submissions, status and runs."""

from __future__ import annotations

import time
from typing import Any


def console() -> Any:
    import sys

    from rich.console import Console
    # Pipes and CI logs get a wide page instead of rich's 80-column default.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 200)


def _tokens(n: int | None) -> str:
    if not n:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def _hours(h: float) -> str:
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


def plan_table(plan: Any, profile: Any) -> None:
    from rich.table import Table

    table = Table(title=f"{plan.recipe} on {profile.source.rsplit('/', 1)[-1]} "
                        f"({profile.nodes} × {profile.gpus_per_node} {profile.gpu.model})", title_justify="left")
    for col in ("stage", "after", "nodes×GPUs", "TP/PP/CP/DP", "MBS/GBS ×acc", "steps", "tokens",
                "mem/GPU GiB", "partition", "image", "limit", "est", "GPU·h"):
        table.add_column(col, no_wrap=True)
    for s in plan.stages:
        gpu = s.gpus_per_node > 0
        mem = "-" if s.est_memory_gib is None else f"{s.est_memory_gib:g} / {s.gpu_memory_gib:g}"
        if s.est_memory_gib and s.gpu_memory_gib and s.est_memory_gib > 0.9 * s.gpu_memory_gib:
            mem = f"[yellow]{mem}[/]"
        table.add_row(
            s.name, ",".join(s.depends_on) or "-", f"{s.nodes}×{s.gpus_per_node}" if gpu else "cpu",
            f"{s.tp}/{s.pp}/{s.cp}/{s.dp}" if gpu else "-",
            f"{s.micro_batch_size}/{s.global_batch_size} ×{s.grad_accum}" if s.global_batch_size else "-",
            str(s.steps) if s.steps is not None else "-",
            _tokens(s.tokens), mem, s.partition or "-", s.container or "none", s.time_limit,
            _hours(s.est_hours), f"{s.est_gpu_hours:.1f}" if gpu else "-")
    out = console()
    out.print(table)
    for s in plan.stages:
        out.print(f"  [bold]{s.name}[/]: {s.why}")
    data = plan.to_json()
    out.print(f"critical path ≈ {_hours(data['est_hours'])}, {data['est_gpu_hours']:.1f} GPU-hours "
                  f"(throughput model; see benchmarks/RESULTS.md)")


def submission_table(run: Any, state: Any, dry_run: bool) -> None:
    from rich.table import Table

    out = console()
    out.print(f"run [bold]{run.id}[/]" + (" (dry run: nothing submitted)" if dry_run else ""))
    table = Table()
    table.add_column("stage")
    table.add_column("job id" if not dry_run else "script")
    for name, stage in state.stages.items():
        table.add_row(name, run.paths.script(name) if dry_run else (stage.job_id or "-"))
    out.print(table)
    out.print(f"run directory: {run.dir}")
    if not dry_run:
        out.print(f"watch it: minitron status {run.id} --watch")


STATE_STYLE = {"DONE": "green", "RUNNING": "cyan", "PENDING": "yellow", "FAILED": "red", "CANCELLED": "red",
               "TIMEOUT": "red", "NODE_FAIL": "red", "OUT_OF_MEMORY": "red", "NOT_SUBMITTED": "dim",
               "UNKNOWN": "magenta", "COMPLETED": "yellow", "REQUEUED": "yellow"}


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def status_table(report: Any) -> None:
    from rich.table import Table

    out = console()
    table = Table(title=f"run {report.run_id}: {report.overall}  ({time.strftime('%H:%M:%S')})",
                  title_justify="left")
    for col in ("stage", "state", "job", "reason", "elapsed/limit", "nodes", "exit", "progress", "loss (train/val)",
                "ETA"):
        table.add_column(col)
    for s in report.stages:
        style = STATE_STYLE.get(s.state, "")
        progress = f"{s.step}/{s.total_steps}" if s.step is not None else "-"
        losses = "/".join("-" if v is None else f"{v:.3f}" for v in (s.train_loss, s.val_loss))
        table.add_row(s.name, f"[{style}]{s.state}[/]" if style else s.state, s.job_id or "-", s.reason or "-",
                      f"{_duration(s.elapsed_s)}/{s.time_limit or '-'}", s.nodes or "-",
                      str(s.exit_code) if s.exit_code is not None else "-", progress,
                      losses if s.step is not None else "-", _duration(s.eta_s))
    out.print(table)
    for s in report.stages:
        if s.state in ("FAILED", "TIMEOUT", "NODE_FAIL", "OUT_OF_MEMORY") and s.log_tail:
            out.print(f"[red]{s.name}[/] last log lines ({s.log_path}):")
            for line in s.log_tail:
                out.print(f"    {line}", markup=False)
    for note in report.notes:
        out.print(f"[dim]{note}[/]")


def runs_table(rows: list[dict[str, Any]]) -> None:
    from rich.table import Table

    table = Table(title="runs, newest first", title_justify="left")
    for col in ("run", "executor", "created", "status", "stages", "directory"):
        table.add_column(col)
    for row in rows:
        table.add_row(row["run_id"], row["executor"], time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created_at"])),
                      row["status"], str(row["stages"]), row["dir"])
    console().print(table)
