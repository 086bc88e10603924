"""Local executor: a detached supervisor process per run instead of a scheduler (local_supervisor.py)."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
from typing import Sequence

from ..config.executors import EXECUTORS
from ..core.errors import LauncherError, RunBusy, UserError
from ..rendering.scripts import render_local_script
from .base import Check, JobInfo, JobRef, QueryResult, RunHandle
from .local_supervisor import cancel_request, kill_group, pid_alive, read_supervisor

SUPERVISOR_START_TIMEOUT_S = 30


class LocalExecutor:
    traits = EXECUTORS["local"]

    def render_script(self, run_id, run_dir, profile, stage, stages) -> str:
        return render_local_script(run_id, run_dir, profile, stage)

    def preflight(self, profile, plan_stages) -> None:
        if not profile.image:
            return
        if profile.image.startswith("/"):
            raise UserError(f"the local executor runs images with docker, which cannot run the squashfs file "
                            f"{profile.image}; name a registry image or set container: none",
                            file=profile.source, key="container")
        if not shutil.which("docker"):
            raise UserError("the profile names an image but docker is not installed here; set container: none to "
                            "run on bare metal (e.g. inside the NeMo container)", file=profile.source, key="container")

    def checks(self, profile) -> list[Check]:
        checks = []
        try:
            probe = subprocess.run([profile.python, "-c", "import torch; print(torch.__version__, "
                                    "torch.cuda.device_count())"], capture_output=True, text=True, timeout=120,
                                   stdin=subprocess.DEVNULL)
        except (OSError, subprocess.TimeoutExpired):
            probe = None
        if probe is None or probe.returncode != 0:
            checks.append(Check("torch", "FAIL", f"{profile.python} cannot import torch"))
        else:
            version, count = probe.stdout.split()[-2:]
            enough = int(count) >= profile.gpus_per_node
            checks.append(Check("GPUs", "ok" if enough else "warn",
                                f"torch {version} sees {count} GPU(s); the profile has {profile.gpus_per_node}"))
        if profile.image:
            docker = shutil.which("docker")
            checks.append(Check("docker", "ok" if docker else "FAIL",
                                docker or "docker not found: set container: none to run on bare metal"))
        return checks

    def submit(self, run: RunHandle, stages: Sequence[str], waiting_on: dict[str, str]) -> dict[str, str]:
        """Start a detached supervisor for `stages`; it outlives this process and the terminal. Stages in
        `waiting_on` that its previous supervisor still runs are adopted by the new one."""
        current = read_supervisor(run)
        if pid_alive(current.get("pid")):
            busy = [n for n, s in current.get("stages", {}).items() if s["state"] in ("PENDING", "RUNNING")]
            if busy:
                raise RunBusy(f"run {run.id} is still being run by its local supervisor (pid {current['pid']}, "
                              f"stages {', '.join(busy)}); wait for it or `minitron cancel` it first")
        os.makedirs(run.layout.local, mode=0o700, exist_ok=True)
        os.chmod(run.layout.local, 0o700)
        for name in stages:
            try:
                os.remove(cancel_request(run, name))
            except FileNotFoundError:
                pass
        adopted = [n for n, s in current.get("stages", {}).items()
                   if s["state"] == "RUNNING" and pid_alive(s.get("pid")) and n not in stages]
        generation = f"L{int(time.time() * 1000) % 10**10}"
        log_path = os.path.join(run.layout.logs, "supervisor.log")
        fd = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW, 0o600)
        proc = subprocess.Popen([sys.executable, "-m", "launcher.backends.local_supervisor", run.dir, generation,
                                 *stages, *adopted], stdout=fd, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
                                start_new_session=True, close_fds=True, env=dict(os.environ, PYTHONPATH=_import_path()))
        os.close(fd)
        deadline = time.time() + SUPERVISOR_START_TIMEOUT_S
        while read_supervisor(run).get("pid") != proc.pid:  # it has written its queue
            if proc.poll() is not None or time.time() > deadline:
                raise LauncherError(f"the local supervisor did not start; see {log_path}")
            time.sleep(0.05)
        jobs = read_supervisor(run)["stages"]
        return {name: jobs[name]["job_id"] for name in stages}

    def query(self, jobs: Sequence[JobRef]) -> QueryResult:
        result = QueryResult()
        runs = {ref.run.dir: ref.run for ref in jobs}
        for run in runs.values():
            supervisor = read_supervisor(run)
            alive = pid_alive(supervisor.get("pid"))
            entries = supervisor.get("stages", {})
            if not alive and any(s["state"] in ("PENDING", "RUNNING") for s in entries.values()):
                result.notes.append(f"run {run.id}: the local supervisor (pid {supervisor.get('pid')}) is gone; "
                                    f"`minitron resume` continues the run")
            for entry in entries.values():
                status = entry["state"]
                if status == "RUNNING" and not pid_alive(entry.get("pid")):
                    continue  # died with no supervisor to see it: the markers tell
                if status == "PENDING" and not alive:
                    continue  # nobody will start it: resume must
                elapsed = None
                if entry.get("start"):
                    elapsed = (entry.get("end") or time.time()) - entry["start"]
                result.jobs[entry["job_id"]] = JobInfo(
                    job_id=entry["job_id"], state=status, reason=entry.get("reason"), elapsed_s=elapsed,
                    nodes="localhost" if status == "RUNNING" else None, exit_code=entry.get("exit_code"),
                    signal=entry.get("signal"), start_time=entry.get("start"), end_time=entry.get("end"),
                    source="local")
        return result

    def cancel(self, jobs: Sequence[JobRef]) -> None:
        for ref in jobs:
            os.makedirs(ref.run.layout.local, mode=0o700, exist_ok=True)
            fd = os.open(cancel_request(ref.run, ref.stage), os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW, 0o600)
            os.close(fd)
        for ref in jobs:
            entry = read_supervisor(ref.run).get("stages", {}).get(ref.stage, {})
            if entry.get("state") == "RUNNING" and entry.get("pgid") and entry.get("job_id") == ref.job_id:
                kill_group(entry["pgid"])


def _import_path() -> str:
    """The supervisor imports this very launcher, wherever it is installed."""
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    return os.pathsep.join(filter(None, [root, os.environ.get("PYTHONPATH")]))
