"""One function per CLI command. Each returns the process exit code (launcher/core/errors.ExitCode)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from typing import Iterable

from jobs.contract import ConfigError, read_bounded, read_markers, read_stage_config

from ..core.errors import ExitCode, RecordNotSaved, SlurmError, SubmitFailed, UserError, did_you_mean
from ..core.files import LineReader, open_log, tail_offset
from ..planning import calibration
from ..planning.planner import make_plan
from ..runs.prepare import load_inputs, preflight, prepare_run
from ..runs.registry import MAX_RECORD_BYTES, discard_new_run, indexed_runs, index_run, resolve_run
from ..runs.smoke import smoke_inputs
from ..runs.state import LIVE_RUN_STATES, RunState
from ..runs.status import query_runs, report_for, run_report, settled_state
from ..runs.submission import cancel_run, resume_run, submit_run
from .catalog import run_catalog
from .checks import run_checks
from .init import run_init
from .probe import run_check
from .views import (calibration_table, console, log_line, plan_table, print_json, report_markdown, runs_table,
                    status_table, submission_table, text, timing_table)

STATUS_EXIT = {RunState.DONE: ExitCode.OK, RunState.PENDING: ExitCode.LIVE, RunState.RUNNING: ExitCode.LIVE,
               RunState.FAILED: ExitCode.FAILED, RunState.CANCELLED: ExitCode.FAILED,
               RunState.PARTIAL: ExitCode.FAILED, RunState.RENDERED: ExitCode.NOT_SUBMITTED,
               RunState.SUBMIT_FAILED: ExitCode.NOT_SUBMITTED}


def cmd_plan(args: argparse.Namespace) -> int:
    inputs = load_inputs(args.profile, args.recipe, args.overrides)
    plan = make_plan(inputs.profile, inputs.recipe)
    if args.json:
        print_json(plan.to_json())
    else:
        plan_table(plan, inputs.profile, args.wide)
    return ExitCode.OK


def cmd_submit(args: argparse.Namespace) -> int:
    recipe, overrides = args.recipe, args.overrides
    if getattr(args, "smoke", False):
        if recipe:
            raise UserError("--smoke runs the bundled tiny recipe: leave out --recipe (use --set to change it)",
                            key="--recipe")
        recipe, overrides = smoke_inputs(args.overrides)
    inputs = load_inputs(args.profile, recipe, overrides)
    plan = make_plan(inputs.profile, inputs.recipe)
    if not args.dry_run:
        preflight(inputs.profile, plan)
    run = prepare_run(inputs, plan, dry_run=args.dry_run)
    index_run(run)
    if not args.dry_run:
        try:
            submit_run(run)
        except RecordNotSaved as exc:
            discard_new_run(run)
            print(f"minitron: error: {exc}; the run directory was removed", file=sys.stderr)
            return ExitCode.SUBMIT_FAILED
        except SubmitFailed as exc:
            print(f"minitron: error: {exc}", file=sys.stderr)
            print(f"minitron: cancelled what this submission had queued ({', '.join(exc.cancelled) or 'nothing'}); "
                  f"the run is recorded as SUBMIT_FAILED in {run.dir}", file=sys.stderr)
            return ExitCode.SUBMIT_FAILED
    record = run.load_record()
    if args.json:
        print_json({"run_id": run.id, "run_dir": run.dir, "dry_run": args.dry_run, "rendered_for": record.rendered_for,
                    "jobs": {name: s.job_id for name, s in record.stages.items()},
                    "scripts": {name: run.layout.script(name) for name in record.stages}})
    else:
        submission_table(run, record, args.dry_run)
    return ExitCode.OK


def _report(run):
    report = report_for(run)
    return STATUS_EXIT[report.state], report


def cmd_status(args: argparse.Namespace) -> int:
    run = resolve_run(args.run, default_newest=True)
    if args.watch and not args.json:
        while True:
            code, report = _report(run)
            if sys.stdout.isatty():
                console().clear()
            status_table(report, args.wide)
            if report.state not in LIVE_RUN_STATES:
                return code
            time.sleep(args.watch)
    code, report = _report(run)
    if args.json:
        print_json(report.to_json())
    else:
        status_table(report, args.wide)
    return code


def cmd_runs(args: argparse.Namespace) -> int:
    """Every run with its live state: markers first, then one batched query per backend for all runs."""
    entries = indexed_runs()
    readable = [(e.run, e.record) for e in entries if e.run is not None]
    results, unreachable = {}, {}
    for kind in {record.executor for _, record in readable}:
        try:
            results.update(query_runs([(r, rec) for r, rec in readable if rec.executor == kind]))
        except SlurmError as exc:  # the other backends' runs, and this one's finished ones, are still listed
            unreachable[kind] = str(exc)
    rows = []
    for entry in entries:
        row = {"run_id": entry.run_id, "dir": entry.dir, "executor": entry.record.executor if entry.record else None,
               "state": None, "created_at": entry.created_at or None,
               "stages": len(entry.record.stages) if entry.record else None, "error": entry.error}
        if entry.run is not None and entry.record.executor in unreachable:
            row["state"] = settled_state(entry.run, entry.record) or "UNKNOWN"
            if row["state"] == "UNKNOWN":
                row["error"] = unreachable[entry.record.executor]
        elif entry.run is not None:
            try:
                report = run_report(entry.run, entry.record, results[entry.record.executor])
                row["state"] = report.overall
                row["stage_states"] = {s.name: s.state for s in report.stages}
            except UserError as exc:
                row["error"] = exc.message
        rows.append(row)
    if args.json:
        print_json(rows)
    else:
        runs_table(rows, args.wide)
    return ExitCode.OK


def cmd_logs(args: argparse.Namespace) -> int:
    """The last `--lines` lines of a stage's log (all of it when <= 0), then with --follow each new line
    once complete, until the run is no longer live. A log is whatever the job wrote, so it is streamed
    in bounded memory (the last lines found reading backwards from the end; a line keeps at most its
    last LOG_LINE_BYTES, marked as cut) and every line is escaped and redacted (`views.log_line`):
    control bytes in a log never reach the terminal."""
    run = resolve_run(args.run)
    record = run.load_record()
    stage = args.stage
    if stage is None:
        started = [(read_markers(run.layout, n).started, n) for n in record.stages]
        started = [(s.time, n) for s, n in started if s is not None]
        if not started:
            raise UserError(f"no stage of run {run.id} has started yet", key="STAGE")
        stage = max(started)[1]
    if stage not in record.stages:
        raise UserError(f"run {run.id} has no stage {stage!r}", key="STAGE", hint=did_you_mean(stage, record.stages))
    path = run.layout.stage_log(stage, record.stages[stage].job_id)
    if path is None:
        raise UserError(f"stage {stage} has no log yet", key="STAGE")
    try:
        fd = open_log(path)
    except OSError as exc:
        raise UserError(f"cannot read the log of stage {stage}: {exc.strerror or exc}", key="STAGE") from None
    try:
        reader = LineReader(fd, tail_offset(fd, args.lines) if args.lines > 0 else 0)
        _print_log_lines(reader.lines())
        while args.follow:
            live = _report(run)[1].state in LIVE_RUN_STATES  # before reading: what the run wrote is read
            _print_log_lines(reader.lines())
            if not live:
                break
            time.sleep(1.0)
        last = reader.unfinished()
        _print_log_lines([last] if last else [])
    finally:
        os.close(fd)
    return ExitCode.OK


def _print_log_lines(lines: Iterable[tuple[bytes, int]]) -> None:
    for line, dropped in lines:
        sys.stdout.write(log_line(line, dropped) + "\n")
    sys.stdout.flush()


def cmd_cancel(args: argparse.Namespace) -> int:
    run = resolve_run(args.run)
    cancelled = cancel_run(run, args.stage)
    console().print(f"cancelled {len(cancelled)} job(s) of run {text(run.id)}: "
                    f"{text(' '.join(cancelled) or 'none were live')}")
    return ExitCode.OK


def cmd_resume(args: argparse.Namespace) -> int:
    run = resolve_run(args.run)
    try:
        submitted, _ = resume_run(run, submit_dry_run=args.submit)
    except SubmitFailed as exc:
        print(f"minitron: error: {exc}; cancelled {', '.join(exc.cancelled) or 'nothing'}", file=sys.stderr)
        return ExitCode.SUBMIT_FAILED
    if not submitted:
        console().print(f"run {text(run.id)}: nothing to resume (every stage is done, still queued or being cancelled)")
        return ExitCode.OK
    submission_table(run, run.load_record(), False)
    return ExitCode.OK


def cmd_check(args: argparse.Namespace) -> int:
    if getattr(args, "probe", False) or getattr(args, "json", False):
        return run_check(args.profile, args.probe, args.timeout, args.json)

    return run_checks(args.profile)


def cmd_report(args: argparse.Namespace) -> int:
    run = resolve_run(args.run, default_newest=True)
    stage = next((s.name for s in run.plan.stages if any(o.name == "summary_json" for o in s.stage_kind.outputs)),
                 None)
    if stage is None:
        raise UserError(f"run {run.id} has no stage that writes a report (its recipe turned it off)", key="RUN")
    try:
        outputs = read_stage_config(run.layout.stage_config(stage)).outputs
    except ConfigError as exc:
        raise UserError(f"run {run.id} has no readable report stage config: {exc}", key="RUN") from None
    try:
        summary = json.loads(read_bounded(outputs["summary_json"], MAX_RECORD_BYTES))
        markdown = read_bounded(outputs["summary_md"], MAX_RECORD_BYTES)
    except (OSError, ValueError):
        raise UserError(f"run {run.id} has no report yet (the report stage writes {outputs['summary_json']})",
                        key="RUN") from None
    timing = report_for(run)
    stages = [{"stage": s.name, "state": s.state, "est_s": s.est_s, "elapsed_s": s.elapsed_s,
               "est_gpu_hours": s.est_gpu_hours, "gpu_hours": s.gpu_hours} for s in timing.stages]
    if args.json:
        print_json({**summary, "plan_vs_actual": {"stages": stages, "totals": timing.totals}})
        return ExitCode.OK
    report_markdown(markdown)
    timing_table(timing)
    if os.path.exists(outputs["plot"]):
        print(f"plot: {outputs['plot']}")
    return ExitCode.OK


def cmd_calibrate(args: argparse.Namespace) -> int:
    """Record the measured stage times of DONE runs for the planner (`plan` only reads them)."""
    runs = [resolve_run(name) for name in args.runs] if args.runs else \
        [e.run for e in indexed_runs() if e.run is not None]
    rows = []
    for run in runs:
        state = report_for(run).state
        added = calibration.record_run(run.id, run.layout, run.plan.stages) if state == RunState.DONE else 0
        if args.runs or added:
            rows.append({"run_id": run.id, "state": state, "recorded": added})
    if args.json:
        print_json(rows)
    else:
        calibration_table(rows)
    return ExitCode.OK


def cmd_profiles(args: argparse.Namespace) -> int:
    return run_catalog("profiles", args)


def cmd_recipes(args: argparse.Namespace) -> int:
    return run_catalog("recipes", args)


def cmd_init(args: argparse.Namespace) -> int:
    return run_init(args)
