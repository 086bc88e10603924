"""Local executor: a detached supervisor process per run instead of a scheduler (launcher/supervisor.py)."""

from __future__ import annotations

import os
import subprocess
import sys
import time

from ..errors import RunBusy
from ..registry import Run, RunState
from ..supervisor import cancel_request, kill_group, local_dir, pid_alive, read_supervisor
from .base import LIVE_STATES, JobInfo

class LocalExecutor:
    name = "local"

    def submit(self, run: Run, stages: list[str]) -> dict[str, str]:
        """Start a detached supervisor for `stages`; it outlives this process and the terminal."""
        current = read_supervisor(run)
        if pid_alive(current.get("pid")):
            busy = [n for n, s in current.get("stages", {}).items() if s["state"] in LIVE_STATES]
            if busy:
                raise RunBusy(f"run {run.id} is still being run by its local supervisor (pid {current['pid']}, "
                              f"stages {', '.join(busy)}); wait for it or `minitron cancel` it first")
        os.makedirs(local_dir(run), mode=0o700, exist_ok=True)
        for name in stages:
            try:
                os.remove(cancel_request(run, name))
            except FileNotFoundError:
                pass
        adopted = [n for n, s in current.get("stages", {}).items()
                   if s["state"] == "RUNNING" and pid_alive(s.get("pid")) and n not in stages]
        generation = f"L{int(time.time() * 1000) % 10**10}"
        log = open(os.path.join(run.paths.logs, "supervisor.log"), "ab")
        proc = subprocess.Popen([sys.executable, "-m", "launcher.supervisor", run.dir, generation, *stages, *adopted],
                                stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, close_fds=True,
                                env=dict(os.environ, PYTHONPATH=_launcher_path()))
        log.close()
        deadline = time.time() + 30
        while read_supervisor(run).get("pid") != proc.pid:  # it has written its queue
            if proc.poll() is not None or time.time() > deadline:
                raise RuntimeError(f"the local supervisor did not start; see {run.paths.logs}/supervisor.log")
            time.sleep(0.05)
        jobs = read_supervisor(run)["stages"]
        return {name: jobs[name]["job_id"] for name in stages}

    def query(self, run: Run, state: RunState) -> tuple[dict[str, JobInfo], list[str]]:
        supervisor = read_supervisor(run)
        alive = pid_alive(supervisor.get("pid"))
        unfinished = [n for n, s in supervisor.get("stages", {}).items() if s["state"] in LIVE_STATES]
        notes = [] if alive or not unfinished else [
            f"the local supervisor (pid {supervisor.get('pid')}) is gone; `minitron resume` continues the run"]
        infos: dict[str, JobInfo] = {}
        for entry in supervisor.get("stages", {}).values():
            status = entry["state"]
            if status == "RUNNING" and not pid_alive(entry.get("pid")):
                continue  # died with no supervisor to see it: the markers tell
            if status == "PENDING" and not alive:
                continue  # nobody will start it: resume must
            elapsed = None
            if entry.get("start"):
                elapsed = (entry.get("end") or time.time()) - entry["start"]
            infos[entry["job_id"]] = JobInfo(job_id=entry["job_id"], state=status, reason=entry.get("reason"),
                                             elapsed_s=elapsed, nodes="localhost" if status == "RUNNING" else None,
                                             exit_code=entry.get("exit_code"), source="local")
        return infos, notes

    def cancel(self, run: Run, stages: list[str]) -> None:
        os.makedirs(local_dir(run), mode=0o700, exist_ok=True)
        entries = read_supervisor(run).get("stages", {})
        for name in stages:
            open(cancel_request(run, name), "w").close()
        for name in stages:
            pgid = entries.get(name, {}).get("pgid")
            if entries.get(name, {}).get("state") == "RUNNING" and pgid:
                kill_group(pgid)


def _launcher_path() -> str:
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
