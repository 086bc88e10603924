"""First contact with a cluster: `minitron check --probe` (prove the container) and `submit --smoke`.

The probe is a run like any other, with one `probe` stage per distinct image and partition the stages
use (GPU partition; CPU partition when it differs), rendered by the executor's own `render_script`
(same Pyxis flags, mounts, environment and `python -m jobs.runtime.task` start as every stage), written by
`registry.create_run`, indexed (so `minitron status/logs/cancel RUN` work on it) and submitted through
the executor. The job (jobs/stages/probe.py) writes a JSON report; `launcher/app/compat.py` turns it into problems.

The smoke run is the bundled tiny recipe on the user's own profile, every stage on one node, with short
limits (`SMOKE_OVERRIDES`); its runs are named `smoke-…` and `minitron status` ends with a verdict.
"""

from __future__ import annotations

import dataclasses
import json
import os
import sys
import time
from typing import Any, Optional

import yaml

from jobs.contract import (PIPELINE_KINDS, PROBE, ConfigError, Resources, RunLayout, read_bounded, read_stage_config,
                           stage_config_text)

from ..backends import executor_for
from ..config.executors import traits
from ..config.profile import ClusterProfile, load_profile
from ..config.recipe import load_recipe
from ..config.values import format_minutes
from ..core.errors import ExitCode
from ..planning.plan import Plan, StagePlan
from ..rendering.stageconfig import build_probe_config
from ..runs.registry import Run, create_run, index_run, new_run_id, runs_root
from ..runs.state import LIVE_RUN_STATES
from ..runs.status import RunReport, report_for
from ..runs.submission import cancel_run, submit_run
from . import compat
from .checks import gather_checks
from .views import checks_table, console, print_json, text

PROBE_MINUTES = 10
POLL_S = 2.0
PROGRESS_EVERY_S = 10.0
MAX_REPORT_BYTES = 4 * 1024 * 1024

# ------------------------------------------------------------------------------------------ targets
@dataclasses.dataclass(frozen=True)
class Target:
    stage: str
    role: str                      # gpu | cpu
    partition: Optional[str]
    kinds: tuple[str, ...]         # the stage kinds that run where this probe runs


def probe_targets(profile: ClusterProfile) -> list[Target]:
    """One probe per distinct partition the stages use (one image per profile): GPU stages go to
    `partition`, CPU stages (data) to `cpu_partition` or else `partition`."""
    allocates = traits(profile.executor).uses_partitions
    gpu_partition = profile.partition if allocates else None
    cpu_partition = (profile.cpu_partition or profile.partition) if allocates else None
    every = compat.ALL_KINDS
    gpu_kinds = tuple(k.name for k in PIPELINE_KINDS if k.resources != Resources.CPU)
    cpu_kinds = tuple(k.name for k in PIPELINE_KINDS if k.resources == Resources.CPU)
    if not profile.gpus_per_node:
        return [Target(PROBE.name, "cpu", cpu_partition, every)]
    if cpu_partition == gpu_partition:
        return [Target(PROBE.name, "gpu", gpu_partition, every)]
    return [Target(f"{PROBE.name}_gpu", "gpu", gpu_partition, gpu_kinds),
            Target(f"{PROBE.name}_cpu", "cpu", cpu_partition, cpu_kinds)]


def _time_limit(profile: ClusterProfile, partition: Optional[str]) -> str:
    cap = profile.time_limit_minutes(partition)
    return format_minutes(min(PROBE_MINUTES, cap) if cap else PROBE_MINUTES)


def probe_stage(profile: ClusterProfile, target: Target) -> StagePlan:
    """The probe's StagePlan. A scheduler that allocates GPUs (Slurm) is asked for every GPU of a node, so
    the probe sees what a stage gets; the local executor's processes see the machine's GPUs anyway, so
    the probe runs as one plain process there (no torchrun, which would need the torch it is probing)."""
    allocates = traits(profile.executor).uses_partitions
    gpus = profile.gpus_per_node if target.role == "gpu" and allocates else 0
    return StagePlan(name=target.stage, kind=PROBE.name, depends_on=[], entrypoint=PROBE.entrypoint, nodes=1,
                     gpus_per_node=gpus, partition=target.partition,
                     container=None if profile.container == "none" else profile.container,
                     time_limit=_time_limit(profile, target.partition), attention=profile.attention,
                     why=f"container probe for the {target.role} stages ({', '.join(target.kinds)}): imports, "
                         f"versions, GPUs, job_dir/HF_HOME writable, token")


def default_hf_model() -> Optional[str]:
    """The hub id the default recipe imports (the token check's gated model), or None."""
    try:
        source = load_recipe(None).model.source
    except Exception:  # noqa: BLE001 - the probe does not depend on it
        return None
    return source[len("hf://"):] if source.startswith("hf://") else None


def prepare_probe_run(profile: ClusterProfile, targets: list[Target]) -> Run:
    executor = executor_for(profile.executor)
    stages = [probe_stage(profile, t) for t in targets]
    plan = Plan(recipe="probe", profile=profile.source, executor=profile.executor, stages=stages,
                nodes=profile.nodes, gpus_per_node=profile.gpus_per_node)
    run_id = new_run_id("probe")
    layout = RunLayout(os.path.join(runs_root(profile.job_dir), run_id))
    def rel(path: str) -> str:
        return os.path.relpath(path, layout.run_dir)

    plain = dataclasses.asdict(profile)
    plain.pop("source", None)
    files = {rel(layout.profile): yaml.safe_dump(plain, sort_keys=False),
             rel(layout.plan): plan.text(),
             rel(layout.inputs): json.dumps({"profile": profile.source, "recipe": None, "overrides": [],
                                             "probe": True}, indent=2) + "\n"}
    for target, stage in zip(targets, stages):
        config = build_probe_config(run_id, layout, stage, target.role, profile.job_dir, {"kinds": list(target.kinds)})
        files[rel(layout.stage_config(stage.name))] = stage_config_text(config)
        files[rel(layout.script(stage.name))] = executor.render_script(run_id, layout.run_dir, profile, stage, stages)
    run = create_run(profile.job_dir, run_id, files, plan.names(), profile.executor, source=profile.source)
    index_run(run)
    return run


# ------------------------------------------------------------------------------------------ waiting
def _progress_line(report: RunReport) -> str:
    parts = []
    for s in report.stages:
        detail = f" ({s.reason})" if s.reason and s.state == "PENDING" else ""
        elapsed = f" {int(s.elapsed_s)} s" if s.elapsed_s is not None and s.state == "RUNNING" else ""
        parts.append(f"{s.name} {s.state}{detail}{elapsed}")
    return f"probe {report.run_id}: " + ", ".join(parts)


def wait_for(run: Run, timeout_s: float, say=None) -> tuple[RunReport, bool]:
    """Poll the run's status until nothing is live or `timeout_s` passes; (last report, timed out)."""
    say = say or (lambda line: print(line, file=sys.stderr, flush=True))
    deadline, last_said, last_states = time.time() + timeout_s, 0.0, None
    while True:
        report = report_for(run)
        states = [(s.state, s.reason) for s in report.stages]
        if report.state not in LIVE_RUN_STATES:
            say(_progress_line(report))
            return report, False
        if states != last_states or time.time() - last_said >= PROGRESS_EVERY_S:
            say(_progress_line(report))
            last_said, last_states = time.time(), states
        if time.time() >= deadline:
            return report, True
        time.sleep(POLL_S)


def read_report(run: Run, stage: str) -> Optional[dict]:
    try:
        path = read_stage_config(run.layout.stage_config(stage)).outputs["report"]
        data = json.loads(read_bounded(path, MAX_REPORT_BYTES))
    except (ConfigError, OSError, ValueError, KeyError):
        return None
    return data if isinstance(data, dict) else None


# ------------------------------------------------------------------------------------------ the command
def expectations(profile: ClusterProfile, target: Target, hf_model: Optional[str]) -> dict[str, Any]:
    return {"stage": target.stage, "role": target.role, "kinds": list(target.kinds),
            "gpus_per_node": profile.gpus_per_node if target.role == "gpu" else 0,
            "gpu_memory_gib": profile.gpu.memory_gib if target.role == "gpu" and profile.gpu else None,
            "attention": profile.attention, "hf_model": hf_model,
            "tracking": sorted((profile.tracking.for_stages() or {}).keys())}


def probe_problems(run: Run, profile: ClusterProfile, targets: list[Target], timeout_s: float) -> tuple[
        dict[str, Optional[dict]], list[compat.Problem]]:
    submit_run(run)
    status, timed_out = wait_for(run, timeout_s)
    if timed_out:
        cancel_run(run, None)
    by_name = {s.name: s for s in status.stages}
    hf_model = default_hf_model()
    reports: dict[str, Optional[dict]] = {}
    problems: list[compat.Problem] = []
    for target in targets:
        stage = by_name[target.stage]
        report = reports[target.stage] = read_report(run, target.stage)
        if timed_out and stage.state in ("PENDING", "RUNNING", "STALLED"):
            reason = f", {stage.reason}" if stage.reason else ""
            problems.append(compat.Problem(
                "FAIL", target.stage, f"the probe job did not finish within {timeout_s:g} s ({stage.state}{reason}); "
                f"it was cancelled", f"rerun with a longer --timeout, or look at the queue of partition "
                f"{target.partition or '-'} (minitron status {run.id})"))
            continue
        if report is None:
            cause = stage.exception or (f"exit {stage.exit_code}" if stage.exit_code is not None else stage.state)
            problems.append(compat.Problem(
                "FAIL", target.stage, f"the probe job ended {stage.state} without a report ({cause})",
                f"see its log (minitron logs {run.id} {target.stage}): the container did not start, or the "
                f"profile's python ({profile.python}) is not there"))
            continue
        problems += compat.compare(report, expectations(profile, target, hf_model))
    return reports, problems


def run_check(profile_arg: Optional[str], probe: bool, timeout_s: float, as_json: bool) -> int:
    profile = load_profile(profile_arg)
    checks = gather_checks(profile)
    failed = any(c.result == "FAIL" for c in checks)
    out: dict[str, Any] = {"profile": profile.source, "checks": [dataclasses.asdict(c) for c in checks]}
    if not as_json:
        checks_table(profile.source, checks)
    if probe and failed:
        out["probe"] = "skipped: a check above failed"
        if not as_json:
            console().print("probe skipped: fix the failed checks above first")
    elif probe:
        targets = probe_targets(profile)
        run = prepare_probe_run(profile, targets)
        if not as_json:
            console().print(f"probe run {text(run.id)}: {len(targets)} job(s) ({', '.join(t.stage for t in targets)}), "
                            f"waiting up to {timeout_s:g} s")
        reports, problems = probe_problems(run, profile, targets, timeout_s)
        out.update(run_id=run.id, run_dir=run.dir, probes=reports, problems=[p.to_json() for p in problems],
                   compatibility=[dataclasses.asdict(s) for s in compat.STACKS])
        failed = failed or compat.worst(problems) == "FAIL"
        if not as_json:
            for report in reports.values():
                if report is not None:
                    unfinished = "" if report.get("finished") else f" [unfinished, stopped at: {report.get('step')}]"
                    console().print(text(compat.summary(report) + unfinished), soft_wrap=True)
            for problem in problems:
                style = "red" if problem.severity == "FAIL" else "yellow"
                console().print(f"[{style}]{text(problem.line(), 2000)}[/]", soft_wrap=True)
            if not problems:
                console().print("[green]probe: no problems: this image and partition run the stage jobs[/]")
            console().print(f"full report: minitron check --probe --json, or {text(run.dir)}/work/*/probe.json")
    out["ok"] = not failed
    if as_json:
        print_json(out)
    return ExitCode.CHECK_FAILED if failed else ExitCode.OK
