"""Slurm's output parsed without Slurm: squeue, sacct, the job completion log (`sacct -c`) and sinfo,
on text recorded from the project's Slurm 22.05 testbed (tests/slurm_output/README.md), as submitit
tests its parsers. Then the state machine over those parses: what `minitron status` would say."""

from __future__ import annotations

from pathlib import Path

import pytest

from jobs.contract import Markers, Started
from launcher.backends.slurm import (JOBCOMP_FIELDS, parse_duration, parse_exit_code, parse_sacct, parse_squeue,
                                      parse_timestamp)
from launcher.backends.slurm_preflight import NodeGroup, parse_sinfo
from launcher.runs.state import Evidence, StageState, decide_stage, exit_status

OUT = Path(__file__).resolve().parent / "slurm_output"
IDS = [str(i) for i in range(1, 8)]  # data, import, finetune, prune_depth, prune_width, distill_depth, report


def text(name: str) -> str:
    return (OUT / name).read_text()


def test_squeue_of_a_live_run():
    jobs = parse_squeue(text("squeue_live.txt"))
    assert set(jobs) == set(IDS)
    assert jobs["3"].state == "RUNNING" and jobs["3"].nodes == "n[1-4]" and jobs["3"].elapsed_s == 2
    assert jobs["3"].start_time == parse_timestamp("2026-12-01T21:43:29")
    pending = jobs["6"]
    assert pending.state == "PENDING" and pending.reason == "Dependency" and pending.live
    assert pending.nodes == "4", "a pending job shows its node count"
    assert pending.start_time is None  # N/A
    assert jobs["1"].state == "COMPLETED" and jobs["1"].reason is None and not jobs["1"].live


def test_squeue_keeps_the_reasons_of_ended_jobs():
    jobs = parse_squeue(text("squeue_ended.txt"))
    assert jobs["7"].state == "CANCELLED" and jobs["7"].reason == "DependencyNeverSatisfied"
    assert jobs["6"].state == "FAILED" and jobs["6"].reason == "NonZeroExitCode"
    assert jobs["7"].nodes == "1"


def test_sacct_exit_codes_signals_and_placeholders():
    jobs = parse_sacct(text("sacct.txt"), IDS, "sacct")
    assert set(jobs) == set(IDS)
    assert jobs["3"].state == "COMPLETED" and jobs["3"].elapsed_s == 7 and jobs["3"].nodes == "n[1-4]"
    assert jobs["7"].nodes is None, "'None assigned' is no node list"
    assert jobs["7"].start_time is None and jobs["7"].end_time == parse_timestamp("2026-12-01T21:43:39")
    # sacct says 15 for the job whose tasks exited 3 and were then terminated: only the failure marker knows 3
    assert (jobs["6"].exit_code, jobs["6"].signal) == (15, None)
    running_cancelled = parse_sacct(text("sacct_cancelled_running.txt"), ["8"], "sacct")["8"]
    assert running_cancelled.state == "CANCELLED", "'CANCELLED by 0' is CANCELLED"


def test_job_completion_log_through_sacct_c():
    jobs = parse_sacct(text("jobcomp.txt"), IDS, "jobcomp", JOBCOMP_FIELDS)
    assert set(jobs) == set(IDS)
    assert jobs["7"].nodes is None, "'(null)' is no node list"
    assert jobs["6"].exit_code == 143 and jobs["6"].source == "jobcomp"
    assert jobs["7"].reason is None  # the completion log has no reason column


def test_sacct_ignores_jobs_not_asked_for_and_keeps_the_last_row_of_a_requeued_job():
    lines = "12|REQUEUED|0:0|5|00:10:00|1|n1|None|2026-12-01T21:00:00|2026-12-01T21:00:05\n" \
            "12|COMPLETED|0:0|9|00:10:00|1|n2|None|2026-12-01T21:01:00|2026-12-01T21:01:09\n" \
            "13|FAILED|1:0|1|00:10:00|1|n1|None|2026-12-01T21:00:00|2026-12-01T21:00:01\n"
    jobs = parse_sacct(lines, ["12"], "sacct")
    assert list(jobs) == ["12"] and jobs["12"].state == "COMPLETED" and jobs["12"].nodes == "n2"


@pytest.mark.parametrize("raw, expected", [("0:0", (0, None)), ("3:0", (3, None)), ("0:15", (0, 15)),
                                           ("143:0", (143, None)), ("", (None, None)), ("x:y", (None, None))])
def test_exit_code_and_signal(raw, expected):
    assert parse_exit_code(raw) == expected


@pytest.mark.parametrize("raw, seconds", [("0:07", 7), ("1:02:03", 3723), ("2-00:00:01", 172801), ("47", 47),
                                          ("UNLIMITED", None), ("", None)])
def test_durations(raw, seconds):
    assert parse_duration(raw) == seconds


def test_malformed_lines_are_skipped():
    assert parse_squeue("garbage\n|||\n1|RUNNING\n") == {}
    assert parse_sacct("nope\n1|COMPLETED\n", ["1"], "sacct") == {}


def test_sinfo_partitions_nodes_and_gpus():
    parts = parse_sinfo(text("sinfo.txt"))
    assert set(parts) == {"gpu", "cpu"}
    assert parts["gpu"].nodes == 4 and parts["gpu"].gpus_per_node == 4
    mixed = parse_sinfo("batch*|gpu:h100:8(S:0-1)|4:00:00|6|n[1-6]\nbatch*|gpu:h100:4|4:00:00|2|n[7-8]\n")
    assert mixed["batch"].nodes == 8 and mixed["batch"].gpus_per_node == 8
    # a socket list with a comma (S:0,1) is not a gres separator: the count after it is still found
    assert parse_sinfo("a100|gpu:a100:4(S:0,1)|1-00:00:00|2|a[1-2]\n")["a100"].gpus_per_node == 4


def test_sinfo_node_sizes_per_group():
    """%c and %m: the testbed's 8 CPUs and 4000 MB per node; a `+` (nodes of a group differ) is a minimum."""
    gpu = parse_sinfo(text("sinfo.txt"))["gpu"]
    assert gpu.node_groups == [NodeGroup(4, 8, 4000)]
    assert gpu.nodes_with(8, 4000) == 4 and gpu.nodes_with(9, 0) == 0 and gpu.nodes_with(0, 4001) == 0
    mixed = parse_sinfo("b|gpu:8|infinite|3|n[1-3]|64+|512000+\nb|gpu:8|infinite|1|n4|128|2000000\n")["b"]
    assert mixed.nodes == 4 and mixed.nodes_with(64, 512000) == 4 and mixed.nodes_with(65, 0) == 1
    assert (mixed.most_cpus, mixed.most_memory_mb) == (128, 2000000)
    apart = parse_sinfo("b|gpu:8|infinite|1|n1|256|512000\nb|gpu:8|infinite|1|n2|64|2000000\n")["b"]
    assert (apart.most_cpus, apart.most_memory_mb) == (256, 2000000)  # most of each need not be one node's
    assert parse_sinfo("b|gpu:8|infinite|1|n1\n")["b"].nodes_with(1, 1) is None  # sizes not recorded


# -- the state machine over the recorded parses ----------------------------------------------------
def _evidence(job, markers=None, cancelled=False, job_id=None):
    return Evidence(job_id=job_id or (job.job_id if job else "99"), cancelled_by_user=cancelled, job=job,
                    markers=markers or Markers(), now=0.0)


def test_a_dependent_cancelled_by_slurm_reads_dependency_never_satisfied_even_from_accounting():
    from_squeue = parse_squeue(text("squeue_ended.txt"))["7"]
    from_sacct = parse_sacct(text("sacct.txt"), IDS, "sacct")["7"]  # accounting keeps the stale 'Dependency'
    from_jobcomp = parse_sacct(text("jobcomp.txt"), IDS, "jobcomp", JOBCOMP_FIELDS)["7"]
    for job in (from_squeue, from_sacct, from_jobcomp):
        decision = decide_stage(_evidence(job))
        assert (decision.state, decision.reason) == (StageState.CANCELLED, "DependencyNeverSatisfied"), job


def test_a_running_job_cancelled_by_scancel_shows_its_signal_not_exit_0():
    job = parse_sacct(text("sacct_cancelled_running.txt"), ["8"], "sacct")["8"]
    job = type(job)(**{**job.__dict__, "signal": 15})  # as `sacct` reports 0:15 for a step killed by SIGTERM
    ev = _evidence(job, cancelled=True)
    decision = decide_stage(ev)
    assert decision.state == StageState.CANCELLED and decision.reason == "cancelled by user"
    status = exit_status(ev, decision.state)
    assert (status.code, status.signal) == (143, 15)


def test_the_failing_rank_s_own_code_beats_srun_s_and_accounting_s():
    job = parse_sacct(text("sacct.txt"), IDS, "sacct")["6"]
    from jobs.contract import Failure
    markers = Markers(started=Started(job_id="6", host="n1", time=1.0, attempt=0), finished_rc=143,
                      failure=Failure(exit_code=3, exception=None, rank=6, host="n4", job_id="6", time=2.0))
    ev = _evidence(job, markers)
    assert decide_stage(ev).state == StageState.FAILED
    status = exit_status(ev, StageState.FAILED)
    assert (status.code, status.source) == (3, "task")
    without_marker = _evidence(job, Markers(started=markers.started, finished_rc=143))
    assert exit_status(without_marker, StageState.FAILED).code == 143, "then the script's code"
