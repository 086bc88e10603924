"""The local executor's supervisor: a detached process that walks one run's stage graph on this machine.

It starts each queued stage's script when the stage's dependencies are done (and, with
`local_parallel`, when the GPUs it needs are free), each in its own process group with its own
CUDA_VISIBLE_DEVICES, cancels dependents when a stage fails, and records everything in
`RUN_DIR/local/supervisor.json` (atomic writes), which `minitron status` reads through
LocalExecutor.query. Its job states are Slurm's names (PENDING, RUNNING, COMPLETED, FAILED,
CANCELLED), so one state machine (launcher/runs/state.py) reads both backends. When every stage of
the run is complete it records the stages' measured times for the planner (launcher/planning/
calibration.py). Started by `minitron submit`/`resume` as
`python -m launcher.backends.local_supervisor RUN_DIR GENERATION STAGE...`.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from typing import Any

from jobs.contract import RunLayout, StageExit, read_markers

from ..config.profile import ClusterProfile, load_profile
from ..core.errors import UserError
from ..core.files import private_dir, write_json
from ..planning import calibration
from ..planning.plan import Plan, PlanError, read_plan

POLL_S = 0.5
TERMINAL = {"COMPLETED", "FAILED", "CANCELLED"}
MAX_SUPERVISOR_BYTES = 1024 * 1024


def supervisor_file(run) -> str:
    return os.path.join(run.layout.local, "supervisor.json")


def cancel_request(run, stage: str) -> str:
    return os.path.join(run.layout.local, f"cancel-{stage}")


def read_supervisor(run) -> dict[str, Any]:
    try:
        fd = os.open(supervisor_file(run), os.O_RDONLY | os.O_NOFOLLOW)
        with os.fdopen(fd, encoding="utf-8") as handle:
            data = json.loads(handle.read(MAX_SUPERVISOR_BYTES))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def pid_alive(pid: int | None) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:  # a zombie is not alive
        with open(f"/proc/{pid}/stat") as handle:
            return handle.read().split(") ", 1)[1][0] != "Z"
    except OSError:
        return True


def kill_group(pgid: int, grace_s: float = 10.0) -> None:
    """SIGTERM the stage's process group, then SIGKILL whatever is left after the grace period."""
    try:
        os.killpg(pgid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.time() + grace_s
    while time.time() < deadline:
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return
        time.sleep(0.2)
    try:
        os.killpg(pgid, signal.SIGKILL)
    except ProcessLookupError:
        pass


class SupervisedRun:
    """The run as its supervisor reads it. The launcher checked the directory before starting it; the
    supervisor, a process of its own that outlives that check, checks it again (runs.registry.open_run's
    directory checks: backends sit below the registry)."""

    def __init__(self, run_dir: str):
        self.dir = os.path.abspath(run_dir)
        private_dir(os.path.dirname(self.dir), "the runs directory", create=False, key="RUN")
        private_dir(self.dir, "the run directory", create=False, key="RUN")
        self.id = os.path.basename(self.dir)
        self.layout = RunLayout(self.dir)
        self.plan: Plan = read_plan(self.layout.plan)
        self.profile: ClusterProfile = load_profile(self.layout.profile)


class Supervisor:
    def __init__(self, run: SupervisedRun, queue: list[str], generation: str):
        self.run = run
        self.plan = {s.name: s for s in run.plan.stages}
        self.order = [s for s in self.plan if s in queue]
        self.profile = run.profile
        visible = os.environ.get("CUDA_VISIBLE_DEVICES")
        self.gpus = ([g for g in visible.split(",") if g] if visible
                     else [str(i) for i in range(self.profile.gpus_per_node)])
        self.children: dict[str, subprocess.Popen] = {}
        previous = read_supervisor(run).get("stages", {})
        self.stages: dict[str, dict[str, Any]] = {}
        for name in self.order:
            old = previous.get(name, {})
            if old.get("state") == "RUNNING" and pid_alive(old.get("pid")):
                self.stages[name] = {**old, "adopted": True}  # outlived a killed supervisor
            else:
                self.stages[name] = {"job_id": f"{generation}-{name}", "state": "PENDING", "reason": "Dependency",
                                     "attempt": 0}
        self.state = {"pid": os.getpid(), "started": time.time(), "generation": generation, "stages": self.stages}

    def save(self) -> None:
        write_json(supervisor_file(self.run), self.state)

    def deps_state(self, name: str) -> str:
        """done | wait | broken for the stage's dependencies."""
        result = "done"
        for dep in self.plan[name].depends_on:
            if dep in self.stages:
                dep_state = self.stages[dep]["state"]
                if dep_state in ("FAILED", "CANCELLED"):
                    return "broken"
                if dep_state != "COMPLETED":
                    result = "wait"
            elif not read_markers(self.run.layout, dep).complete:
                return "broken"
        return result

    def free_gpus(self) -> list[str]:
        busy = {g for s in self.stages.values() if s["state"] == "RUNNING" for g in s.get("gpus", [])}
        return [g for g in self.gpus if g not in busy]

    def start(self, name: str, gpus: list[str]) -> None:
        entry = self.stages[name]
        fd = os.open(self.run.layout.local_log(name), os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        env = dict(os.environ, MINITRON_GPUS=",".join(gpus), MINITRON_ATTEMPT=str(entry["attempt"]),
                   MINITRON_JOB_ID=entry["job_id"],
                   MINITRON_MASTER_PORT=str(self.profile.master_port + len(self.children) % 100))
        child = subprocess.Popen(["bash", self.run.layout.script(name)], stdout=fd, stderr=subprocess.STDOUT,
                                 stdin=subprocess.DEVNULL, env=env, start_new_session=True)
        os.close(fd)
        self.children[name] = child
        entry.update(state="RUNNING", reason=None, pid=child.pid, pgid=child.pid, gpus=gpus, start=time.time(),
                     end=None, exit_code=None, signal=None)

    def finish(self, name: str, code: int | None) -> None:
        entry = self.stages[name]
        signal_number = -code if code is not None and code < 0 else None
        entry.update(end=time.time(), exit_code=None if signal_number else code, signal=signal_number, pid=None)
        markers = read_markers(self.run.layout, name)
        if os.path.exists(cancel_request(self.run, name)):
            entry.update(state="CANCELLED", reason="cancelled by user")
        elif ((code == StageExit.CONTINUE or markers.continue_requested)
              and entry["attempt"] < self.profile.max_continuations):  # torchrun turns a worker's 85 into 1
            entry.update(state="PENDING", reason="continuation", attempt=entry["attempt"] + 1)
        elif code == 0 and markers.complete:
            entry.update(state="COMPLETED")
        else:
            entry.update(state="FAILED", reason="NonZeroExitCode" if code else "outputs incomplete")

    def poll_running(self) -> None:
        for name, entry in self.stages.items():
            if entry["state"] != "RUNNING":
                continue
            child = self.children.get(name)
            if child is not None:
                code = child.poll()
                if code is not None:
                    self.children.pop(name)
                    self.finish(name, code)
            elif not pid_alive(entry.get("pid")):  # adopted from a killed supervisor
                self.finish(name, read_markers(self.run.layout, name).finished_rc)

    def schedule(self) -> None:
        running = [s for s in self.stages.values() if s["state"] == "RUNNING"]
        for name in self.order:
            entry = self.stages[name]
            if entry["state"] != "PENDING":
                continue
            if os.path.exists(cancel_request(self.run, name)):
                entry.update(state="CANCELLED", reason="cancelled by user")
                continue
            deps = self.deps_state(name)
            if deps == "broken":
                entry.update(state="CANCELLED", reason="DependencyNeverSatisfied")
                continue
            if deps == "wait":
                entry["reason"] = "Dependency"
                continue
            need = self.plan[name].gpus_per_node
            free = self.free_gpus()
            if (running and not self.profile.local_parallel) or need > len(free):
                entry["reason"] = "Resources"
                continue
            self.start(name, free[:need])
            running.append(entry)

    def loop(self) -> int:
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
        while True:
            self.poll_running()
            self.schedule()
            self.save()
            if all(s["state"] in TERMINAL for s in self.stages.values()):
                self.record_calibration()
                return 0
            time.sleep(POLL_S)

    def record_calibration(self) -> None:
        """The run has ended: if every stage of it is complete, its measured times go to the planner's store."""
        names = self.run.plan.names()
        if not all(read_markers(self.run.layout, name).complete for name in names):
            return
        try:
            added = calibration.record_run(self.run.id, self.run.layout, self.run.plan.stages)
        except (UserError, OSError, ValueError) as exc:
            print(f"minitron: timings not recorded for calibration: {exc}", flush=True)
            return
        print(f"minitron: {added} stage time(s) recorded for calibration", flush=True)


def main(argv: list[str]) -> int:
    run_dir, generation, *queue = argv
    try:
        run = SupervisedRun(run_dir)
    except (UserError, PlanError) as exc:  # one line in the supervisor's log, nothing started
        print(f"minitron supervisor: {exc}", file=sys.stderr)
        return 2
    supervisor = Supervisor(run, queue, generation)
    supervisor.save()
    return supervisor.loop()


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
