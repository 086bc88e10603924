"""Submit, resume and cancel a run's stages through its executor, recording each step in the run record."""

from __future__ import annotations

import contextlib
import time

from ..backends import executor_for
from ..backends.base import JobRef
from ..core.errors import LauncherError, RecordNotSaved, SubmitFailed, UserError, did_you_mean
from .registry import Run, RunRecord
from .state import BROKEN, LIVE, RunState, StageState
from .status import RunReport, report_for


def downstream(order: list[str], deps: dict[str, list[str]], roots: set[str]) -> list[str]:
    """roots and everything that (transitively) depends on them, in dependency order."""
    chosen = set(roots)
    for name in order:
        if any(d in chosen for d in deps[name]):
            chosen.add(name)
    return [n for n in order if n in chosen]


def _submit_stages(run: Run, record: RunRecord, stages: list[str], waiting_on: dict[str, str]) -> dict[str, str]:
    """Queue `stages` (dependency order); the caller holds the run lock. Jobs that the record cannot
    keep (its write fails: a full or read-only job_dir) are cancelled: RecordNotSaved."""
    executor = executor_for(record.executor)
    try:
        submitted = executor.submit(run, stages, waiting_on)
    except SubmitFailed as exc:
        record.submit_failed = True
        record.log("submit_failed", stage=exc.stage, error=exc.message, cancelled=exc.cancelled)
        with contextlib.suppress(OSError):  # the jobs are cancelled already; Slurm's error is what to show
            run.save_record(record)
        raise
    now = time.time()
    for name, job_id in submitted.items():
        stage = record.stages[name]
        stage.job_id, stage.submitted_at, stage.cancelled = job_id, now, False
        stage.attempts.append(job_id)
    record.submit_failed = False
    record.log("submitted", jobs=submitted)
    try:
        run.save_record(record)
    except OSError as exc:
        refs = [JobRef(run=run, stage=name, job_id=job_id) for name, job_id in submitted.items()]
        try:
            executor.cancel(refs)
        except LauncherError as cancel_exc:
            raise RecordNotSaved(run.layout.state, exc, list(submitted.values()), str(cancel_exc)) from None
        raise RecordNotSaved(run.layout.state, exc, list(submitted.values())) from None
    return submitted


def submit_run(run: Run) -> dict[str, str]:
    with run.locked():
        return _submit_stages(run, run.load_record(), run.plan.names(), {})


def resume_run(run: Run, submit_dry_run: bool = False) -> tuple[dict[str, str], RunReport]:
    """Resubmit every stage that failed, was cancelled or never ran, and what depends on it. A dry run
    (rendered, never submitted) is submitted only when asked: resuming it is a first submission."""
    with run.locked():
        record = run.load_record()
        report = report_for(run, record)
        if record.rendered_for:
            raise UserError(f"run {run.id} is a dry run written away from its job_dir ({run.dir}; its scripts "
                            f"name {record.rendered_for}): submit the recipe with `minitron submit` where job_dir "
                            f"exists", key="RUN")
        if report.state == RunState.RENDERED and not submit_dry_run:
            raise UserError(f"run {run.id} is a dry run: nothing of it was ever submitted; `minitron resume "
                            f"{run.id} --submit` submits it now", key="RUN")
        order, deps = run.plan.names(), run.plan.dependencies()
        states = {s.name: s.state for s in report.stages}
        broken = {n for n, s in states.items() if s in BROKEN or s in (StageState.CANCELLED, StageState.NOT_SUBMITTED)}
        todo = [n for n in downstream(order, deps, broken) if states[n] != StageState.DONE and states[n] not in LIVE]
        if not todo:
            return {}, report
        waiting_on = {s.name: s.job_id for s in report.stages if s.job_id and s.state in LIVE}
        record.log("resume", stages=todo)
        return _submit_stages(run, record, todo, waiting_on), report


def cancel_run(run: Run, stage: str | None) -> list[str]:
    """Cancel a stage and everything downstream of it (or the whole run); returns the job ids cancelled."""
    with run.locked():
        record = run.load_record()
        order, deps = run.plan.names(), run.plan.dependencies()
        if stage is not None and stage not in record.stages:
            raise UserError(f"run {run.id} has no stage {stage!r}", key="STAGE", hint=did_you_mean(stage, order))
        targets = downstream(order, deps, {stage}) if stage else order
        report = report_for(run, record)
        live = [JobRef(run=run, stage=s.name, job_id=s.job_id) for s in report.stages
                if s.name in targets and s.job_id and s.state in LIVE]
        executor_for(record.executor).cancel(live)
        for ref in live:
            record.stages[ref.stage].cancelled = True
        record.log("cancel", stages=targets, jobs=[ref.job_id for ref in live])
        run.save_record(record)
        return [ref.job_id for ref in live]
