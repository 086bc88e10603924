"""`minitron check`: does this profile match the cluster it names? Each check reports ok, warn or FAIL."""

from __future__ import annotations

import os
import shutil
import subprocess
from dataclasses import dataclass

from .profile import ClusterProfile, load_profile

EXIT_CHECK_FAILED = 1


@dataclass
class Check:
    name: str
    result: str  # ok | warn | FAIL
    detail: str


def _run(argv: list[str], timeout: float = 30) -> subprocess.CompletedProcess | None:
    try:
        return subprocess.run(argv, capture_output=True, text=True, timeout=timeout, stdin=subprocess.DEVNULL)
    except (FileNotFoundError, subprocess.TimeoutExpired):
        return None


def slurm_checks(profile: ClusterProfile) -> list[Check]:
    checks = []
    ping = _run(["squeue", "--noheader", "--jobs=0"]) if shutil.which("squeue") else None
    if ping is None:
        return [Check("slurm reachable", "FAIL", "squeue not found or not answering")]
    reachable = ping.returncode == 0 or "Invalid job id" in ping.stderr
    checks.append(Check("slurm reachable", "ok" if reachable else "FAIL",
                        "slurmctld answers" if reachable else ping.stderr.strip()))
    if not reachable:
        return checks
    parts = _run(["sinfo", "--noheader", "--format=%P|%G|%l"])
    known: dict[str, tuple[str, str]] = {}
    for line in (parts.stdout if parts and parts.returncode == 0 else "").splitlines():
        name, gres, limit = (line.split("|") + ["", ""])[:3]
        known[name.rstrip("*")] = (gres, limit)
    for key in ("partition", "cpu_partition"):
        value = getattr(profile, key)
        if value:
            ok = value in known
            checks.append(Check(f"{key} {value}", "ok" if ok else "FAIL",
                                f"time limit {known[value][1]}, gres {known[value][0]}" if ok
                                else f"not among {', '.join(sorted(known)) or 'no partitions'}"))
    if profile.partition in known and profile.gpus_per_node:
        gres = known[profile.partition][0]
        counts = [int(x.split(":")[-1].split("(")[0]) for x in gres.split(",")
                  if x.startswith("gpu") and x.split(":")[-1].split("(")[0].isdigit()]
        enough = counts and max(counts) >= profile.gpus_per_node
        checks.append(Check("GPUs per node", "ok" if enough else "warn",
                            f"partition offers {gres or 'no gres'}; the profile asks for {profile.gpus_per_node}"))
    if profile.account:
        assoc = _run(["sacctmgr", "--noheader", "--parsable2", "show", "account", profile.account, "format=Account"])
        if assoc is None or assoc.returncode != 0:
            checks.append(Check(f"account {profile.account}", "warn", "cannot verify (no accounting database)"))
        else:
            exists = profile.account in assoc.stdout.split()
            checks.append(Check(f"account {profile.account}", "ok" if exists else "FAIL",
                                "exists" if exists else "unknown to sacctmgr"))
    if profile.image:
        helptext = _run(["srun", "--help"])
        pyxis = helptext is not None and "--container-image" in helptext.stdout + helptext.stderr
        checks.append(Check("pyxis", "ok" if pyxis else "FAIL",
                            "srun --help lists --container-image" if pyxis
                            else "srun has no --container-image: install pyxis, or set container: none"))
    return checks


def common_checks(profile: ClusterProfile) -> list[Check]:
    checks = []
    if profile.image:
        if profile.image.startswith("/"):
            found = os.path.exists(profile.image)
            checks.append(Check("image", "ok" if found else "FAIL", f"{profile.image} {'exists' if found else 'is missing'}"))
        else:
            checks.append(Check("image", "ok", f"well formed: {profile.image}"))
    for mount in profile.mounts:
        source = mount.split(":")[0]
        found = os.path.exists(source)
        checks.append(Check(f"mount {source}", "ok" if found else "FAIL", "exists" if found else "missing here"))
    parent = profile.job_dir
    while not os.path.exists(parent):
        parent = os.path.dirname(parent)
    writable = os.access(parent, os.W_OK)
    checks.append(Check("job_dir", "ok" if writable else "FAIL",
                        f"{profile.job_dir} {'can be created/written' if writable else 'is not writable'}"))
    for name in profile.required_env_vars:
        present = bool(os.environ.get(name))
        checks.append(Check(f"env {name}", "ok" if present else "FAIL", "set" if present else "not set in this shell"))
    return checks


def local_checks(profile: ClusterProfile) -> list[Check]:
    checks = []
    probe = _run([profile.python, "-c", "import torch; print(torch.__version__, torch.cuda.device_count())"], 120)
    if probe is None or probe.returncode != 0:
        checks.append(Check("torch", "FAIL", f"{profile.python} cannot import torch"))
    else:
        version, count = probe.stdout.split()
        enough = int(count) >= profile.gpus_per_node
        checks.append(Check("GPUs", "ok" if enough else "warn",
                            f"torch {version} sees {count} GPU(s); the profile has {profile.gpus_per_node}"))
    if profile.image:
        docker = shutil.which("docker")
        checks.append(Check("docker", "ok" if docker else "FAIL",
                            docker or "docker not found: set container: none to run on bare metal"))
    return checks


def run_checks(profile_arg: str | None) -> int:
    from rich.table import Table

    from .views import console

    profile = load_profile(profile_arg)
    checks = common_checks(profile)
    checks += slurm_checks(profile) if profile.executor == "slurm" else local_checks(profile)
    table = Table(title=f"checks for {profile.source}", title_justify="left")
    for col in ("check", "result", "detail"):
        table.add_column(col)
    style = {"ok": "green", "warn": "yellow", "FAIL": "red"}
    for check in checks:
        table.add_row(check.name, f"[{style[check.result]}]{check.result}[/]", check.detail)
    console().print(table)
    return EXIT_CHECK_FAILED if any(c.result == "FAIL" for c in checks) else 0
