"""The run registry: one directory per run, created whole or not at all, its record, and the user's index.

Trust model (docs/guarantees.md): the registry is the user's own. `job_dir/runs` and
`$MINITRON_HOME/runs` must be directories owned by the user and writable by nobody else; nothing
inside them is followed through a symlink (lstat and O_NOFOLLOW); every directory and file created
here gets its mode explicitly, whatever the umask; a RUN argument must name a registered run, and a
directory that is not a run is never written to. Record writes are atomic (temp file + fsync +
rename) and serialised by an flock, so a reader never sees a torn file and two minitron processes
never interleave their updates. One unreadable run is reported as such and never breaks the others.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import errno
import fcntl
import json
import os
import secrets
import shutil
import stat
import tempfile
import time
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Optional

from jobs.contract import PROBE, RunLayout, read_bounded, write_text_atomic

from ..config.profile import ClusterProfile, load_profile
from ..core import bundled
from ..core.errors import RunBusy, UserError, did_you_mean
from ..core.files import (DIR_MODE, FILE_MODE, MIN_FREE_BYTES, SCRIPT_MODE, free_bytes, minitron_home, private_dir,
                          write_json)
from ..planning.plan import Plan, PlanError, read_plan

RECORD_VERSION = 2
RUNS_SUBDIR = "runs"
MAX_RECORD_BYTES = 4 * 1024 * 1024


# ------------------------------------------------------------------------------------ the run record
@dataclass
class StageRecord:
    job_id: Optional[str] = None
    submitted_at: Optional[float] = None
    attempts: list[str] = field(default_factory=list)  # every job id this stage ever had
    cancelled: bool = False                            # the user cancelled it through minitron


@dataclass
class RunRecord:
    """What the launcher itself did with a run: job ids, cancellations, events. The run's state is
    derived from this and the evidence (launcher/runs/state.py), never stored."""

    run_id: str
    executor: str
    created_at: float
    stages: dict[str, StageRecord]
    submit_failed: bool = False
    events: list[dict[str, Any]] = field(default_factory=list)
    rendered_for: Optional[str] = None  # a dry run written away from job_dir: the run directory its files name
    version: int = RECORD_VERSION

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data["stages"] = {name: asdict(s) for name, s in self.stages.items()}
        return data

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> "RunRecord":
        if not isinstance(data, dict) or not isinstance(data.get("stages"), dict):
            raise ValueError("not a run record")
        submit_failed = data.get("submit_failed", data.get("status") == "submit_failed")  # version 1 had a status
        return cls(run_id=str(data["run_id"]), executor=str(data["executor"]), created_at=float(data["created_at"]),
                   stages={str(name): StageRecord(**{k: v for k, v in s.items()
                                                     if k in StageRecord.__dataclass_fields__})
                           for name, s in data["stages"].items()},
                   submit_failed=bool(submit_failed), events=list(data.get("events", [])),
                   rendered_for=str(data["rendered_for"]) if data.get("rendered_for") else None)

    def log(self, event: str, **details: Any) -> None:
        self.events.append({"time": round(time.time(), 3), "event": event, **details})


class Run:
    """A run directory on disk. Construct through `open_run` (verified) or `create_run`."""

    def __init__(self, run_dir: str):
        self.dir = os.path.abspath(run_dir)
        self.layout = RunLayout(self.dir)
        self.id = os.path.basename(self.dir)

    def load_record(self) -> RunRecord:
        try:
            return RunRecord.from_json(json.loads(read_bounded(self.layout.state, MAX_RECORD_BYTES)))
        except FileNotFoundError:
            raise UserError(f"{self.dir} is not a minitron run (no state.json)", key="RUN") from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise UserError(f"run {self.id} is unreadable: {self.layout.state}: {exc}", key="RUN") from None

    def save_record(self, record: RunRecord) -> None:
        write_json(self.layout.state, record.to_json())

    @functools.cached_property
    def plan(self) -> Plan:
        """The run's plan.json, read once per Run."""
        try:
            return read_plan(self.layout.plan)
        except (OSError, PlanError) as exc:
            raise UserError(f"run {self.id} is unreadable: {self.layout.plan}: {exc}", key="RUN") from None

    @functools.cached_property
    def profile(self) -> ClusterProfile:
        """The profile the run was made with (its copy in the run directory)."""
        return load_profile(self.layout.profile)

    @contextlib.contextmanager
    def locked(self, wait: bool = False) -> Iterator[None]:
        """Exclusive hold on the run for submit/resume/cancel; RunBusy if another process has it."""
        fd = os.open(self.layout.lock, os.O_RDWR | os.O_CREAT | os.O_NOFOLLOW, FILE_MODE)
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


def open_run(run_dir: str) -> Run:
    """A run directory verified as ours: a real directory owned by the user, in a private runs root,
    holding a regular state.json. Nothing is written to anything that fails these checks."""
    run = Run(run_dir)
    private_dir(os.path.dirname(run.dir), "the runs directory", create=False, key="RUN")
    private_dir(run.dir, "the run directory", create=False, key="RUN")
    try:
        st = os.lstat(run.layout.state)
    except OSError:
        raise UserError(f"{run.dir} is not a minitron run (no state.json)", key="RUN") from None
    if not stat.S_ISREG(st.st_mode) or st.st_uid != os.getuid():
        raise UserError(f"{run.layout.state} is not a regular file of yours", key="RUN")
    return run


# ------------------------------------------------------------------------------------ creating runs
def new_run_id(recipe_name: str, now: dt.datetime | None = None) -> str:
    stamp = (now or dt.datetime.now()).strftime("%Y%m%d-%H%M%S")
    return f"{recipe_name}-{stamp}-{secrets.token_hex(2)}"


def runs_root(job_dir: str) -> str:
    return os.path.join(job_dir, RUNS_SUBDIR)


def _copy_private_tree(source: str, destination: str) -> None:
    """Copy a package's source files with explicit modes (dirs 0700, files 0600), skipping caches."""
    os.mkdir(destination, DIR_MODE)
    os.chmod(destination, DIR_MODE)
    for entry in sorted(os.scandir(source), key=lambda e: e.name):
        if entry.name in ("__pycache__", "tests") or entry.name.endswith(".pyc") or entry.is_symlink():
            continue
        target = os.path.join(destination, entry.name)
        if entry.is_dir():
            _copy_private_tree(entry.path, target)
        elif entry.is_file():
            with open(entry.path, "rb") as src:
                data = src.read()
            fd = os.open(target, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, FILE_MODE)
            with os.fdopen(fd, "wb") as dst:
                dst.write(data)
            os.chmod(target, FILE_MODE)


def check_job_dir(job_dir: str, source: str | None = None) -> None:
    """Refuse a job_dir where create_run would fail or would trust what it must not, creating nothing:
    `job_dir/runs` exists but is not the user's private directory, the nearest existing ancestor is
    not a directory this user can write, or its file system is read-only or has less than
    MIN_FREE_BYTES free (a submission that fills the disk half-way leaves jobs no run records)."""
    root = runs_root(job_dir)
    if os.path.lexists(root):
        if not os.path.islink(root) and not os.path.isdir(root):
            raise UserError(f"cannot create the run registry {root}: a file is in the way", file=source, key="job_dir")
        private_dir(root, "the runs directory", create=False, key="job_dir", source=source)
        where = root
    else:
        where = job_dir
        while not os.path.lexists(where):
            where = os.path.dirname(where)
        if not os.path.isdir(where):
            raise UserError(f"cannot create the run registry {root}: {where} is not a directory", file=source,
                            key="job_dir")
    try:  # the real test (os.access says yes to root, and to a read-only mount): make and remove a directory
        os.rmdir(tempfile.mkdtemp(prefix=".minitron-probe.", dir=where))
    except OSError as exc:
        raise UserError(f"cannot create the run registry {root}: {where} is not writable ({exc.strerror})",
                        file=source, key="job_dir") from None
    free = free_bytes(where)
    if free is not None and free < MIN_FREE_BYTES:
        raise UserError(f"{where} has {free // 1024} KiB free; a run needs at least {MIN_FREE_BYTES // 2**20} MiB "
                        f"to start (and room for its checkpoints): free some space or choose another job_dir",
                        file=source, key="job_dir")


def dry_runs_root() -> str:
    """Where a dry run is written when its job_dir is not on this machine (a cluster path seen from a laptop)."""
    return os.path.join(minitron_home(), "dry-runs")


def create_run(job_dir: str, run_id: str, files: dict[str, str], stage_names: list[str], executor: str,
               source: str | None = None, elsewhere: bool = False) -> Run:
    """Write every file of a new run into a hidden temp directory, then rename it into place.

    `files` maps paths relative to the run directory to their content; the code snapshot of jobs/
    is copied in too. A failure at any point leaves no run directory behind. `source` is the
    profile that chose job_dir, for the error message. `elsewhere`: a dry run written under
    `dry_runs_root()` instead, creating nothing in job_dir (its files still name job_dir's paths).
    """
    if elsewhere:
        private_dir(minitron_home(), "MINITRON_HOME", create=True, key="MINITRON_HOME")
        root = private_dir(dry_runs_root(), "the dry-run directory", create=True, key="MINITRON_HOME")
    else:
        if not os.path.isdir(job_dir):
            private_dir(job_dir, "job_dir", create=True, key="job_dir", source=source)
        root = private_dir(runs_root(job_dir), "the runs directory", create=True, key="job_dir", source=source)
    index_dir()  # a run the index cannot list is not made at all
    final = os.path.join(root, run_id)
    tmp = tempfile.mkdtemp(prefix=f".{run_id}.", dir=root)
    try:
        os.chmod(tmp, DIR_MODE)
        layout = RunLayout(tmp)
        for sub in RunLayout.SUBDIRS:
            path = os.path.join(tmp, sub)
            os.mkdir(path, DIR_MODE)
            os.chmod(path, DIR_MODE)
        os.mkdir(layout.code, DIR_MODE)
        os.chmod(layout.code, DIR_MODE)
        _copy_private_tree(bundled.jobs_dir(), os.path.join(layout.code, "jobs"))
        record = RunRecord(run_id=run_id, executor=executor, created_at=time.time(),
                           stages={name: StageRecord() for name in stage_names},
                           rendered_for=os.path.join(runs_root(job_dir), run_id) if elsewhere else None)
        record.log("rendered")
        files = {**files, os.path.relpath(layout.state, tmp): json.dumps(record.to_json(), indent=2) + "\n"}
        for rel, content in files.items():
            path = os.path.join(tmp, rel)
            mode = SCRIPT_MODE if rel.endswith(".sh") else FILE_MODE
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, mode)
            with os.fdopen(fd, "w", encoding="utf-8") as handle:
                handle.write(content)
            os.chmod(path, mode)
        os.rename(tmp, final)
    except OSError as exc:
        shutil.rmtree(tmp, ignore_errors=True)
        raise UserError(f"cannot write the run directory under {root}: {exc.strerror or exc}", file=source,
                        key="job_dir") from None
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return Run(final)


# ------------------------------------------------------------------------------------ the user's index
def index_dir() -> str:
    """The user's run index, created if need be; UserError if it is not the user's own."""
    home = private_dir(minitron_home(), "MINITRON_HOME", create=True, key="MINITRON_HOME")
    return private_dir(os.path.join(home, RUNS_SUBDIR), "the run index", create=True, key="MINITRON_HOME")


def index_run(run: Run) -> None:
    """Remember the run in the user's index (a small JSON file, not a link), so `status`/`runs` find it
    whatever profile made it."""
    write_text_atomic(os.path.join(index_dir(), f"{run.id}.json"),
                      json.dumps({"run_id": run.id, "dir": run.dir}) + "\n", FILE_MODE)


def discard_new_run(run: Run) -> None:
    """Remove a run this very command created and could not submit (its record could not be written):
    its index entry and its directory, so no half-made run is left for later commands to meet."""
    with contextlib.suppress(FileNotFoundError):
        os.remove(os.path.join(index_dir(), f"{run.id}.json"))
    shutil.rmtree(run.dir, ignore_errors=True)


@dataclass
class IndexEntry:
    run_id: str
    dir: str
    run: Optional[Run] = None
    record: Optional[RunRecord] = None
    error: Optional[str] = None       # why the run cannot be read; it is listed all the same

    @property
    def created_at(self) -> float:
        return self.record.created_at if self.record else 0.0


def indexed_runs() -> list[IndexEntry]:
    """Every run the index lists, newest first; unreadable ones carry their error instead of raising."""
    index = os.path.join(minitron_home(), RUNS_SUBDIR)
    try:
        private_dir(index, "the run index", create=False, key="MINITRON_HOME")
        names = sorted(os.listdir(index))
    except UserError as exc:
        if not os.path.lexists(index):
            return []
        raise exc
    entries = []
    for name in names:
        if not name.endswith(".json") or name.startswith("."):
            continue
        run_id = name[:-5]
        try:
            data = json.loads(read_bounded(os.path.join(index, name), 64 * 1024))
            run_dir = data["dir"]
        except (OSError, ValueError, KeyError, TypeError) as exc:
            entries.append(IndexEntry(run_id, "?", error=f"index entry unreadable: {exc}"))
            continue
        try:
            run = open_run(run_dir)
            entries.append(IndexEntry(run_id, run.dir, run=run, record=run.load_record()))
        except UserError as exc:
            entries.append(IndexEntry(run_id, str(run_dir), error=exc.message))
    return sorted(entries, key=lambda e: (e.created_at, e.run_id), reverse=True)


def is_probe_run(entry: IndexEntry) -> bool:
    """`minitron check --probe`'s runs: every stage is a probe (probe, probe_gpu, probe_cpu)."""
    return entry.record is not None and all(name.startswith(PROBE.name) for name in entry.record.stages)


def resolve_run(arg: str | None, *, default_newest: bool = False) -> Run:
    """A registered run by id, unique id prefix or directory; the newest only where `default_newest`
    and no RUN was given, skipping probe runs while a pipeline run exists (a `check --probe` after a
    submit must not hide the run from a bare `minitron status`). An empty RUN (an unset shell variable)
    is refused, never read as 'newest'."""
    if arg is None and not default_newest:
        raise UserError("name a run (see `minitron runs`)", key="RUN")
    if arg is not None and not arg.strip():
        raise UserError("RUN is empty (an unset shell variable?); name a run, see `minitron runs`", key="RUN")
    entries = indexed_runs()
    if arg is None:
        readable = [e for e in entries if e.run is not None]
        if not readable:
            raise UserError("no runs yet: submit one with `minitron submit`", key="RUN")
        pipelines = [e for e in readable if not is_probe_run(e)]
        return (pipelines or readable)[0].run
    target = os.path.abspath(arg) if os.sep in arg else None
    exact = [e for e in entries if e.run_id == arg or (target and e.dir == target)]
    matches = exact or [e for e in entries if e.run_id.startswith(arg)]
    if len(matches) == 1:
        entry = matches[0]
        if entry.run is None:
            raise UserError(f"run {entry.run_id} is unreadable: {entry.error}", key="RUN")
        return entry.run
    what = "ambiguous prefix" if matches else ("not a registered run" if target else "no such run")
    raise UserError(f"{arg!r}: {what} in {minitron_home()}/runs", key="RUN",
                    hint=did_you_mean(arg, [e.run_id for e in entries]))
