"""One function per CLI command. Each returns the process exit code (launcher/core/errors.ExitCode)."""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from jobs.contract import ConfigError, read_bounded, read_stage_config

from .. import api
from ..core.errors import ExitCode, RecordNotSaved, SubmitFailed, UserError
from ..planning import calibration
from ..runs.registry import MAX_RECORD_BYTES, indexed_runs, resolve_run
from ..runs.state import LIVE_RUN_STATES, RunState
from ..runs.status import report_for
from .catalog import run_catalog
from .checks import run_checks
from .graph import graph_tree, write_graph
from .init import run_init
from .probe import run_check
from .views import (calibration_table, console, log_line, plan_table, print_json, report_markdown, runs_table,
                    status_table, submission_table, text, timing_table)

STATUS_EXIT = {RunState.DONE: ExitCode.OK, RunState.PENDING: ExitCode.LIVE, RunState.RUNNING: ExitCode.LIVE,
               RunState.FAILED: ExitCode.FAILED, RunState.CANCELLED: ExitCode.FAILED,
               RunState.PARTIAL: ExitCode.FAILED, RunState.RENDERED: ExitCode.NOT_SUBMITTED,
               RunState.SUBMIT_FAILED: ExitCode.NOT_SUBMITTED}


def cmd_plan(args: argparse.Namespace) -> int:
    plan, profile = api.planned(args.profile, args.recipe, args.overrides, args.nodes)
    if args.graph == "-":
        graph_tree(plan, profile)
    elif args.graph:
        write_graph(plan, args.graph)
        console().print(f"stage graph of {text(plan.recipe)} written to {text(args.graph)}")
    elif args.json:
        print_json(plan.to_json())
    else:
        plan_table(plan, profile, args.wide)
    return ExitCode.OK


def cmd_submit(args: argparse.Namespace) -> int:
    try:
        submission = api.submit(args.profile, args.recipe, args.overrides, dry_run=args.dry_run,
                                smoke=getattr(args, "smoke", False), nodes=args.nodes)
    except RecordNotSaved as exc:
        print(f"minitron: error: {exc}; the run directory was removed", file=sys.stderr)
        return ExitCode.SUBMIT_FAILED
    except SubmitFailed as exc:
        print(f"minitron: error: {exc}", file=sys.stderr)
        print(f"minitron: cancelled what this submission had queued ({', '.join(exc.cancelled) or 'nothing'}); "
              f"the run is recorded as SUBMIT_FAILED in {exc.run_dir}", file=sys.stderr)
        return ExitCode.SUBMIT_FAILED
    if args.json:
        data = submission.to_json()
        del data["queued"]  # the jobs, as ever
        print_json(data)
    else:
        submission_table(submission)
    return ExitCode.OK


def cmd_status(args: argparse.Namespace) -> int:
    report = api.status(args.run)
    if args.watch and not args.json:
        while True:
            if sys.stdout.isatty():
                console().clear()
            status_table(report, args.wide)
            if report.state not in LIVE_RUN_STATES:
                return STATUS_EXIT[report.state]
            time.sleep(args.watch)
            report = api.status(report.run_id)  # the run first shown, even if a newer one appears
    if args.json:
        print_json(report.to_json())
    else:
        status_table(report, args.wide)
    return STATUS_EXIT[report.state]


def cmd_runs(args: argparse.Namespace) -> int:
    rows = api.runs()
    if args.json:
        print_json(rows)
    else:
        runs_table(rows, args.wide)
    return ExitCode.OK


def cmd_logs(args: argparse.Namespace) -> int:
    """The end of a stage's log, then with --follow each new line (api.logs streams it in bounded
    memory). Every line is escaped and redacted (`views.log_line`): control bytes in a log never reach
    the terminal."""
    for line in api.logs(args.run, args.stage, args.lines, follow=args.follow, rank=args.rank):
        sys.stdout.write(log_line(line.data, line.dropped) + "\n")
        if args.follow:
            sys.stdout.flush()
    sys.stdout.flush()
    return ExitCode.OK


def cmd_cancel(args: argparse.Namespace) -> int:
    cancelled = api.cancel(args.run, args.stage)
    console().print(f"cancelled {len(cancelled)} job(s) of run {text(args.run)}: "
                    f"{text(' '.join(cancelled) or 'none were live')}")
    return ExitCode.OK


def cmd_resume(args: argparse.Namespace) -> int:
    try:
        submission = api.resume(args.run, submit=args.submit)
    except SubmitFailed as exc:
        print(f"minitron: error: {exc}; cancelled {', '.join(exc.cancelled) or 'nothing'}", file=sys.stderr)
        return ExitCode.SUBMIT_FAILED
    if not submission.queued:
        console().print(f"run {text(submission.run_id)}: nothing to resume (every stage is done, still queued or "
                        f"being cancelled)")
        return ExitCode.OK
    submission_table(submission)
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
