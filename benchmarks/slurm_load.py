#!/usr/bin/env python3
"""Slurm load of the launcher on a real (single-host) Slurm testbed.

1. Slurm client calls and wall time per `status` refresh, for runs of 4 (the smallest stage graph a
   recipe allows), 8 (the tiny test recipe) and 50 stages, while the run is live, part-finished and
   finished (still in slurmctld's memory, then purged after MinJobAge). A refresh is what
   `minitron status` does after loading the run record: `launcher.runs.status.query_runs([(run, record)])`
   (markers first, then one batched `SlurmExecutor.query` for the jobs the markers cannot settle) and
   `launcher.runs.status.run_report`, with the module's `executor_for` pointed at a SlurmExecutor whose
   SlurmClient we keep and whose `calls` we read (what `report_for` does, minus loading the record).
   Also `minitron status --json` of each finished run as a fresh process.
2. Time from `minitron submit` start to every job queued, for the tutorial recipe's 8 stages
   (minitron-8b-wikitext rendered for a testbed profile, every stage the sleeping workload), with a
   breakdown from logging sbatch wrappers on PATH.
3. The gap between a stage ending and its dependent starting, from the run's markers (file mtimes,
   sub-second) and Slurm's job completion log (EndTime, EligibleTime, StartTime; whole seconds).

Usage: python3.11 benchmarks/slurm_load.py [--testbed-dir DIR] [--acct none|slurmdbd] [--no-write]
The stages run tests/integration/workload.py (sleeps MT_STEP_SECONDS per step instead of training).
"""

from __future__ import annotations

import argparse
import collections
import datetime as dt
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

from jobs.contract import Marker  # noqa: E402
from launcher.runs import status as status_mod  # noqa: E402
from launcher.backends.slurm import SlurmClient, SlurmExecutor  # noqa: E402
from launcher.runs.registry import open_run  # noqa: E402
from launcher.runs.state import LIVE as LIVE_STAGE_STATES, LIVE_RUN_STATES, RunState  # noqa: E402

LIVE = {s.value for s in LIVE_STAGE_STATES}     # PENDING, RUNNING, STALLED
LIVE_RUNS = {s.value for s in LIVE_RUN_STATES}  # PENDING, RUNNING
CALLS_BAR = 3


def short(argv: list[str]) -> str:
    return argv[0] + (" -c" if "--completion" in argv else "")


# ------------------------------------------------------------------------------------ recipes
def recipe_for(size: int, path: Path) -> tuple[str, str]:
    """A test recipe with `size` stages (4, 8 or 4 + 2k) and a sentence saying how it is built."""
    fast = {"stages.finetune.steps": 10, "stages.distill.steps": 10}
    if size == 4:
        C.test_recipe(path, **fast, **{"model.source": "nemo:/x", "stages.report.enabled": False},
                      pruning={"depth": {"drop_layers": [3, 4]}}, students=["depth"])
        return str(path), ("tiny test recipe, `model.source: nemo:/x` (no import), one pruning entry and "
                           "student, `stages.report.enabled: false`: data → finetune → prune_depth → "
                           "distill_depth (data, finetune, prune and distill cannot be disabled)")
    if size == 8:
        C.test_recipe(path, **fast)
        return str(path), "the tiny test recipe: data, import, finetune, 2 × (prune, distill), report"
    students = (size - 4) // 2
    assert size == 4 + 2 * students
    pruning = {}
    for i in range(students):
        pruning[f"s{i:02d}"] = ({"drop_layers": [i + 2]} if i < 3 else
                                {"target_ffn_hidden_size": 512 - 16 * (i - 2)})
    C.test_recipe(path, **fast, pruning=pruning, students=list(pruning))
    return str(path), (f"tiny test recipe with {students} pruning entries, each a student: data, import, "
                       f"finetune, {students} × (prune, distill), report")


# ------------------------------------------------------------------------------------ 1. status load
class Refresher:
    """One status refresh as `minitron status` makes it, with the Slurm client calls counted."""

    def __init__(self, run_dir: str):
        self.run = open_run(run_dir)
        self.client = SlurmClient()
        self.executor = SlurmExecutor(self.client)
        # query_runs asks executor_for(record.executor) for its backend: hand it ours, whose calls we count
        status_mod.executor_for = lambda kind: self.executor if kind == "slurm" else _executor_for(kind)

    def refresh(self) -> tuple[object, list[str], float]:
        before = len(self.client.calls)
        start = time.perf_counter()
        record = self.run.load_record()
        result = status_mod.query_runs([(self.run, record)]).get(record.executor)
        report = status_mod.run_report(self.run, record, result)
        elapsed = time.perf_counter() - start
        return report, [short(a) for a in self.client.calls[before:]], elapsed


_executor_for = status_mod.executor_for


def ended_badly(report) -> bool:
    """Not live and not DONE: FAILED, CANCELLED, PARTIAL, RENDERED, SUBMIT_FAILED."""
    return report.overall != RunState.DONE.value and report.overall not in LIVE_RUNS


def phase_of(report) -> str:
    states = [s.state for s in report.stages]
    if report.overall == "DONE":
        return "finished"
    if all(s in LIVE for s in states):
        return "live: all pending/running"
    if any(s in LIVE for s in states):
        return "live: part finished"
    return f"other ({report.overall})"


def status_load(bed, work: Path, minitron: list[str], env: dict[str, str], size: int, step_s: float,
                records: list[dict], descriptions: dict[int, str], cli_times: dict[int, list[float]]) -> str:
    sub_dir = work / f"s{size}"
    sub_dir.mkdir()
    profile = C.test_profile(sub_dir / "profile.yaml", sub_dir / "jobs")
    recipe, descriptions[size] = recipe_for(size, sub_dir / "recipe.yaml")
    env = {**env, "MT_STEP_SECONDS": str(step_s)}
    proc = C.run(minitron + ["submit", "--json", "--profile", profile, "--recipe", recipe], env=env)
    if proc.returncode != 0:
        raise SystemExit(f"submit ({size} stages) failed: {proc.stderr}{proc.stdout}")
    sub = json.loads(proc.stdout)
    run_dir, jobs = sub["run_dir"], list(sub["jobs"].values())
    assert len(jobs) == size, (size, len(jobs))
    refresher = Refresher(run_dir)
    print(f"[bench] {size} stages: submitted {sub['run_id']}", file=sys.stderr, flush=True)

    def record(phase: str | None = None) -> object:
        report, calls, elapsed = refresher.refresh()
        records.append({"size": size, "phase": phase or phase_of(report), "calls": calls, "seconds": elapsed})
        return report

    for _ in range(10):  # back to back right after submit: everything pending or running
        record()
    deadline = time.monotonic() + 900
    while True:  # every 0.5 s until the run is done (`minitron status --watch` polls every 10 s)
        report = record()
        if report.overall == "DONE":
            break
        if ended_badly(report) or time.monotonic() > deadline:
            raise SystemExit(f"{size}-stage run ended {report.overall}: "
                             + json.dumps({s.name: s.state for s in report.stages}))
        time.sleep(0.5)
    known = C.squeue_known(bed, jobs)
    phase = f"finished: {len(known)}/{size} jobs still in slurmctld"
    records[-1]["phase"] = phase  # the refresh that saw it done
    for _ in range(5):
        record(phase)
    C.wait_purged(bed, jobs)
    for _ in range(10):
        record("finished: all purged from slurmctld")
    for _ in range(5):  # the CLI as a user runs it: fresh process, finished and purged
        start = time.perf_counter()
        proc = C.run(minitron + ["status", sub["run_id"], "--json"], env=env)
        cli_times[size].append(time.perf_counter() - start)
        assert proc.returncode == 0, proc.stderr
    return run_dir


# ------------------------------------------------------------------------------------ 2. submit timing
def sbatch_wrappers(bindir: Path, log: Path) -> None:
    bindir.mkdir(exist_ok=True)
    real = shutil.which("sbatch")
    (bindir / "sbatch").write_text(
        "#!/bin/bash\n"
        f'echo "start $EPOCHREALTIME" >> {log}\n'
        f'{real} "$@"\nrc=$?\n'
        f'echo "end $EPOCHREALTIME" >> {log}\n'
        "exit $rc\n")
    (bindir / "sbatch").chmod(0o755)


def submit_timing(bed, work: Path, minitron: list[str], env: dict[str, str], repeats: int,
                  step_s: float, gap_runs: int) -> tuple[dict, list[str]]:
    sub_dir = work / "tutorial"
    sub_dir.mkdir()
    profile = C.test_profile(sub_dir / "profile.yaml", sub_dir / "jobs",
                             timeouts={"gpu": "04:00:00", "cpu": "04:00:00"}, cpus_per_node=8)
    recipe = C.test_recipe(sub_dir / "recipe.yaml", base="minitron-8b-wikitext")
    argv = minitron + ["submit", "--json", "--profile", profile, "--recipe", recipe]
    env = {**env, "MT_STEP_SECONDS": str(step_s)}
    bindir, log = sub_dir / "bin", sub_dir / "sbatch.log"
    sbatch_wrappers(bindir, log)
    wrapped_env = {**env, "PATH": f"{bindir}:{env['PATH']}"}
    result: dict = {"plain": [], "wrapped": [], "prep": [], "sbatch_total": [], "sbatch_each": [], "after": []}

    def one(wrapped: bool, keep: bool = False) -> tuple[dict, float]:
        C.wait_idle_queue(bed)
        log.write_text("")
        start = time.time()
        t0 = time.perf_counter()
        proc = subprocess.run(argv, capture_output=True, text=True, env=wrapped_env if wrapped else env,
                              stdin=subprocess.DEVNULL)
        elapsed = time.perf_counter() - t0
        end = time.time()
        if proc.returncode != 0:
            raise SystemExit(f"tutorial submit failed: {proc.stderr}{proc.stdout}")
        sub = json.loads(proc.stdout)
        jobs = list(sub["jobs"].values())
        known = C.squeue_known(bed, jobs)
        if len(jobs) != 8 or set(known) != set(jobs):
            raise SystemExit(f"not every job is queued after submit returned: {sub['jobs']} vs {known}")
        if wrapped:
            stamps = [line.split() for line in log.read_text().splitlines()]
            starts = [float(t) for k, t in stamps if k == "start"]
            ends = [float(t) for k, t in stamps if k == "end"]
            result["prep"].append(starts[0] - start)
            result["sbatch_total"].append(ends[-1] - starts[0])
            result["sbatch_each"] += [e - s for s, e in zip(starts, ends)]
            result["after"].append(end - ends[-1])
        if not keep:
            bed.run(["scancel", *jobs])
        return sub, elapsed

    for _ in range(repeats):
        result["plain"].append(one(False)[1])
    for _ in range(repeats):
        result["wrapped"].append(one(True)[1])
    run_dirs = []
    for _ in range(gap_runs):  # these run to the end, one at a time, alone: the dependency gaps
        sub, elapsed = one(False, keep=True)
        result["plain"].append(elapsed)
        print(f"[bench] tutorial run {sub['run_id']} submitted; waiting for it to finish", file=sys.stderr,
              flush=True)
        refresher = Refresher(sub["run_dir"])
        deadline = time.monotonic() + 900
        while True:
            report, _calls, _t = refresher.refresh()
            if report.overall == "DONE":
                break
            if ended_badly(report) or time.monotonic() > deadline:
                raise SystemExit(f"tutorial run ended {report.overall}: "
                                 + json.dumps({s.name: s.state for s in report.stages}))
            time.sleep(2.0)
        run_dirs.append(sub["run_dir"])
    return result, run_dirs


# ------------------------------------------------------------------------------------ 3. gaps
def slurm_time(text: str) -> float:
    return dt.datetime.fromisoformat(text).timestamp()


def gaps(bed, run_dir: str) -> list[dict]:
    """For each stage with parents: latest parent end → its start, from markers and from the jobcomp log."""
    run = open_run(run_dir)
    record = run.load_record()
    comp = C.jobcomp(bed)
    rows = []
    for stage in run.plan.stages:
        if not stage.depends_on:
            continue
        name, parents = stage.name, stage.depends_on
        parent_end = max(os.stat(run.layout.marker(p, Marker.FINISHED)).st_mtime for p in parents)
        child_start = os.stat(run.layout.marker(name, Marker.STARTED)).st_mtime
        recs = [comp.get(record.stages[p].job_id) for p in parents]
        child = comp.get(record.stages[name].job_id)
        row = {"stage": name, "parents": parents, "markers": child_start - parent_end}
        if child and all(recs):
            end = max(slurm_time(r["EndTime"]) for r in recs)
            row["eligible"] = slurm_time(child["EligibleTime"]) - end
            row["start"] = slurm_time(child["StartTime"]) - slurm_time(child["EligibleTime"])
            row["total"] = slurm_time(child["StartTime"]) - end
        rows.append(row)
    return rows


def resource_wait(g: dict) -> bool:
    """Started ≥ 2 s after it became eligible: it waited for CPUs/GPUs, not for the dependency."""
    return g.get("start", 0) >= 2


# ------------------------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--testbed-dir", help="use this running testbed instead of starting one")
    parser.add_argument("--acct", choices=("none", "slurmdbd"), default="none",
                        help="accounting of the testbed started here (default none: sacct falls back to "
                             "the job completion log)")
    parser.add_argument("--sizes", default="4,8,50", help="stage counts (4, 8, or 4 + 2k; default 4,8,50)")
    parser.add_argument("--step-seconds", type=float, default=0.3, help="workload sleep per step (default 0.3)")
    parser.add_argument("--submit-repeats", type=int, default=5, help="tutorial submissions per variant")
    parser.add_argument("--gap-runs", type=int, default=3, help="tutorial runs taken to the end (default 3)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()
    sizes = [int(x) for x in args.sizes.split(",")]

    work = Path(tempfile.mkdtemp(prefix="mtload"))
    minitron, extra = C.minitron_cmd()
    records: list[dict] = []
    descriptions: dict[int, str] = {}
    cli_times: dict[int, list[float]] = {s: [] for s in sizes}
    run_dirs: dict[int, str] = {}
    with C.testbed(args.testbed_dir, acct=args.acct, port_start=17500) as bed:
        os.environ["SLURM_CONF"] = str(bed.conf)  # for the in-process SlurmClient
        env = {**os.environ, **extra, "MINITRON_HOME": str(work / "home")}
        env.pop("MINITRON_PROFILE", None)
        acct = bed.acct
        for size in sizes:
            run_dirs[size] = status_load(bed, work, minitron, env, size, args.step_seconds, records,
                                         descriptions, cli_times)
        submit, tutorial_dirs = submit_timing(bed, work, minitron, env, args.submit_repeats, 0.05, args.gap_runs)
        gap_rows = [g for d in tutorial_dirs for g in gaps(bed, d)]
        big = max(sizes)
        big_gaps = gaps(bed, run_dirs[big])
        min_job_age = bed.min_job_age
        version = bed.run(["sinfo", "--version"]).stdout.strip()

    # ---- tables
    by = collections.OrderedDict()
    for r in records:
        by.setdefault((r["size"], r["phase"]), []).append(r)
    rows = []
    worst = 0
    for (size, phase), recs in by.items():
        counts = [len(r["calls"]) for r in recs]
        worst = max(worst, max(counts))
        seqs = collections.Counter(" + ".join(r["calls"]) or "none" for r in recs)
        t = C.summary([r["seconds"] for r in recs])
        rows.append([size, phase, len(recs), f"{min(counts)}–{max(counts)}" if min(counts) != max(counts)
                     else str(min(counts)), "; ".join(f"{s} (×{n})" for s, n in seqs.most_common()),
                     C.ms(t["median"]), C.ms(t["max"])])
    load_table = C.table(["stages", "phase", "refreshes", "Slurm calls / refresh", "calls made",
                          "time / refresh (median)", "max"], rows)
    cli_rows = [[size, C.secs(statistics.median(v)), C.secs(min(v)), C.secs(max(v)), len(v)]
                for size, v in cli_times.items()]
    cli_table = C.table(["stages", "`minitron status --json`, finished + purged: median", "min", "max", "n"],
                        cli_rows)
    grows = len({max(len(r["calls"]) for r in records if r["size"] == s) for s in sizes}) > 1
    verdict_calls = "met" if worst <= CALLS_BAR and not grows else "MISSED"

    s_plain, s_wrapped = C.summary(submit["plain"]), C.summary(submit["wrapped"])
    each = C.summary(submit["sbatch_each"])
    submit_table = C.table(["measure", "median", "min", "max", "n"], [
        ["`minitron submit` start → exit, every job queued (no wrappers)", C.secs(s_plain["median"]),
         C.secs(s_plain["min"]), C.secs(s_plain["max"]), s_plain["n"]],
        ["same, with logging sbatch wrappers on PATH", C.secs(s_wrapped["median"]), C.secs(s_wrapped["min"]),
         C.secs(s_wrapped["max"]), s_wrapped["n"]],
        ["↳ start → first sbatch (plan, render, write the run dir)", *[C.secs(f(submit["prep"])) for f in
                                                                       (statistics.median, min, max)],
         len(submit["prep"])],
        ["↳ first sbatch start → last sbatch end (8 calls)", *[C.secs(f(submit["sbatch_total"])) for f in
                                                               (statistics.median, min, max)],
         len(submit["sbatch_total"])],
        ["↳ one sbatch call", C.secs(each["median"]), C.secs(each["min"]), C.secs(each["max"]), each["n"]],
        ["↳ last sbatch end → exit (state, JSON)", *[C.secs(f(submit["after"])) for f in
                                                    (statistics.median, min, max)], len(submit["after"])],
    ])

    def spread(values: list[float], digits: int) -> str:
        if not values:
            return "-"
        med = statistics.median(values)
        return (f"{med:.{digits}f} s" if len(values) == 1 else
                f"{med:.{digits}f} s ({min(values):.{digits}f}–{max(values):.{digits}f})")

    def gap_table(rows_: list[dict]) -> str:
        per_stage: dict[str, list[dict]] = collections.OrderedDict()
        for g in rows_:
            per_stage.setdefault(g["stage"], []).append(g)
        out = []
        for stage, gs in per_stage.items():
            parents = gs[0]["parents"]
            out.append([stage, ", ".join(parents) if len(parents) <= 2 else f"{len(parents)} distills", len(gs),
                        spread([g["markers"] for g in gs], 2),
                        *(spread([g[k] for g in gs if k in g], 0) for k in ("eligible", "start", "total")),
                        sum(resource_wait(g) for g in gs)])
        return C.table(["stage", "waits for", "runs", "parent's finish marker → its start marker",
                        "parent EndTime → EligibleTime", "EligibleTime → StartTime", "EndTime → StartTime",
                        "runs it waited ≥ 2 s for resources"], out)

    def gap_summary(rows_: list[dict], what: str) -> str:
        free = [g["markers"] for g in rows_ if not resource_wait(g)]
        waited = [g for g in rows_ if resource_wait(g)]
        text = (f"{what}: {len(rows_)} dependent stages; the {len(free)} that found resources free started "
                f"{statistics.median(free):.2f} s (median) / {max(free):.2f} s (max) after their last parent's "
                f"finish marker" if free else f"{what}: every dependent stage waited for resources")
        if waited:
            text += (f"; {len(waited)} waited ≥ 2 s after becoming eligible for CPUs/GPUs held by other stages "
                     f"(markers gap up to {max(g['markers'] for g in waited):.1f} s)")
        return text + "."
    body = "\n".join([
        f"## Slurm load (`benchmarks/slurm_load.py{'' if acct == 'none' else ' --acct ' + acct}`)", "",
        *C.machine_lines([
            f"- Slurm: the `.ci/slurm-testbed` cluster ({version}, "
            f"4 emulated nodes × 8 CPUs × 4 GPUs on this one host, `SchedulerParameters=sched_interval=1,"
            f"bf_interval=1`, MinJobAge {min_job_age} s, accounting `{acct}`"
            + (": sacct reports it disabled, so finished jobs come from `sacct -c`, the jobcomp file)"
               if acct == "none" else ")"),
            "- stages: tests/integration/workload.py (sleeps per step instead of training), "
            f"MT_STEP_SECONDS={args.step_seconds} for the load runs, 0.05 for the tutorial run",
            "- a refresh = `launcher.runs.status.query_runs` + `run_report` for the run (what `minitron status` runs "
            "after loading the run record: markers first, then one batched `SlurmExecutor.query` for the jobs "
            "the markers cannot settle); calls counted with `SlurmClient.calls`; live refreshes every 0.5 s "
            "(10 back to back first)",
        ]),
        *[f"- {size} stages: {text}" for size, text in descriptions.items()],
        "", "### Slurm client calls per status refresh", "", load_table, "",
        f"Bar: ≤ {CALLS_BAR} calls per refresh, not growing with the stage count: **{verdict_calls}** "
        f"(worst {worst}; per-size worst: "
        + ", ".join(f"{s}: {max(len(r['calls']) for r in records if r['size'] == s)}" for s in sizes) + ").", "",
        cli_table, "",
        "### Submit: the tutorial recipe's 8 stages", "",
        "minitron-8b-wikitext with every stage's entrypoint the workload, on the testbed profile of "
        "tests/integration/helpers.py (4 nodes × 2 GPUs) plus `cpus_per_node: 8` (the testbed's nodes; caps the data stage's 32 workers) and time limits raised to 04:00:00. Each submission is "
        "checked with squeue right after `minitron submit` exits (all 8 jobs known, PENDING/RUNNING), then "
        "cancelled; the last one runs to the end.", "",
        submit_table, "",
        f"### From a stage's end to its dependent's start ({args.gap_runs} tutorial runs, one at a time, alone "
        "on the cluster; median (min–max) over the runs)", "",
        gap_table(gap_rows), "",
        gap_summary(gap_rows, "Tutorial runs"), "",
        "On this profile each 4-node distill asks for every CPU of every testbed node (2 tasks × "
        "`--cpus-per-task=4`), so the second distill waits for the first to end: that is the resource wait "
        "counted above, not a dependency delay.", "",
        gap_summary(big_gaps, f"The {big}-stage run above (resource-bound: two 4-node distills fit at a time)"), "",
        "The markers are written by the stage's batch script (started: first line; finished: after srun), so "
        "the markers gap is everything between the work ending and the next work starting: the batch script "
        "exiting, slurmd reporting the job complete, slurmctld releasing the dependency and scheduling, and "
        "the next batch script starting. The launcher takes no part: the edges were given to sbatch "
        "(`--dependency=afterok:…`) at submit time and nothing of ours polls in between.", "",
    ])
    print(body)
    if not args.no_write:
        section = "slurm_load" if acct == "none" else f"slurm_load_{acct}"
        C.write_section(section, body)
        print(f"[bench] wrote the {section} section of {C.RESULTS}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
