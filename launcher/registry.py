"""The run registry: one directory per run, created whole or not at all, and its state file.

State writes are atomic (temp file + fsync + rename) and serialised by an flock on state.lock, so a
reader never sees a torn file and two minitron processes never interleave their updates.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import errno
import fcntl
import json
import os
import secrets
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Iterator

from .errors import RunBusy, UserError
from .stageconfig import RunPaths

STATE_VERSION = 1
JOBS_PACKAGE = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "jobs")
RUNS_SUBDIR = "runs"


def new_run_id(recipe_name: str, now: dt.datetime | None = None) -> str:
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{recipe_name}-{stamp}-{secrets.token_hex(2)}"


def runs_root(job_dir: str) -> str:
    return os.path.join(job_dir, RUNS_SUBDIR)


def atomic_write(path: str, text: str, mode: int = 0o600) -> None:
    directory = os.path.dirname(path)
    fd, tmp = tempfile.mkstemp(prefix=f".{os.path.basename(path)}.", dir=directory)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(tmp)
        raise


def write_json(path: str, data: Any) -> None:
    atomic_write(path, json.dumps(data, indent=2, sort_keys=False) + "\n")


@dataclass
class StageState:
    job_id: str | None = None
    submitted_at: float | None = None
    attempts: list[str] = field(default_factory=list)  # every job id this stage ever had
    cancelled: bool = False


@dataclass
class RunState:
    run_id: str
    executor: str
    status: str  # rendered | submitting | submitted | submit_failed | cancelled
    created_at: float
    stages: dict[str, StageState]
    events: list[dict[str, Any]] = field(default_factory=list)
    version: int = STATE_VERSION

    def to_json(self) -> dict[str, Any]:
        return {"version": self.version, "run_id": self.run_id, "executor": self.executor,
                "status": self.status, "created_at": self.created_at,
                "stages": {name: s.__dict__ for name, s in self.stages.items()}, "events": self.events}

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunState":
        return cls(run_id=data["run_id"], executor=data["executor"], status=data["status"],
                   created_at=data["created_at"],
                   stages={name: StageState(**s) for name, s in data["stages"].items()},
                   events=data.get("events", []), version=data.get("version", STATE_VERSION))

    def log(self, event: str, **details: Any) -> None:
        self.events.append({"time": round(time.time(), 3), "event": event, **details})


class Run:
    """A run directory on disk."""

    def __init__(self, run_dir: str):
        self.dir = os.path.abspath(run_dir)
        self.paths = RunPaths(self.dir)
        self.id = os.path.basename(self.dir)

    def load_state(self) -> RunState:
        try:
            with open(self.paths.state, encoding="utf-8") as handle:
                return RunState.from_json(json.load(handle))
        except FileNotFoundError:
            raise UserError(f"{self.dir} is not a minitron run (no state.json)") from None

    def save_state(self, state: RunState) -> None:
        write_json(self.paths.state, state.to_json())

    def load_plan(self) -> dict[str, Any]:
        with open(self.paths.plan, encoding="utf-8") as handle:
            return json.load(handle)

    def load_profile(self) -> Any:
        from .profile import load_profile
        return load_profile(os.path.join(self.dir, "profile.yaml"))

    @contextlib.contextmanager
    def locked(self, wait: bool = False) -> Iterator[None]:
        """Exclusive hold on the run for submit/resume/cancel; RunBusy if another process has it."""
        fd = os.open(self.paths.lock, os.O_RDWR | os.O_CREAT, 0o600)
        try:
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
            except OSError as exc:
                if exc.errno in (errno.EWOULDBLOCK, errno.EAGAIN):
                    raise RunBusy(f"run {self.id} is busy: another minitron submit/resume/cancel holds it") from None
                raise
            yield
        finally:
            os.close(fd)


def create_run(job_dir: str, run_id: str, files: dict[str, str], stage_names: list[str], executor: str,
               source: str | None = None) -> Run:
    """Write every file of a new run into a hidden temp directory, then rename it into place.

    `files` maps paths relative to the run directory to their content. The code snapshot of jobs/
    is copied in too. A failure at any point leaves no run directory behind. `source` is the
    profile that chose job_dir, for the error message.
    """
    root = runs_root(job_dir)
    try:
        os.makedirs(root, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the run registry {root}: {exc.strerror}", file=source,
                        key="job_dir") from None
    if not os.access(root, os.W_OK | os.X_OK):
        raise UserError(f"the run registry {root} is not writable", file=source, key="job_dir")
    index_dir()  # a run the index cannot list is not made at all
    final = os.path.join(root, run_id)
    tmp = tempfile.mkdtemp(prefix=f".{run_id}.", dir=root)
    try:
        os.chmod(tmp, 0o700)
        for sub in ("stages", "scripts", "logs", "markers", "work"):
            os.makedirs(os.path.join(tmp, sub), mode=0o700)
        shutil.copytree(JOBS_PACKAGE, os.path.join(tmp, "code", "jobs"),
                        ignore=shutil.ignore_patterns("__pycache__", "*.pyc", "tests"))
        for rel, content in files.items():
            path = os.path.join(tmp, rel)
            mode = 0o700 if rel.endswith(".sh") else 0o600
            with open(path, "w", encoding="utf-8") as handle:
                handle.write(content)
            os.chmod(path, mode)
        state = RunState(run_id=run_id, executor=executor, status="rendered", created_at=time.time(),
                         stages={name: StageState() for name in stage_names})
        state.log("rendered")
        with open(os.path.join(tmp, "state.json"), "w", encoding="utf-8") as handle:
            json.dump(state.to_json(), handle, indent=2)
        os.chmod(os.path.join(tmp, "state.json"), 0o600)
        os.rename(tmp, final)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Run(final)


def list_runs(job_dir: str) -> list[Run]:
    root = runs_root(job_dir)
    try:
        names = [n for n in os.listdir(root) if not n.startswith(".")]
    except FileNotFoundError:
        return []
    runs = [Run(os.path.join(root, n)) for n in names if os.path.exists(os.path.join(root, n, "state.json"))]
    return sorted(runs, key=lambda run: run.load_state().created_at, reverse=True)


def minitron_home() -> str:
    return os.environ.get("MINITRON_HOME") or os.path.join(os.path.expanduser("~"), ".minitron")


def index_dir() -> str:
    """The user's run index, created if need be; UserError if it cannot be written."""
    index = os.path.join(minitron_home(), "runs")
    try:
        os.makedirs(index, mode=0o700, exist_ok=True)
    except OSError as exc:
        raise UserError(f"cannot create the run index {index}: {exc.strerror}", key="MINITRON_HOME") from None
    if not os.access(index, os.W_OK | os.X_OK):
        raise UserError(f"the run index {index} is not writable", key="MINITRON_HOME")
    return index


def index_run(run: Run) -> None:
    """Remember the run in the user's index, so `status`/`runs` find it whatever profile made it."""
    index = index_dir()
    link = os.path.join(index, run.id)
    tmp = f"{link}.{os.getpid()}.tmp"
    os.symlink(run.dir, tmp)
    os.replace(tmp, link)


def indexed_runs() -> list[Run]:
    index = os.path.join(minitron_home(), "runs")
    try:
        names = os.listdir(index)
    except FileNotFoundError:
        return []
    runs = []
    for name in names:
        target = os.path.join(index, name)
        if os.path.exists(os.path.join(target, "state.json")):
            runs.append(Run(os.path.realpath(target)))
    return sorted(runs, key=lambda run: run.load_state().created_at, reverse=True)


def resolve_run(arg: str | None) -> Run:
    """A run directory, a run id from the index, or (no argument) the newest indexed run."""
    if arg and os.path.isdir(arg):
        return Run(arg)
    runs = indexed_runs()
    if not arg:
        if not runs:
            raise UserError("no runs yet: submit one with `minitron submit`", key="RUN")
        return runs[0]
    for run in runs:
        if run.id == arg:
            return run
    matches = [run for run in runs if run.id.startswith(arg)]
    if len(matches) == 1:
        return matches[0]
    from .schema import did_you_mean
    raise UserError(f"no run {arg!r} in {minitron_home()}/runs" + (" (ambiguous prefix)" if matches else ""),
                    key="RUN", hint=did_you_mean(arg, [r.id for r in runs]))
