"""The state machine (launcher/runs/state.py): every row of the decision table, the exit code's source,
and the run's state from its stages. Pure functions: no Slurm, no files."""

from __future__ import annotations

import pytest

from jobs.contract import Failure, Markers, Progress, Started
from launcher.runs.state import (RULES, Evidence, JobInfo, RunState, StageState, decide_run, decide_stage,
                            exit_status)

S = StageState
STARTED = Started(job_id="7", host="n1", time=100.0, attempt=0)
EARLIER = Started(job_id="3", host="n1", time=50.0, attempt=0)  # written by an earlier job of the stage


def job(state, **kw):
    return JobInfo(job_id="7", state=state, **kw)


def ev(job_info=None, markers=None, job_id="7", cancelled=False, progress=None, now=1000.0, stall=None):
    return Evidence(job_id=job_id, cancelled_by_user=cancelled, job=job_info, markers=markers or Markers(),
                    progress=progress or Progress(), now=now, stall_after_s=stall)


CASES = [  # (evidence, state, rule)
    (ev(job_id=None), S.NOT_SUBMITTED, "never submitted"),
    (ev(job("RUNNING"), progress=Progress(step=3, time=100.0), stall=600.0), S.STALLED,
     "scheduler: running, progress stale"),
    (ev(job("RUNNING"), progress=Progress(step=3, time=900.0), stall=600.0), S.RUNNING, "scheduler: running"),
    (ev(job("COMPLETING")), S.RUNNING, "scheduler: running"),
    (ev(job("RUNNING"), cancelled=True), S.CANCELLING, "scheduler: live, cancelled by user"),
    (ev(job("PENDING", reason="Dependency"), cancelled=True), S.CANCELLING, "scheduler: live, cancelled by user"),
    (ev(job("PENDING", reason="Dependency")), S.PENDING, "scheduler: pending"),
    (ev(job("REQUEUED")), S.PENDING, "scheduler: pending"),
    (ev(job("COMPLETED"), Markers(complete=True)), S.DONE, "complete marker"),
    (ev(None, Markers(complete=True)), S.DONE, "complete marker"),
    (ev(job("CANCELLED"), Markers(complete=True)), S.DONE, "complete marker"),
    (ev(job("COMPLETED")), S.INCOMPLETE, "scheduler: completed without the complete marker"),
    (ev(job("FAILED")), S.FAILED, "scheduler: ended"),
    (ev(job("TIMEOUT")), S.TIMEOUT, "scheduler: ended"),
    (ev(job("NODE_FAIL")), S.NODE_FAIL, "scheduler: ended"),
    (ev(job("OUT_OF_MEMORY")), S.OUT_OF_MEMORY, "scheduler: ended"),
    (ev(job("CANCELLED")), S.CANCELLED, "scheduler: ended"),
    (ev(job("BOGUS")), S.LOST, "scheduler: unknown state"),
    (ev(None, Markers(started=STARTED, failure=Failure(3, None, 0, "n1", "7", 1.0))), S.FAILED,
     "markers: a rank recorded its failure"),
    (ev(None, Markers(started=STARTED, finished_rc=3)), S.FAILED, "markers: finished non-zero"),
    (ev(None, Markers(started=STARTED, finished_rc=0)), S.INCOMPLETE, "markers: finished 0 without the complete marker"),
    (ev(None, Markers(started=STARTED)), S.LOST, "markers: started, never finished"),
    (ev(None, Markers(started=EARLIER, finished_rc=3), cancelled=True), S.CANCELLED, "cancelled before it started"),
    (ev(None, Markers(started=EARLIER, finished_rc=3)), S.LOST, "no trace"),
]


@pytest.mark.parametrize("evidence, state, rule", CASES, ids=[f"{c[2]}->{c[1].value}" for c in CASES])
def test_decision_table(evidence, state, rule):
    decision = decide_stage(evidence)
    assert (decision.state, decision.rule) == (state, rule)


def test_every_rule_is_exercised():
    assert {rule for _, _, rule in CASES} == {name for name, *_ in RULES}


def test_an_ended_job_s_reason_says_why_it_ended():
    assert decide_stage(ev(job("FAILED", reason="Dependency"))).reason == "NonZeroExitCode"
    assert decide_stage(ev(job("TIMEOUT", reason=None))).reason == "TimeLimit"
    assert decide_stage(ev(job("FAILED", reason="NonZeroExitCode"))).reason == "NonZeroExitCode"
    never_ran = job("CANCELLED", reason="Dependency", elapsed_s=0.0)
    assert decide_stage(ev(never_ran)).reason == "DependencyNeverSatisfied"
    assert decide_stage(ev(never_ran, cancelled=True)).reason == "cancelled by user"
    ran = job("CANCELLED", reason=None, elapsed_s=30.0, nodes="n1")
    assert decide_stage(ev(ran, Markers(started=STARTED))).reason == "cancelled"


def test_a_requeued_job_says_who_requeued_it():
    waiting = job("PENDING", reason="BeginTime")
    assert decide_stage(ev(waiting)).reason == "BeginTime", "a job that never started just waits"
    assert decide_stage(ev(waiting, Markers(started=STARTED))).reason == \
        "requeued by Slurm (a node failure or preemption); waiting for BeginTime"
    assert decide_stage(ev(waiting, Markers(started=STARTED, continue_requested=True))).reason == \
        "continuing after its time limit; waiting for BeginTime"
    assert decide_stage(ev(waiting, Markers(started=EARLIER))).reason == "BeginTime", "an earlier job's marker"
    assert decide_stage(ev(job("REQUEUED", reason=None))).reason == "requeued by Slurm (a node failure or preemption)"


def test_exit_code_sources_in_order():
    failure = Failure(exit_code=3, exception="ValueError: bad", rank=5, host="n2", job_id="7", time=1.0)
    srun = job("FAILED", exit_code=15)
    full = ev(srun, Markers(started=STARTED, finished_rc=143, failure=failure))
    assert exit_status(full, S.FAILED).code == 3 and exit_status(full, S.FAILED).exception == "ValueError: bad"
    script = ev(srun, Markers(started=STARTED, finished_rc=143))
    assert (exit_status(script, S.FAILED).code, exit_status(script, S.FAILED).source) == (143, "script")
    only_slurm = ev(job("FAILED", exit_code=15, source="sacct"))
    assert (exit_status(only_slurm, S.FAILED).code, exit_status(only_slurm, S.FAILED).source) == (15, "sacct")
    signalled = ev(job("CANCELLED", exit_code=0, signal=9, source="sacct"), Markers(started=STARTED, finished_rc=0))
    assert (exit_status(signalled, S.CANCELLED).code, exit_status(signalled, S.CANCELLED).signal) == (137, 9)
    stale = ev(srun, Markers(started=EARLIER, failure=Failure(3, None, 0, "n1", "3", 1.0)))
    assert exit_status(stale, S.FAILED).code == 15, "an earlier job's failure marker is not this job's"
    assert exit_status(ev(job("RUNNING")), S.RUNNING).code is None


@pytest.mark.parametrize("states, submit_failed, run_state", [
    ([], False, RunState.DONE),
    ([S.DONE, S.DONE], False, RunState.DONE),
    ([S.DONE, S.RUNNING, S.PENDING], False, RunState.RUNNING),
    ([S.DONE, S.STALLED], False, RunState.RUNNING),
    ([S.PENDING, S.PENDING], False, RunState.PENDING),
    ([S.DONE, S.PENDING], False, RunState.RUNNING),
    ([S.DONE, S.FAILED, S.CANCELLED], False, RunState.FAILED),
    ([S.DONE, S.LOST], False, RunState.FAILED),
    ([S.DONE, S.CANCELLED, S.CANCELLED], False, RunState.CANCELLED),
    ([S.DONE, S.CANCELLING, S.CANCELLING], False, RunState.CANCELLED),  # the user's cancel shows at once
    ([S.RUNNING, S.CANCELLING], False, RunState.RUNNING),  # a stage the cancel did not reach still runs
    ([S.NOT_SUBMITTED, S.NOT_SUBMITTED], False, RunState.RENDERED),
    ([S.NOT_SUBMITTED, S.NOT_SUBMITTED], True, RunState.SUBMIT_FAILED),
    ([S.DONE, S.NOT_SUBMITTED], False, RunState.PARTIAL),
    ([S.FAILED, S.RUNNING], False, RunState.RUNNING),
])
def test_run_state_from_stage_states(states, submit_failed, run_state):
    assert decide_run(states, submit_failed) == run_state
