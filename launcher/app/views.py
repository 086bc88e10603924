"""Everything printed for people: rich tables for plans, submissions, status, runs and checks.

Every value that comes from a file, a scheduler or a log passes through `text()`: rich markup is
escaped, control bytes are shown as escapes (an ESC in a profile key cannot retitle or clear the
terminal), secret-looking values are redacted, and its length is bounded. Log lines, printed
without markup, get the same through `log_line`.
"""

from __future__ import annotations

import os
import re
import time
from typing import Any, NamedTuple, Sequence

from ..core.errors import one_line
from ..core.files import LOG_LINE_BYTES

CELL_CHARS = 1000
_FIRST_WORD = re.compile(rb"\S*\s?")


def text(value: Any, limit: int = CELL_CHARS) -> str:
    from rich.markup import escape
    return escape(one_line(str(value), limit))


def log_line(data: bytes, dropped: int = 0) -> str:
    """A log line for the terminal, made safe as every value is: bad UTF-8 shown as U+FFFD, then
    redacted and escaped by `one_line`, never cut again (the reader kept at most LOG_LINE_BYTES, and a
    byte escapes to at most 4 characters). A line cut for length is marked, and what is shown of it
    starts after a whitespace: no fragment of a word, which could be a secret too short to redact."""
    marker = ""
    if dropped:
        start = _FIRST_WORD.match(data).end()
        data, marker = data[start:], f"[first {dropped + start} bytes of this line not shown] "
    return marker + one_line(data.decode("utf-8", "replace"), 4 * LOG_LINE_BYTES)


def print_json(data: Any) -> None:
    """For scripts: the data as JSON on stdout (values are not escaped: JSON quotes them)."""
    import json
    import sys

    json.dump(data, sys.stdout, indent=2)
    sys.stdout.write("\n")


def console() -> Any:
    import sys

    from rich.console import Console
    # Pipes and CI logs get a wide page instead of rich's 80-column default, unless COLUMNS says how wide.
    wide_pipe = not sys.stdout.isatty() and not os.environ.get("COLUMNS", "").isdigit()
    return Console(highlight=False, width=200 if wide_pipe else None)


class _Col(NamedTuple):
    """A table column. `keep` 0: always shown; otherwise a narrow terminal leaves out the columns with the
    highest `keep` first. `fold` > 0: long cells fold (at spaces where they can) down to that many characters;
    0: the column is as wide as its widest cell or left out."""
    header: str
    keep: int = 0
    fold: int = 0


def _cell_width(markup: str) -> int:
    from rich.text import Text
    return max(Text.from_markup(line).cell_len for line in markup.split("\n"))


def _fitted(out: Any, cols: Sequence[_Col], rows: Sequence[Sequence[str]], wide: bool = False, **kwargs: Any) -> Any:
    """A rich Table of the columns that fit `out`'s width, so that no cell is cut to '…' or to nothing (what rich
    does, as a last resort, to a table wider than the terminal). The most valuable columns come first, those
    with nothing but '-' last; one that does not fit is left out whole (a caption names it), and a less
    valuable, narrower one may take its place. `wide`: every column at full width, widening `out` to the table
    (the terminal wraps it, or `less -S` scrolls)."""
    from rich.table import Table

    natural = [max([_cell_width(col.header)] + [_cell_width(row[i]) for row in rows]) for i, col in enumerate(cols)]
    least = [min(n, col.fold) if col.fold else n for n, col in zip(natural, cols)]
    empty = [all(row[i] == "-" for row in rows) for i in range(len(cols))]
    chosen, used = [], 1  # a column takes its width, its padding (2) and a border (1); the right edge is 1 more
    for i in sorted(range(len(cols)), key=lambda i: (cols[i].keep != 0 and empty[i], cols[i].keep)):
        if wide or cols[i].keep == 0 or used + least[i] + 3 <= out.width:
            chosen.append(i)
            used += least[i] + 3
    chosen.sort()
    if wide:
        out.width = max(out.width, used + sum(natural[i] - least[i] for i in chosen))
    left_out = [col.header.replace("\n", " ") for i, col in enumerate(cols) if i not in chosen]
    table = Table(caption=text(f"not shown: {', '.join(left_out)} (--wide shows them)") if left_out else None,
                  caption_justify="left", **kwargs)
    spare = out.width - used  # widens folding columns, first come first served
    for i in chosen:
        width = least[i] + max(0, min(natural[i] - least[i], spare))
        spare -= width - least[i]
        table.add_column(cols[i].header, no_wrap=not cols[i].fold, overflow="fold", max_width=width)
    for row in rows:
        table.add_row(*(row[i] for i in chosen))
    return table


def _tokens(n: int | None) -> str:
    if not n:
        return "-"
    for unit, size in (("B", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= size:
            return f"{n / size:.1f}{unit}"
    return str(n)


def hours_text(h: float) -> str:
    """An estimate for people: minutes under an hour, else hours."""
    return f"{h * 60:.0f} min" if h < 1 else f"{h:.1f} h"


PLAN_COLUMNS = (_Col("stage"), _Col("after", 4, fold=14), _Col("nodes×GPUs"), _Col("TP/PP/CP/DP"),
                _Col("MBS/GBS ×acc", 3), _Col("engine", 7), _Col("steps", 5), _Col("tokens", 6), _Col("mem/GPU GiB"),
                _Col("partition", 8), _Col("image", 9), _Col("limit", 1), _Col("est"), _Col("GPU·h", 2))


def plan_table(plan: Any, profile: Any, wide: bool = False) -> None:
    rows = []
    for s in plan.stages:
        gpu = s.gpus_per_node > 0
        mem = "-" if s.est_memory_gib is None else f"{s.est_memory_gib:g} / {s.gpu_memory_gib:g}"
        if s.est_memory_gib and s.gpu_memory_gib and s.est_memory_gib > 0.9 * s.gpu_memory_gib:
            mem = f"[yellow]{mem}[/]"
        rows.append((
            text(s.name), text(", ".join(s.depends_on) or "-"), f"{s.nodes}×{s.gpus_per_node}" if gpu else "cpu",
            f"{s.tp}/{s.pp}/{s.cp}/{s.dp}" if gpu else "-",
            f"{s.micro_batch_size}/{s.global_batch_size} ×{s.grad_accum}" if s.global_batch_size else "-",
            _engine(s) if "engine" in s.stage_kind.sections else "-", str(s.steps) if s.steps is not None else "-",
            _tokens(s.tokens), mem, text(s.partition or "-"), text(s.container or "none"), text(s.time_limit),
            hours_text(s.est_hours), f"{s.est_gpu_hours:.1f}" if gpu else "-"))
    out = console()
    out.print(_fitted(out, PLAN_COLUMNS, rows, wide, title_justify="left",
                     title=text(f"{plan.recipe} on {profile.source.rsplit('/', 1)[-1]} "
                                f"({profile.hardware}"
                                + (f", at most {profile.node_cap} a stage" if profile.node_cap < profile.nodes else "")
                                + ")")))
    for s in plan.stages:
        out.print(f"  [bold]{text(s.name)}[/]: {text(s.why)}")
    data = plan.to_json()
    out.print(f"critical path ≈ {hours_text(data['est_hours'])}, {data['est_gpu_hours']:.1f} GPU-hours "
              f"(time model; see benchmarks/RESULTS.md)")


def _engine(s: Any) -> str:
    """What the job runs its model with: attention path, precision, and recomputation when there is some."""
    recompute = f" rc:{s.recompute}" if s.recompute != "none" else ""
    return text(f"{s.attention} {s.precision.removesuffix('-mixed')}{recompute}")


def submission_table(sub: Any) -> None:
    """A submission (launcher.api.Submission): each stage's job id, or its script for a dry run."""
    out = console()
    out.print(f"run [bold]{text(sub.run_id)}[/]" + (" (dry run: nothing submitted)" if sub.dry_run else ""))
    rows = [(text(name), text(sub.scripts[name] if sub.dry_run else (job_id or "-")))
            for name, job_id in sub.jobs.items()]
    out.print(_fitted(out, (_Col("stage"), _Col("script" if sub.dry_run else "job id", fold=20)), rows))
    out.print(f"run directory: {text(sub.run_dir)}")
    if sub.rendered_for:
        out.print(f"job_dir's file system is not on this machine, so nothing was created there: the dry run is written "
                  f"here instead, and its scripts name {text(sub.rendered_for)}")
    if not sub.dry_run:
        out.print(f"watch it: minitron status {text(sub.run_id)} --watch")


STATE_STYLE = {"DONE": "green", "RUNNING": "cyan", "PENDING": "yellow", "STALLED": "magenta", "FAILED": "red",
               "CANCELLED": "red", "CANCELLING": "red", "TIMEOUT": "red", "NODE_FAIL": "red", "OUT_OF_MEMORY": "red",
               "PREEMPTED": "red", "INCOMPLETE": "red", "LOST": "magenta", "NOT_SUBMITTED": "dim", "RENDERED": "dim",
               "SUBMIT_FAILED": "red", "PARTIAL": "yellow"}


def styled(state: str) -> str:
    style = STATE_STYLE.get(state)
    return f"[{style}]{text(state)}[/]" if style else text(state)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = int(seconds)
    h, rest = divmod(seconds, 3600)
    m, s = divmod(rest, 60)
    return f"{h}:{m:02d}:{s:02d}" if h else f"{m}:{s:02d}"


def _exit(s: Any) -> str:
    if s.exit_code is None:
        return "-"
    return f"{s.exit_code} ({s.signal})" if s.signal else str(s.exit_code)


STATUS_COLUMNS = (_Col("stage"), _Col("state"), _Col("job"), _Col("reason", 3, fold=12), _Col("elapsed/limit"),
                  _Col("est", 5), _Col("nodes", 6, fold=12), _Col("exit", 2), _Col("progress", 1),
                  _Col("loss (train/val)", 4), _Col("ETA"))


def status_table(report: Any, wide: bool = False) -> None:
    rows = []
    for s in report.stages:
        progress = f"{s.step}/{s.total_steps}" if s.step is not None else "-"
        losses = "/".join("-" if v is None else f"{v:.3f}" for v in (s.train_loss, s.val_loss))
        rows.append((text(s.name), styled(s.state), text(s.job_id or "-"), text(s.reason or "-", 80),
                     f"{_duration(s.elapsed_s)}/{text(s.time_limit or '-')}", _duration(s.est_s),
                     text(s.nodes or "-"), _exit(s), progress, losses if s.step is not None else "-",
                     _duration(s.eta_s)))
    out = console()
    out.print(_fitted(out, STATUS_COLUMNS, rows, wide, title_justify="left",
                     title=f"run {text(report.run_id)}: {styled(report.overall)}  ({time.strftime('%H:%M:%S')})"))
    totals = report.totals or {}
    if totals.get("gpu_hours") is not None:
        wall = (f"wall {_duration(totals['wall_s'])} (planned {_duration(totals.get('est_wall_s'))})"
                if totals.get("wall_s") is not None else "")
        if totals["gpu_hours"] or totals.get("est_gpu_hours"):
            out.print(f"{wall}{', ' if wall else ''}GPU-hours {totals['gpu_hours']:.3f} used "
                      f"(planned {totals.get('est_gpu_hours') or 0:.3f})")
        elif wall:  # a run without GPUs
            out.print(f"{wall}, no GPUs")
    for s in report.stages:
        if s.exception:
            out.print(f"[red]{text(s.name)}[/] failed on its first failing rank: {text(s.exception)}")
        if s.log_tail:
            out.print(f"[red]{text(s.name)}[/] last log lines ({text(s.log_path)}):")
            for line in s.log_tail:
                out.print(f"    {text(line)}")
    for note in report.notes:
        out.print(f"[dim]{text(note)}[/]")
    if getattr(report, "verdict", None):
        out.print(f"[{'green' if report.overall == 'DONE' else 'red'}]{text(report.verdict)}[/]", soft_wrap=True)


def report_markdown(markdown: str) -> None:
    """The report stage's summary.md, rendered."""
    from rich.markdown import Markdown

    console().print(Markdown(markdown))


def timing_table(report: Any) -> None:
    """Plan vs actual: each stage's estimated and measured wall time and GPU-hours, and the run's totals."""

    def hours(value: Any) -> str:
        return "-" if value is None else f"{value:.3f}"

    rows = [(text(s.name), styled(s.state), _duration(s.est_s), _duration(s.elapsed_s), hours(s.est_gpu_hours),
             hours(s.gpu_hours)) for s in report.stages]
    totals = report.totals or {}
    rows.append(("[bold]run[/]", styled(report.overall), _duration(totals.get("est_wall_s")),
                 _duration(totals.get("wall_s")), hours(totals.get("est_gpu_hours")), hours(totals.get("gpu_hours"))))
    out = console()
    # Two-line headers keep all six columns within 80 characters.
    cols = (_Col("stage"), _Col("state"), _Col("wall\nest"), _Col("wall\nactual"), _Col("GPU·h\nest"),
            _Col("GPU·h\nactual"))
    out.print(_fitted(out, cols, rows, title="plan vs actual", title_justify="left"))


RUNS_COLUMNS = (_Col("run"), _Col("state", fold=13), _Col("executor", 4), _Col("created", 1), _Col("stages", 3),
                _Col("directory", 2, fold=20))


def runs_table(rows: list[dict[str, Any]], wide: bool = False) -> None:
    cells = []
    for row in rows:
        created = time.strftime("%Y-%m-%d %H:%M", time.localtime(row["created_at"])) if row["created_at"] else "-"
        state = styled(row["state"]) if row["state"] else "[red]UNREADABLE[/]"
        if row.get("error"):  # why the run cannot be read, or why its state is UNKNOWN (Slurm did not answer)
            state += f" {text(row['error'], 120)}"
        cells.append((text(row["run_id"]), state, text(row["executor"] or "-"), created,
                      text("-" if row["stages"] is None else row["stages"]),
                      text(row["dir"])))
    out = console()
    out.print(_fitted(out, RUNS_COLUMNS, cells, wide, title="runs, newest first", title_justify="left"))


def checks_table(source: str, checks: list[Any]) -> None:
    style = {"ok": "green", "warn": "yellow", "FAIL": "red"}
    rows = [(text(check.name), f"[{style[check.result]}]{check.result}[/]", text(check.detail)) for check in checks]
    out = console()
    out.print(_fitted(out, (_Col("check"), _Col("result"), _Col("detail", fold=20)), rows,
                     title=f"checks for {text(source)}", title_justify="left"))


def calibration_table(rows: list[dict[str, Any]]) -> None:
    """`minitron calibrate`: how many stage times each run added to the planner's store."""
    out = console()
    if not rows:
        out.print("no finished run has stage times the calibration store lacks")
        return
    cells = [(text(row["run_id"]), styled(row["state"]), str(row["recorded"])) for row in rows]
    out.print(_fitted(out, (_Col("run"), _Col("state"), _Col("recorded")), cells,
                     title="stage times recorded for calibration", title_justify="left"))


def profiles_table(rows: list[dict[str, Any]]) -> None:
    """`minitron profiles`: one line per bundled profile; one that does not load shows why."""
    out = console()
    cells = []
    for row in rows:
        if row.get("error"):
            cells.append((text(row["name"]), f"[red]UNREADABLE[/] {text(row['error'], 200)}", "-", "-", "-", "-"))
            continue
        cells.append((text(row["name"]), text(row["executor"]), f"{row['nodes']}×{row['gpus_per_node']}",
                      text(row["gpu_model"] or "cpu"), text(row["partition"] or "-"), text(row["container"] or "none")))
    cols = (_Col("name"), _Col("executor", fold=8), _Col("nodes×\nGPUs", fold=6), _Col("GPU", fold=9),
            _Col("partition", fold=9), _Col("container", fold=15))
    out.print(_fitted(out, cols, cells, title="bundled cluster profiles (--profile NAME; minitron profiles show NAME)",
                      title_justify="left"))


def recipes_table(rows: list[dict[str, Any]]) -> None:
    """`minitron recipes`: one line per bundled recipe, its stages and training steps."""
    out = console()
    cells = []
    for row in rows:
        if row.get("error"):
            cells.append((text(row["name"]), f"[red]UNREADABLE[/] {text(row['error'], 200)}", "-", "-"))
            continue
        steps = ", ".join(f"{t['stage']} {t['steps']}" if t["steps"] is not None
                          else f"{t['stage']} {t['tokens']:g} tokens" for t in row["training"])
        cells.append((text(row["name"]), text(", ".join(row["stages"])), text(steps or "-"),
                       text(row["description"], 200)))
    cols = (_Col("name"), _Col("stages", fold=16), _Col("steps", fold=16), _Col("description", fold=16))
    out.print(_fitted(out, cols, cells, title="bundled recipes (--recipe NAME; minitron recipes show NAME)",
                      title_justify="left"))


def yaml_text(content: str) -> None:
    """A profile or recipe file as written (each line escaped like any value: control bytes, markup)."""
    out = console()
    for line in content.splitlines():
        out.print(text(line), soft_wrap=True, emoji=False)


def cluster_table(facts: Any) -> None:
    """`minitron init`: the partitions as Slurm described them."""
    out = console()
    cells = [(text(p.name), "yes" if p.default else "", str(p.nodes), str(p.gpus_per_node),
              text(",".join(p.gpu_types) or "-"), text(p.cpus or "-"), text(p.memory_mb or "-"),
              text(p.time_limit or "unlimited")) for p in facts.partitions.values()]
    cols = (_Col("partition"), _Col("default", fold=3), _Col("nodes", fold=5), _Col("GPUs/\nnode", fold=5),
            _Col("GRES\ntype", fold=5), _Col("CPUs", fold=4), _Col("memory\nMB", fold=7), _Col("MaxTime", fold=10))
    out.print(_fitted(out, cols, cells, title=f"partitions of {text(facts.source)}", title_justify="left"))