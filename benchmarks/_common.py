"""Shared by the benchmark scripts: machine facts, RESULTS.md sections, the Slurm testbed, test inputs.

Stdlib only at import time (PyYAML is needed by the test-input writers, as for the launcher itself).
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import platform
import re
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Sequence

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
INTEGRATION = REPO / "tests" / "integration"
RESULTS = BENCH / "RESULTS.md"
for _path in (str(REPO), str(INTEGRATION)):
    if _path not in sys.path:
        sys.path.insert(0, _path)

from slurm_cluster import SlurmTestbed, find_port_base, slurm_installed  # noqa: E402  (stdlib only)


# -------------------------------------------------------------------------------------- machine
def cpu_model() -> str:
    try:
        for line in open("/proc/cpuinfo", encoding="utf-8"):
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def code_version() -> str:
    """The commit measured, and whether launcher/ differed from it (read-only git calls)."""
    try:
        head = subprocess.run(["git", "-C", str(REPO), "rev-parse", "--short", "HEAD"], capture_output=True,
                              text=True, timeout=10).stdout.strip()
        dirty = subprocess.run(["git", "-C", str(REPO), "status", "--porcelain", "--", "launcher"],
                               capture_output=True, text=True, timeout=10).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return "unknown (no git)"
    return f"git {head or 'unknown'}" + (" + uncommitted changes in launcher/" if dirty else "")


def machine_lines(extra: Sequence[str] = ()) -> list[str]:
    nproc = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    load = " / ".join(f"{x:.2f}" for x in os.getloadavg())
    lines = [
        f"- machine: {nproc} CPU(s) (nproc), {cpu_model()}; {platform.system()} {platform.release()}",
        f"- Python: {platform.python_version()} ({sys.executable})",
        "- card: none (CPU)",
        f"- code: {code_version()}",
        f"- date: {dt.datetime.now(dt.timezone.utc).strftime('%Y-%m-%d %H:%M UTC')}; load average at the end "
        f"(1/5/15 min): {load}",
    ]
    return lines + list(extra)


# -------------------------------------------------------------------------------------- numbers
def summary(values: Sequence[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "n": len(values)}


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table (also readable as plain text on a terminal)."""
    cells = [[str(c) for c in headers]] + [[str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    fmt = lambda r: "| " + " | ".join(c.ljust(w) for c, w in zip(r, widths)) + " |"  # noqa: E731
    out = [fmt(cells[0]), "|" + "|".join("-" * (w + 2) for w in widths) + "|"]
    out += [fmt(r) for r in cells[1:]]
    return "\n".join(out)


def ms(seconds: float) -> str:
    return f"{seconds * 1000:.0f} ms" if seconds < 10 else f"{seconds:.1f} s"


def secs(seconds: float) -> str:
    return f"{seconds:.3f} s"


# -------------------------------------------------------------------------------------- RESULTS.md
HEADER = """# Benchmark results

Written by the scripts in this directory (see README.md); each script replaces only its own section,
between its BEGIN/END markers. Hand edits inside a section are lost on the next run.
"""


def write_section(name: str, body: str) -> None:
    """Replace (or append) the section `name` of RESULTS.md, under an flock so scripts can run together."""
    begin, end = f"<!-- BEGIN {name} -->", f"<!-- END {name} -->"
    block = f"{begin}\n{body.rstrip()}\n{end}\n"
    lock = os.open(str(BENCH / ".RESULTS.md.lock"), os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(lock, fcntl.LOCK_EX)
        text = RESULTS.read_text(encoding="utf-8") if RESULTS.exists() else HEADER
        pattern = re.compile(re.escape(begin) + r".*?" + re.escape(end) + r"\n?", re.S)
        if pattern.search(text):
            text = pattern.sub(lambda _: block, text, count=1)
        else:
            text = text.rstrip("\n") + "\n\n" + block
        tmp = RESULTS.with_name(f".RESULTS.md.{os.getpid()}")
        tmp.write_text(text, encoding="utf-8")
        os.replace(tmp, RESULTS)
    finally:
        os.close(lock)


# -------------------------------------------------------------------------------------- testbed
@contextmanager
def testbed(existing: str | None = None, acct: str = "none", port_start: int = 17300,
            min_job_age: int = 30) -> Iterator[SlurmTestbed]:
    """A running testbed: the one in `existing`, or a fresh one on a free port block, stopped at the end."""
    if not slurm_installed():
        raise SystemExit("Slurm is not installed: run `bash .ci/slurm-testbed install` (root), or skip the "
                         "Slurm rows (--no-slurm where the script has it)")
    if existing:
        bed = SlurmTestbed(existing)
        if not bed.is_up():
            raise SystemExit(f"no testbed answers in {existing}")
        yield bed
        return
    tmp = tempfile.mkdtemp(prefix="mtb", dir="/tmp")  # short: unix socket paths
    bed = SlurmTestbed(tmp, acct=acct, port_base=find_port_base(start=port_start), min_job_age=min_job_age)
    print(f"[bench] starting a Slurm testbed in {tmp} (ports {bed.port_base}.., accounting {acct})",
          file=sys.stderr, flush=True)
    started = time.monotonic()
    try:
        bed.up()
        print(f"[bench] testbed up in {time.monotonic() - started:.1f} s", file=sys.stderr, flush=True)
        yield bed
    finally:
        try:
            bed.down()
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        print(f"[bench] testbed in {tmp} stopped", file=sys.stderr, flush=True)


def squeue_known(bed: SlurmTestbed, job_ids: Sequence[str]) -> dict[str, str]:
    """job id → state for the ids slurmctld still holds in memory."""
    proc = bed.run(["squeue", "--noheader", "--states=all", f"--jobs={','.join(job_ids)}", "--format=%i|%T"])
    if proc.returncode != 0:
        return {}
    return dict(line.strip().split("|", 1) for line in proc.stdout.splitlines() if "|" in line)


def wait_idle_queue(bed: SlurmTestbed, timeout: float = 120) -> None:
    """Wait until no job is pending or running (cancelled ones included)."""
    start = time.monotonic()
    while bed.run(["squeue", "--noheader", "--format=%i"]).stdout.strip():
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"the queue did not drain in {timeout} s")
        time.sleep(0.5)


def wait_purged(bed: SlurmTestbed, job_ids: Sequence[str], timeout: float = 240) -> float:
    """Wait until slurmctld has forgotten every job (MinJobAge); returns the seconds waited."""
    start = time.monotonic()
    while squeue_known(bed, job_ids):
        if time.monotonic() - start > timeout:
            raise RuntimeError(f"jobs still in slurmctld after {timeout} s: {squeue_known(bed, job_ids)}")
        time.sleep(2)
    return time.monotonic() - start


def jobcomp(bed: SlurmTestbed) -> dict[str, dict[str, str]]:
    """The filetxt job completion log: job id → its fields (the last record of a requeued job wins)."""
    path = bed.log_dir / "jobcomp.txt"
    records: dict[str, dict[str, str]] = {}
    if path.exists():
        for line in path.read_text(errors="replace").splitlines():
            fields = dict(m.groups() for m in re.finditer(r"(\w+)=(\S*)", line))
            if "JobId" in fields:
                records[fields["JobId"]] = fields
    return records


# -------------------------------------------------------------------------------------- inputs
def minitron_cmd() -> tuple[list[str], dict[str, str]]:
    """How to run the CLI: the .venv-cli console script if it exists, else `python -m launcher.app.cli`."""
    script = REPO / ".venv-cli" / "bin" / "minitron"
    if script.exists():
        return [str(script)], {}
    return [sys.executable, "-m", "launcher.app.cli"], {"PYTHONPATH": str(REPO)}


def test_profile(path: Path, job_dir: Path, **overrides) -> str:
    from helpers import write_test_profile  # tests/integration/helpers.py (imports pytest, PyYAML)
    return write_test_profile(path, job_dir, **overrides)


def test_recipe(path: Path, base: str = "tiny", **changes) -> str:
    """The tiny test recipe (every stage runs tests/integration/workload.py), or another built-in recipe
    with its entrypoints swapped the same way; `changes` are top-level keys to replace."""
    import yaml

    from helpers import write_test_recipe
    write_test_recipe(path)
    recipe = yaml.safe_load(Path(path).read_text())
    if base != "tiny":
        entry = {kind: dict(v) for kind, v in recipe["stages"].items()}
        recipe = yaml.safe_load((REPO / "launcher" / "recipes" / f"{base}.yaml").read_text())
        recipe["name"] = f"{base}-test"
        for kind, stage in entry.items():
            if "entrypoint" in stage:
                recipe["stages"].setdefault(kind, {})["entrypoint"] = stage["entrypoint"]
    for key, value in changes.items():
        node = recipe
        *parents, last = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[last] = value
    Path(path).write_text(yaml.safe_dump(recipe, sort_keys=False))
    return str(path)


def run(argv: Sequence[str], env: dict[str, str] | None = None, timeout: float = 300,
        cwd: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run(list(argv), capture_output=True, text=True, env=env, timeout=timeout, cwd=cwd,
                          stdin=subprocess.DEVNULL)
