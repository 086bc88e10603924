"""Submit, resume and cancel a run's stages through its executor, recording each step in its state."""

from __future__ import annotations

import time
from typing import Any

from .executors import executor_for
from .executors.base import LIVE_STATES, SubmitFailed
from .registry import Run, RunState
from .status import BAD_STATES, RunReport, run_report


def _graph(run: Run) -> tuple[list[str], dict[str, list[str]]]:
    plan = run.load_plan()
    return [s["name"] for s in plan["stages"]], {s["name"]: s["depends_on"] for s in plan["stages"]}


def downstream(order: list[str], deps: dict[str, list[str]], roots: set[str]) -> list[str]:
    """roots and everything that (transitively) depends on them, in dependency order."""
    chosen = set(roots)
    for name in order:
        if any(d in chosen for d in deps[name]):
            chosen.add(name)
    return [n for n in order if n in chosen]


def query(run: Run, state: RunState, executor: Any | None = None) -> RunReport:
    executor = executor or executor_for(state.executor)
    ids = [s.job_id for s in state.stages.values() if s.job_id]
    infos, notes = executor.query(ids) if state.executor == "slurm" else executor.query(run, state)
    return run_report(run, state, infos, notes)


def submit_stages(run: Run, state: RunState, stages: list[str], report: RunReport | None,
                  executor: Any) -> dict[str, str]:
    """Queue `stages` (dependency order); the caller holds the run lock and saves the state."""
    order, deps = _graph(run)
    live = {}
    if report is not None:
        live = {s.name: s.job_id for s in report.stages
                if s.job_id and s.state in LIVE_STATES}
    state.status = "submitting"
    run.save_state(state)
    if state.executor == "slurm":
        profile = run.load_profile()
        entries = [(name, run.paths.script(name), deps[name]) for name in order if name in stages]
        try:
            submitted = executor.submit(entries, live, profile.dependency_type)
        except SubmitFailed as exc:
            state.status = "submit_failed"
            state.log("submit_failed", stage=exc.stage, error=exc.message, cancelled=exc.cancelled)
            run.save_state(state)
            raise
    else:
        submitted = executor.submit(run, [n for n in order if n in stages])
    now = time.time()
    for name, job_id in submitted.items():
        st = state.stages[name]
        st.job_id, st.submitted_at, st.cancelled = job_id, now, False
        st.attempts.append(job_id)
    state.status = "submitted"
    state.log("submitted", jobs=submitted)
    run.save_state(state)
    return submitted


def submit_run(run: Run) -> dict[str, str]:
    executor = executor_for(run.load_state().executor)
    with run.locked():
        state = run.load_state()
        order, _ = _graph(run)
        return submit_stages(run, state, order, None, executor)


def resume_run(run: Run) -> tuple[dict[str, str], RunReport]:
    """Resubmit every stage that failed, was cancelled or never ran, and what depends on it."""
    with run.locked():
        state = run.load_state()
        executor = executor_for(state.executor)
        report = query(run, state, executor)
        order, deps = _graph(run)
        by_name = {s.name: s for s in report.stages}
        broken = {s.name for s in report.stages if s.state in BAD_STATES or s.state == "NOT_SUBMITTED"}
        todo = [n for n in downstream(order, deps, broken)
                if by_name[n].state != "DONE" and by_name[n].state not in LIVE_STATES]
        if not todo:
            return {}, report
        state.log("resume", stages=todo)
        return submit_stages(run, state, todo, report, executor), report


def cancel_run(run: Run, stage: str | None) -> list[str]:
    """Cancel a stage and everything downstream of it (or the whole run); returns the job ids cancelled."""
    with run.locked():
        state = run.load_state()
        executor = executor_for(state.executor)
        order, deps = _graph(run)
        if stage is not None and stage not in state.stages:
            from .errors import UserError
            from .schema import did_you_mean
            raise UserError(f"run {run.id} has no stage {stage!r}", key="STAGE", hint=did_you_mean(stage, order))
        targets = downstream(order, deps, {stage}) if stage else order
        report = query(run, state, executor)
        live = [s.job_id for s in report.stages if s.name in targets and s.job_id
                and s.state in LIVE_STATES]
        if state.executor == "slurm":
            executor.cancel(live)
        else:
            executor.cancel(run, [s.name for s in report.stages if s.job_id in live])
        for name in targets:
            if state.stages[name].job_id in live:
                state.stages[name].cancelled = True
        if stage is None:
            state.status = "cancelled"
        state.log("cancel", stages=targets, jobs=live)
        run.save_state(state)
        return live
