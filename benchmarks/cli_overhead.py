#!/usr/bin/env python3
"""Cold-start cost of the `minitron` CLI next to NeMo-Run's CLI and submitit, in fresh processes.

Every command runs once as a warm-up (reported as "first"), then --runs times, round-robin over the
commands so that background noise lands on all of them alike. Wall time is spawn to exit
(time.perf_counter around subprocess.run, output captured).

Commands:
  minitron --help, minitron plan (default recipe and profile), minitron status --json of a finished
  8-stage run on a real Slurm testbed (the tiny test recipe run to completion there, its jobs purged
  from slurmctld; every stage's complete marker settles its state, so status asks Slurm nothing: the
  client calls it makes are counted and reported), the same status with SLURM_CONF pointing at no
  file (it must still exit 0: proof that the markers alone answered), minitron runs --json (the
  index holding that one run), and `python -c pass` (the interpreter floor); from .venv-bench:
  `nemo --help`, `python -c "import nemo_run"`, `python -c "import submitit"`.

Usage: python3.11 benchmarks/cli_overhead.py [--runs 15] [--testbed-dir DIR | --no-slurm] [--no-write]
Needs .venv-cli (minitron) and .venv-bench (nemo-run); see benchmarks/README.md.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common as C  # noqa: E402

CLI_VENV = C.REPO / ".venv-cli"
BENCH_VENV = C.REPO / ".venv-bench"
FULL_VENV = C.REPO / ".venv"   # the project's full CI env (NeMo, torch): context only, if present
BARS = {"minitron --help": 0.2, "minitron status --json (Slurm, finished)": 0.3, "minitron plan": 0.5}
RATIO_BAR = 10.0
SLURM_CLIENTS = ("squeue", "sacct", "scontrol", "sbatch", "scancel", "sinfo")


def clean_env(**extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("MINITRON_", "VIRTUAL_ENV", "PYTHON"))}
    env.update(extra)
    return env


def timed(argv: list[str], env: dict[str, str], cwd: str) -> tuple[float, float, subprocess.CompletedProcess]:
    """Wall seconds spawn to exit, and the CPU seconds (user + sys) of the process and its children."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, cwd=cwd, stdin=subprocess.DEVNULL)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu, proc


# ------------------------------------------------------------------------------------ the finished run
def finished_run(bed, work: Path, minitron: list[str], env: dict[str, str]) -> tuple[str, str, list[str]]:
    """Submit the tiny test recipe (8 stages, each the sleeping workload) and wait until done and purged."""
    profile = C.test_profile(work / "profile.yaml", work / "jobs")
    recipe = C.test_recipe(work / "recipe.yaml")
    proc = C.run(minitron + ["submit", "--json", "--profile", profile, "--recipe", recipe], env=env)
    if proc.returncode != 0:
        raise SystemExit(f"submit failed: {proc.stderr}{proc.stdout}")
    sub = json.loads(proc.stdout)
    run_id, run_dir, jobs = sub["run_id"], sub["run_dir"], list(sub["jobs"].values())
    print(f"[bench] submitted {run_id}: {len(jobs)} jobs; waiting for them to finish", file=sys.stderr, flush=True)
    deadline = time.monotonic() + 600
    while True:
        proc = C.run(minitron + ["status", run_id, "--json"], env=env)
        if proc.returncode == 0:
            break
        if proc.returncode not in (3,) or time.monotonic() > deadline:
            raise SystemExit(f"run {run_id} did not finish (exit {proc.returncode}): {proc.stdout[-2000:]}"
                             f"{proc.stderr}")
        time.sleep(2)
    waited = C.wait_purged(bed, jobs)
    print(f"[bench] run done; slurmctld forgot its jobs {waited:.0f} s later", file=sys.stderr, flush=True)
    return run_id, run_dir, jobs


def count_client_calls(argv: list[str], env: dict[str, str], cwd: str, work: Path) -> list[str]:
    """Run once with logging wrappers of the Slurm clients first on PATH; returns the commands called."""
    bindir, log = work / "wrapped-bin", work / "slurm-calls.log"
    bindir.mkdir(exist_ok=True)
    for name in SLURM_CLIENTS:
        real = shutil.which(name)
        if real:
            (bindir / name).write_text(f'#!/bin/bash\necho "{name} $*" >> {log}\nexec {real} "$@"\n')
            (bindir / name).chmod(0o755)
    log.write_text("")
    subprocess.run(argv, capture_output=True, env={**env, "PATH": f"{bindir}:{env.get('PATH', '')}"}, cwd=cwd)
    return [line.split()[0] + (" -c" if " --completion" in line else "") for line in log.read_text().splitlines()]


# ------------------------------------------------------------------------------------ -X importtime
def heaviest_imports(python: str, code: list[str], own: tuple[str, ...], env: dict[str, str], cwd: str,
                     top: int = 6) -> tuple[float, list[tuple[str, float]]]:
    """Total import time and the heaviest imports from outside `own` (their own subtree counted once)."""
    proc = subprocess.run([python, "-X", "importtime", *code], capture_output=True, text=True, env=env, cwd=cwd)
    pending: dict[int, list] = {}
    for line in proc.stderr.splitlines():
        if not line.startswith("import time:") or "self [us]" in line:
            continue
        _self, cumulative, name = line[len("import time:"):].split("|", 2)
        depth = (len(name) - len(name.lstrip(" ")) - 1) // 2
        node = (name.strip(), int(cumulative) / 1e6, pending.pop(depth + 1, []))
        pending.setdefault(depth, []).append(node)
    roots = pending.get(0, [])
    found: list[tuple[str, float]] = []

    def walk(node) -> None:
        name, cumulative, children = node
        if name.split(".")[0] in own:
            for child in children:
                walk(child)
        else:
            found.append((name, cumulative))

    for root in roots:
        walk(root)
    total = sum(cum for _, cum, _ in roots)
    return total, sorted(found, key=lambda x: -x[1])[:top]


# ------------------------------------------------------------------------------------ main
def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--runs", type=int, default=15, help="timed fresh processes per command (default 15)")
    parser.add_argument("--testbed-dir", help="use this running testbed instead of starting one")
    parser.add_argument("--no-slurm", action="store_true", help="skip the Slurm status row (no testbed)")
    parser.add_argument("--no-write", action="store_true", help="print only; leave RESULTS.md alone")
    args = parser.parse_args()

    minitron = CLI_VENV / "bin" / "minitron"
    nemo = BENCH_VENV / "bin" / "nemo"
    for path, how in ((minitron, "python3.11 -m venv .venv-cli && .venv-cli/bin/pip install -e ."),
                      (nemo, "python3.11 -m venv .venv-bench && .venv-bench/bin/pip install nemo-run==0.11.1 "
                             "leptonai==0.27.3 submitit")):
        if not path.exists():
            raise SystemExit(f"{path} is missing; create it with: {how}")

    work = Path(tempfile.mkdtemp(prefix="mtcli"))
    cwd = str(work)  # not the repo: `minitron` must work from anywhere
    home = work / "home"
    env_cli = clean_env(MINITRON_HOME=str(home), COLUMNS="120")
    cli_py, bench_py = str(CLI_VENV / "bin" / "python"), str(BENCH_VENV / "bin" / "python")

    commands: list[tuple[str, str, list[str], dict[str, str], tuple[int, ...]]] = [
        ("minitron --help", ".venv-cli", [str(minitron), "--help"], env_cli, (0,)),
        ("minitron plan", ".venv-cli", [str(minitron), "plan"], env_cli, (0,)),
    ]
    notes: list[str] = []
    calls: list[str] = []
    status_argv: list[str] | None = None
    env_slurm: dict[str, str] = {}
    bed_cm = None
    try:
        if not args.no_slurm:
            bed_cm = C.testbed(args.testbed_dir, port_start=17400)
            bed = bed_cm.__enter__()
            env_slurm = {**env_cli, "SLURM_CONF": str(bed.conf), "MT_STEP_SECONDS": "0.05"}
            run_id, run_dir, jobs = finished_run(bed, work, [str(minitron)], env_slurm)
            status_argv = [str(minitron), "status", run_id, "--json"]
            calls = count_client_calls(status_argv, env_slurm, cwd, work)
            commands.append(("minitron status --json (Slurm, finished)", ".venv-cli", status_argv, env_slurm, (0,)))
            unreachable = {**env_slurm, "SLURM_CONF": str(work / "no-such-slurm.conf")}
            commands.append(("minitron status --json (finished, Slurm unreachable)", ".venv-cli", status_argv,
                             unreachable, (0,)))
            commands.append(("minitron runs --json", ".venv-cli", [str(minitron), "runs", "--json"], env_slurm,
                             (0,)))
            notes.append(f"- status (Slurm, finished): run `{run_id}`, 8 stages of the tiny test recipe "
                         f"(tests/integration/workload.py), all DONE; jobs purged from slurmctld (MinJobAge "
                         f"{bed.min_job_age} s), accounting `{bed.acct}`; one status call runs "
                         f"{len(calls)} Slurm client call(s): {', '.join(calls) or 'none'}")
            notes.append("- status (finished, Slurm unreachable): the same command with SLURM_CONF naming no "
                         "file; it exits 0 only if the markers settle every stage without a Slurm call: the "
                         "launcher's own cost (start, imports, markers, log tails, JSON)")
            notes.append("- runs --json: the index holds that one run; its state comes from the same markers")
        commands += [
            ("python -c pass", ".venv-cli", [cli_py, "-c", "pass"], env_cli, (0,)),
            ("nemo --help", ".venv-bench", [str(nemo), "--help"], clean_env(COLUMNS="120"), (0,)),
            ('python -c "import nemo_run"', ".venv-bench", [bench_py, "-c", "import nemo_run"], clean_env(), (0,)),
            ('python -c "import submitit"', ".venv-bench", [bench_py, "-c", "import submitit"], clean_env(), (0,)),
        ]
        full_py = FULL_VENV / "bin" / "python"
        if full_py.exists() and C.run([str(full_py), "-c", "import nemo_run, torch"]).returncode == 0:
            commands.append(('python -c "import nemo_run"', ".venv (+torch, NeMo)",
                             [str(full_py), "-c", "import nemo_run"], clean_env(), (0,)))

        times: dict[int, list[float]] = {i: [] for i in range(len(commands))}
        cpus: dict[int, list[float]] = {i: [] for i in range(len(commands))}
        first: dict[int, float] = {}
        load_start = os.getloadavg()[0]
        for rnd in range(args.runs + 1):
            for i, (label, _venv, argv, env, ok) in enumerate(commands):
                elapsed, cpu, proc = timed(argv, env, cwd)
                if proc.returncode not in ok:
                    raise SystemExit(f"{label}: exit {proc.returncode}\n{proc.stdout[-2000:]}{proc.stderr[-2000:]}")
                if rnd:
                    times[i].append(elapsed)
                    cpus[i].append(cpu)
                else:
                    first[i] = elapsed
            print(f"[bench] round {rnd}/{args.runs} done", file=sys.stderr, flush=True)
    finally:
        if bed_cm is not None:
            bed_cm.__exit__(None, None, None)

    rows, medians = [], {}
    for i, (label, venv, _argv, _env, _ok) in enumerate(commands):
        s = C.summary(times[i])
        medians[(label, venv)] = s["median"]
        rows.append([f"`{label}`", venv, C.secs(s["median"]), C.secs(s["min"]), C.secs(s["max"]),
                     C.secs(first[i]), C.secs(statistics.median(cpus[i])), s["n"]])
    timing = C.table(["command", "venv", "wall median", "min", "max", "first (warm-up)", "CPU (user+sys) median",
                      "n"], rows)

    bar_rows = []
    for label, limit in BARS.items():
        value = medians.get((label, ".venv-cli"))
        if value is None:
            bar_rows.append([f"`{label}` ≤ {limit} s", "not measured", "-"])
        else:
            bar_rows.append([f"`{label}` ≤ {limit} s", C.secs(value), "met" if value <= limit else "MISSED"])
    ratio = medians[("nemo --help", ".venv-bench")] / medians[("minitron --help", ".venv-cli")]
    bar_rows.append([f"`nemo --help` / `minitron --help` ≥ {RATIO_BAR:.0f}×", f"{ratio:.1f}×",
                     "met" if ratio >= RATIO_BAR else "MISSED"])
    bars = C.table(["bar", "median (this run)", "verdict"], bar_rows)

    imp_rows = []
    env_imp = env_cli
    for label, python, code, own, env in (
            ("minitron --help", cli_py, ["-m", "launcher.app.cli", "--help"], ("launcher", "__main__"), env_imp),
            ("minitron plan", cli_py, ["-m", "launcher.app.cli", "plan"], ("launcher", "__main__"), env_imp),
            ("minitron status --json (Slurm, finished)", cli_py,
             ["-m", "launcher.app.cli", *status_argv[1:]] if status_argv else None, ("launcher", "__main__"),
             env_slurm),
            ("import nemo_run", bench_py, ["-c", "import nemo_run"], ("nemo_run",), clean_env())):
        if code is None:
            continue
        total, heavy = heaviest_imports(python, code, own, env, cwd)
        imp_rows.append([f"`{label}`", C.ms(total), ", ".join(f"{n} {C.ms(t)}" for n, t in heavy)])
    imports = C.table(["process", "all imports", "heaviest imports from outside its own package (cumulative)"],
                      imp_rows)

    versions = C.run([bench_py, "-c", "import importlib.metadata as m; print(', '.join(f'{p} ' + "
                      "m.version(p) for p in ('nemo_run', 'leptonai', 'submitit', 'torchx', 'typer')))"]).stdout.strip()
    py_cli = C.run([cli_py, "-c", "import platform; print(platform.python_version())"]).stdout.strip()
    body = "\n".join([
        "## CLI cold start (`benchmarks/cli_overhead.py`)", "",
        *C.machine_lines([f"- venvs: .venv-cli (Python {py_cli}; minitron-launcher `pip install -e .`: PyYAML, "
                          f"Jinja2, rich); .venv-bench ({versions}; no torch: nemo-run does not require it)",
                          f"- method: fresh process per measurement, spawn to exit, output captured; "
                          f"{args.runs} timed rounds round-robin over the commands after one warm-up round; "
                          f"page cache warm (no cache drop); 1-min load average {load_start:.2f} when the "
                          f"timing started (this host is shared: wall times move with it, CPU times much less)"]),
        *notes, "", timing, "", "Bars:", "", bars, "", "Import time (`python -X importtime`, one run):", "",
        imports, "",
    ])
    print(body)
    if not args.no_write:
        C.write_section("cli_overhead", body)
        print(f"[bench] wrote the cli_overhead section of {C.RESULTS}", file=sys.stderr)
    shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
