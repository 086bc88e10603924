"""What a Slurm cluster offers, read for `minitron init`: partitions, GPUs, CPUs, memory, limits, account.

Five read-only client calls (QUERIES; the config, for MpiDefault, is optional), or with `--from-file DIR` the same commands' output saved
in DIR under the file names QUERIES gives, so a profile can be written offline and tested on
recorded output. sinfo is parsed by the preflight's parser (slurm_preflight.parse_sinfo), so
`init` and `submit` agree on what a partition offers; scontrol adds which partition is the
default, MaxTime, and each node's CPUs and RealMemory.
"""

from __future__ import annotations

import getpass
import os
import re
import subprocess
from dataclasses import dataclass, field
from typing import Optional

from jobs.contract import read_bounded

from ..config.values import MAX_TIME_MINUTES, format_minutes, parse_time_minutes
from ..core.errors import SlurmError, UserError
from .slurm import SlurmClient
from .slurm_preflight import SINFO_FORMAT, gpu_gres, parse_sinfo

USER = "{user}"
# --from-file DIR's file → the command whose output it holds
QUERIES = {
    "sinfo.txt": ["sinfo", "--noheader", f"--format={SINFO_FORMAT}"],
    "scontrol_show_partition.txt": ["scontrol", "show", "partition"],
    "scontrol_show_node.txt": ["scontrol", "show", "node"],
    "sacctmgr_show_user.txt": ["sacctmgr", "--noheader", "--parsable2", "show", "user", USER, "format=DefaultAccount"],
    "scontrol_show_config.txt": ["scontrol", "show", "config"],
}
CONFIG_QUERY = "scontrol_show_config.txt"  # optional: MpiDefault
ACCOUNT_QUERY = "sacctmgr_show_user.txt"
MAX_OUTPUT_BYTES = 64 * 1024 * 1024  # `scontrol show node` of ten thousand nodes is ~20 MB
_KEY = re.compile(r"^[A-Za-z][A-Za-z0-9_]*$")


@dataclass
class PartitionFacts:
    name: str
    default: bool
    nodes: int
    time_limit: Optional[str]     # MaxTime as HH:MM:00 or D-HH:MM:00; None: unlimited
    gpus_per_node: int            # the most any of its nodes has (as the preflight counts)
    gpu_types: list[str]          # the GRES types of its gpu entries (`h100`); empty when GRES names none
    gres: list[str]
    cpus: Optional[int] = None    # the smallest CPUTot of its nodes
    memory_mb: Optional[int] = None  # the smallest RealMemory of its nodes
    node_shapes: int = 0          # distinct (CPUs, memory) among its nodes: >1 means the smallest is reported


@dataclass
class ClusterFacts:
    source: str                   # "this cluster" or the --from-file directory
    partitions: dict[str, PartitionFacts] = field(default_factory=dict)  # in sinfo's order
    account: Optional[str] = None
    account_note: str = ""        # where the account came from, or why there is none
    mpi_default: Optional[str] = None  # MpiDefault of `scontrol show config` (srun's --mpi when none is given)

    @property
    def default_partition(self) -> Optional[str]:
        return next((p.name for p in self.partitions.values() if p.default), None)


def parse_scontrol(stdout: str) -> list[dict[str, str]]:
    """`scontrol show partition|node`, multi-line or --oneliner: one dict per record. A record starts at
    the key the first record starts with (PartitionName=, NodeName=); a word without `=` continues the
    value before it (`OS=Linux 5.15.0 #1 SMP`, `Reason=bad gpu [root@…]`)."""
    records: list[dict[str, str]] = []
    head = last = None
    for word in stdout.split():
        key, eq, value = word.partition("=")
        if eq and _KEY.match(key):
            head = head or key
            if key == head:
                records.append({})
            if records:
                records[-1][key] = value
                last = key
        elif records and last:
            records[-1][last] += " " + word
    return records


def _slurm_time(text: str) -> Optional[str]:
    """MaxTime or sinfo's %l as a profile time limit; None for UNLIMITED, infinite, over a year or unreadable."""
    try:
        minutes = parse_time_minutes(text)
    except ValueError:
        return None
    return format_minutes(minutes) if 1 <= minutes <= MAX_TIME_MINUTES else None


def _int(text: Optional[str]) -> Optional[int]:
    return int(text) if text and text.isdigit() else None


def facts_from_outputs(source: str, sinfo: str, partitions: str, nodes: str) -> ClusterFacts:
    """The partitions as sinfo lists them, with scontrol's default flag, MaxTime, CPUs and memory."""
    facts = ClusterFacts(source=source)
    shown = {r.get("PartitionName"): r for r in parse_scontrol(partitions)}
    node_records = parse_scontrol(nodes)
    for name, part in parse_sinfo(sinfo).items():
        record = shown.get(name, {})
        members = [n for n in node_records if name in n.get("Partitions", "").split(",")]
        shapes = {(_int(n.get("CPUTot")), _int(n.get("RealMemory"))) for n in members}
        cpus = [c for c, _ in shapes if c]
        memory = [m for _, m in shapes if m]
        types = sorted({t for g in part.gres for t, _ in gpu_gres(g) if t})
        facts.partitions[name] = PartitionFacts(
            name=name, default=record.get("Default") == "YES", nodes=part.nodes,
            time_limit=_slurm_time(record.get("MaxTime", part.time_limit)), gpus_per_node=part.gpus_per_node,
            gpu_types=types, gres=part.gres, cpus=min(cpus) if cpus else None,
            memory_mb=min(memory) if memory else None, node_shapes=len(shapes))
    return facts


def account_from_output(proc: subprocess.CompletedProcess, what: str) -> tuple[Optional[str], str]:
    """The default account from `sacctmgr show user`, and a note; accounting may be off (no account needed)."""
    if proc.returncode != 0:
        reason = (proc.stderr or proc.stdout).strip().splitlines()
        return None, f"{what} did not answer ({reason[0] if reason else f'exit {proc.returncode}'}): accounting is off?"
    names = [line.strip().strip("|") for line in proc.stdout.splitlines() if line.strip().strip("|")]
    if not names:
        return None, f"{what} knows no default account of yours"
    return names[0], f"your default account ({what})"


class LiveCluster:
    """Asks this cluster's Slurm, as the user."""

    def __init__(self, client: SlurmClient | None = None):
        self.client = client or SlurmClient()
        self.source = "this cluster"

    def where(self, query: str) -> str:
        return QUERIES[query][0]

    def output(self, query: str, required: bool = True) -> subprocess.CompletedProcess:
        user = os.environ.get("USER") or getpass.getuser()
        argv = [user if a == USER else a for a in QUERIES[query]]
        try:
            proc = self.client.run(argv, check=False)
        except SlurmError as exc:  # not installed, or no answer in time
            if required:
                raise
            return subprocess.CompletedProcess(argv, exc.returncode, "", exc.stderr)
        if required and proc.returncode != 0:
            raise SlurmError(argv, proc.returncode, proc.stderr or proc.stdout)
        return proc


class RecordedCluster:
    """The same commands' output saved in a directory (`--from-file DIR`)."""

    def __init__(self, directory: str):
        if not os.path.isdir(directory):
            raise UserError("not a directory of saved Slurm output", key="--from-file",
                            hint=f"it holds {', '.join(QUERIES)}")
        self.directory = directory
        self.source = directory

    def where(self, query: str) -> str:
        return os.path.join(self.directory, query)

    def output(self, query: str, required: bool = True) -> subprocess.CompletedProcess:
        path = self.where(query)
        argv = QUERIES[query]
        try:
            return subprocess.CompletedProcess(argv, 0, read_bounded(path, MAX_OUTPUT_BYTES), "")
        except (OSError, UnicodeDecodeError) as exc:
            if required:
                raise UserError(f"cannot read it ({getattr(exc, 'strerror', None) or exc})", file=path,
                                key="--from-file", hint=f"save the output of `{' '.join(argv)}` there") from None
            return subprocess.CompletedProcess(argv, 1, "", f"{query} is not in {self.directory}")


def read_cluster(cluster: LiveCluster | RecordedCluster) -> ClusterFacts:
    sinfo = cluster.output("sinfo.txt").stdout
    facts = facts_from_outputs(cluster.source, sinfo, cluster.output("scontrol_show_partition.txt").stdout,
                               cluster.output("scontrol_show_node.txt").stdout)
    if not facts.partitions:
        raise UserError("lists no partitions", file=cluster.where("sinfo.txt"), hint="is this a Slurm login node?")
    facts.account, facts.account_note = account_from_output(cluster.output(ACCOUNT_QUERY, required=False),
                                                            "sacctmgr show user")
    config = cluster.output(CONFIG_QUERY, required=False)
    if config.returncode == 0:
        facts.mpi_default = mpi_default(config.stdout)
    return facts


def mpi_default(stdout: str) -> Optional[str]:
    """`MpiDefault = pmix` of `scontrol show config`."""
    match = re.search(r"^MpiDefault\s*=\s*(\S+)", stdout, re.M)
    return match.group(1) if match else None
