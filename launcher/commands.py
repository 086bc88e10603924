"""One function per CLI command. Each returns the process exit code."""

from __future__ import annotations

import argparse
import os
import sys
import time

from .cli import EXIT_FAILED, EXIT_RUNNING, print_json
from .errors import UserError

EXIT_SUBMIT_FAILED = 7


def cmd_plan(args: argparse.Namespace) -> int:
    from .planner import make_plan
    from .prepare import load_inputs
    from .views import plan_table

    inputs = load_inputs(args.profile, args.recipe, args.overrides)
    plan = make_plan(inputs.profile, inputs.recipe)
    if args.json:
        print_json(plan.to_json())
    else:
        plan_table(plan, inputs.profile)
    return 0


def preflight(profile) -> None:
    """What must hold before anything is queued: required variables set, mount sources present."""
    missing = [name for name in profile.required_env_vars if not os.environ.get(name)]
    if missing:
        raise UserError(f"required environment variable(s) not set in this shell: {', '.join(missing)}",
                        file=profile.source, key="required_env_vars")
    if profile.executor == "local" and profile.image:
        import shutil
        if profile.image.startswith("/"):
            raise UserError(f"the local executor runs images with docker, which cannot run the squashfs file "
                            f"{profile.image}; name a registry image or set container: none",
                            file=profile.source, key="container")
        if not shutil.which("docker"):
            raise UserError("the profile names an image but docker is not installed here; set container: none to "
                            "run on bare metal (e.g. inside the NeMo container)", file=profile.source, key="container")
    if profile.check_mounts:
        for index, mount in enumerate(profile.mounts):
            source = mount.split(":")[0]
            if not os.path.exists(source):
                raise UserError(f"mount source {source} does not exist (set check_mounts: false if only the "
                                f"compute nodes see it)", file=profile.source, key=f"mounts[{index}]")


def cmd_submit(args: argparse.Namespace) -> int:
    from .executors.base import SubmitFailed
    from .planner import make_plan
    from .prepare import load_inputs, prepare_run
    from .registry import index_run
    from .submission import submit_run
    from .views import submission_table

    inputs = load_inputs(args.profile, args.recipe, args.overrides)
    plan = make_plan(inputs.profile, inputs.recipe)
    if not args.dry_run:
        preflight(inputs.profile)
    run = prepare_run(inputs, plan)
    index_run(run)
    if args.dry_run:
        state = run.load_state()
    else:
        try:
            submit_run(run)
        except SubmitFailed as exc:
            print(f"minitron: error: {exc}", file=sys.stderr)
            print(f"minitron: cancelled what this submission had queued ({', '.join(exc.cancelled) or 'nothing'}); "
                  f"the run is recorded as submit_failed in {run.dir}", file=sys.stderr)
            return EXIT_SUBMIT_FAILED
        state = run.load_state()
    if args.json:
        print_json({"run_id": run.id, "run_dir": run.dir, "dry_run": args.dry_run,
                    "jobs": {name: s.job_id for name, s in state.stages.items()},
                    "scripts": {name: run.paths.script(name) for name in state.stages}})
    else:
        submission_table(run, state, args.dry_run)
    return 0


def _status_once(run) -> tuple[int, object]:
    from .submission import query

    state = run.load_state()
    report = query(run, state)
    code = {"DONE": 0, "FAILED": EXIT_FAILED}.get(report.overall, EXIT_RUNNING)
    return code, report


def cmd_status(args: argparse.Namespace) -> int:
    from .registry import resolve_run

    run = resolve_run(args.run)
    if args.watch and not args.json:
        from .views import console, status_table
        while True:
            code, report = _status_once(run)
            if sys.stdout.isatty():
                console().clear()
            status_table(report)
            if code != EXIT_RUNNING:
                return code
            time.sleep(args.watch)
    code, report = _status_once(run)
    if args.json:
        print_json(report.to_json())
    else:
        from .views import status_table
        status_table(report)
    return code


def cmd_runs(args: argparse.Namespace) -> int:
    from .registry import indexed_runs

    rows = []
    for run in indexed_runs():
        state = run.load_state()
        rows.append({"run_id": run.id, "dir": run.dir, "executor": state.executor, "status": state.status,
                     "created_at": state.created_at, "stages": len(state.stages)})
    if args.json:
        print_json(rows)
    else:
        from .views import runs_table
        runs_table(rows)
    return 0


def cmd_logs(args: argparse.Namespace) -> int:
    from .registry import resolve_run
    from .status import read_markers, stage_log

    run = resolve_run(args.run)
    state = run.load_state()
    stage = args.stage
    if stage is None:
        started = [(read_markers(run, n).started or {}).get("time", 0) for n in state.stages]
        if not any(started):
            raise UserError(f"no stage of run {run.id} has started yet", key="STAGE")
        stage = list(state.stages)[started.index(max(started))]
    if stage not in state.stages:
        from .schema import did_you_mean
        raise UserError(f"run {run.id} has no stage {stage!r}", key="STAGE", hint=did_you_mean(stage, state.stages))
    path = stage_log(run, stage, state.stages[stage].job_id)
    if path is None:
        raise UserError(f"stage {stage} has no log yet", key="STAGE")
    with open(path, encoding="utf-8", errors="replace") as handle:
        lines = handle.readlines()
        sys.stdout.writelines(lines[-args.lines:] if args.lines > 0 else lines)
        sys.stdout.flush()
        while args.follow:
            line = handle.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
                continue
            code, _ = _status_once(run)
            if code != EXIT_RUNNING:
                return 0
            time.sleep(1.0)
    return 0


def cmd_cancel(args: argparse.Namespace) -> int:
    from .registry import resolve_run
    from .submission import cancel_run

    run = resolve_run(args.run)
    cancelled = cancel_run(run, args.stage)
    print(f"cancelled {len(cancelled)} job(s) of run {run.id}: {' '.join(cancelled) or 'none were live'}")
    return 0


def cmd_resume(args: argparse.Namespace) -> int:
    from .executors.base import SubmitFailed
    from .registry import resolve_run
    from .submission import resume_run
    from .views import submission_table

    run = resolve_run(args.run)
    try:
        submitted, _ = resume_run(run)
    except SubmitFailed as exc:
        print(f"minitron: error: {exc}; cancelled {', '.join(exc.cancelled) or 'nothing'}", file=sys.stderr)
        return EXIT_SUBMIT_FAILED
    if not submitted:
        print(f"run {run.id}: nothing to resume (every stage is done or still queued)")
        return 0
    submission_table(run, run.load_state(), False)
    return 0


def cmd_check(args: argparse.Namespace) -> int:
    from .checks import run_checks

    return run_checks(args.profile)


def cmd_report(args: argparse.Namespace) -> int:
    import json

    from .registry import resolve_run

    run = resolve_run(args.run)
    summary = os.path.join(run.paths.stage_work("report"), "summary.json")
    markdown = os.path.join(run.paths.stage_work("report"), "summary.md")
    if not os.path.exists(summary):
        raise UserError(f"run {run.id} has no report yet (the report stage writes {summary})", key="RUN")
    if args.json:
        with open(summary, encoding="utf-8") as handle:
            print_json(json.load(handle))
        return 0
    from rich.console import Console
    from rich.markdown import Markdown
    with open(markdown, encoding="utf-8") as handle:
        Console().print(Markdown(handle.read()))
    plot = os.path.join(run.paths.stage_work("report"), "val_loss.png")
    if os.path.exists(plot):
        print(f"plot: {plot}")
    return 0
