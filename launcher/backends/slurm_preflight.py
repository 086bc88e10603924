"""What the cluster offers, checked against the profile and the plan before anything is created.

`check_cluster_offers` runs at `minitron submit` (one `sinfo` call, plus `sacctmgr` only when the
profile names an account or qos): a partition that does not exist, an account or qos unknown to
accounting, or a stage that asks for more GPUs, nodes, time, CPUs or memory per node than its
partition has is a UserError (exit 2, nothing created, nothing queued). sbatch would refuse such a job
only when its turn in the graph comes ("Requested node configuration is not available"), or leave it
PENDING for ever where the nodes that could run it are down. `slurm_checks` is `minitron check`'s view of the same.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Sequence

from ..config.values import format_minutes, memory_megabytes, parse_time_minutes
from ..core.errors import SlurmError, UserError
from ..rendering.scripts import node_share
from .base import Check

SINFO_FORMAT = "%P|%G|%l|%D|%N|%c|%m"


@dataclass(frozen=True)
class NodeGroup:
    """Nodes of a partition alike in CPUs and memory (one sinfo line; a `+` after a count means "at least")."""
    count: int
    cpus: int
    memory_mb: int


@dataclass
class Partition:
    name: str
    time_limit: str = ""
    nodes: int = 0
    gpus_per_node: int = 0          # the largest gpu gres count of any node in the partition
    gres: list[str] = field(default_factory=list)
    node_groups: list[NodeGroup] = field(default_factory=list)  # empty: sinfo did not say (an older recording)

    def nodes_with(self, cpus: int, memory_mb: float) -> int | None:
        """How many nodes have at least `cpus` CPUs and `memory_mb` MB; None when sinfo gave no sizes."""
        if not self.node_groups:
            return None
        return sum(g.count for g in self.node_groups if g.cpus >= cpus and g.memory_mb >= memory_mb)

    @property
    def most_cpus(self) -> int:
        return max(g.cpus for g in self.node_groups)

    @property
    def most_memory_mb(self) -> int:
        return max(g.memory_mb for g in self.node_groups)


def gpu_gres(gres: str) -> list[tuple[str | None, int]]:
    """`gpu:4`, `gpu:h100:8(S:0-1)`, `gpu:8,nic:1` → [(type or None, count)] of its gpu entries. The socket
    lists go first: `(S:0,2)` holds a comma too."""
    found = []
    for item in re.sub(r"\(.*?\)", "", gres).split(","):
        parts = [p for p in item.strip().split(":") if p != "no_consume"]
        if parts[0] == "gpu" and len(parts) in (2, 3) and parts[-1].isdigit():
            found.append((parts[1] if len(parts) == 3 else None, int(parts[-1])))
    return found


def _leading_int(text: str) -> int | None:
    match = re.match(r"\d+", text)
    return int(match.group()) if match else None


def parse_sinfo(stdout: str) -> dict[str, Partition]:
    """Lines of `sinfo --noheader --format=SINFO_FORMAT` (one per partition and node group); the format's
    first five fields alone (recordings made before CPUs and memory were asked) leave node_groups empty."""
    partitions: dict[str, Partition] = {}
    for line in stdout.splitlines():
        parts = [p.strip() for p in line.split("|")]
        if len(parts) not in (5, 7):
            continue
        name, gres, limit, count, _nodes = parts[:5]
        name = name.rstrip("*")
        part = partitions.setdefault(name, Partition(name=name, time_limit=limit))
        part.nodes += int(count) if count.isdigit() else 0
        if len(parts) == 7 and count.isdigit():
            cpus, memory = _leading_int(parts[5]), _leading_int(parts[6])
            if cpus is not None and memory is not None:
                part.node_groups.append(NodeGroup(int(count), cpus, memory))
        part.gpus_per_node = max([part.gpus_per_node] + [count for _, count in gpu_gres(gres)])
        if gres and gres != "(null)" and gres not in part.gres:
            part.gres.append(gres)
    return partitions


def _minutes(limit: str) -> int | None:
    """sinfo's %l in minutes; None for `infinite`, `UNLIMITED` or anything else without a number."""
    try:
        return parse_time_minutes(limit)
    except ValueError:
        return None


def read_partitions(client) -> dict[str, Partition]:
    argv = ["sinfo", "--noheader", f"--format={SINFO_FORMAT}"]
    proc = client.run(argv, check=False)
    if proc.returncode != 0:
        raise SlurmError(argv, proc.returncode, proc.stderr or proc.stdout)
    return parse_sinfo(proc.stdout)


def _accounting_lookup(client, entity: str, name: str) -> bool | None:
    """Whether accounting knows `name`; None when there is no accounting to ask."""
    proc = client.run(["sacctmgr", "--noheader", "--parsable2", "show", entity, name, "format=Name"
                       if entity == "qos" else "format=Account"], check=False)
    if proc.returncode != 0:
        return None
    return name in {line.strip().strip("|") for line in proc.stdout.splitlines()}


def check_cluster_offers(client, profile, plan_stages: Sequence) -> None:
    partitions = read_partitions(client)
    for stage in plan_stages:
        if not stage.partition:
            continue
        part = partitions.get(stage.partition)
        if part is None:
            known = ", ".join(sorted(partitions)) or "none"
            key = "partition" if stage.gpus_per_node else "cpu_partition"
            raise UserError(f"stage {stage.name}: partition {stage.partition!r} does not exist on this cluster "
                            f"(partitions: {known})", file=profile.source, key=key)
        if stage.nodes > part.nodes:
            raise UserError(f"stage {stage.name} needs {stage.nodes} nodes but partition {part.name} has "
                            f"{part.nodes}; lower nodes in the profile (or pass --nodes)", file=profile.source,
                            key="nodes")
        maxtime = _minutes(part.time_limit)
        if maxtime is not None and parse_time_minutes(stage.time_limit) > maxtime:
            raise UserError(f"stage {stage.name}'s limit {stage.time_limit} ({stage.time_limit_source}) is above "
                            f"partition {part.name}'s MaxTime {part.time_limit} (sinfo)", file=profile.source,
                            key=f"timeouts.{part.name}",
                            hint=f"set it to {format_minutes(maxtime)}: the plan then keeps every limit within it")
        if stage.gpus_per_node and part.gpus_per_node and stage.gpus_per_node > part.gpus_per_node:
            raise UserError(f"stage {stage.name} needs {stage.gpus_per_node} GPUs per node but partition "
                            f"{part.name} offers {part.gpus_per_node}", file=profile.source, key="gpus_per_node")
        _check_node_size(profile, stage, part)
    for entity, value, key in (("account", profile.account, "account"), ("qos", profile.qos, "qos")):
        if value and _accounting_lookup(client, entity, value) is False:
            raise UserError(f"{entity} {value!r} is unknown to Slurm accounting (sacctmgr show {entity})",
                            file=profile.source, key=key)


def _check_node_size(profile, stage, part: Partition) -> None:
    """The CPUs and memory the stage's script asks of each node (rendering.scripts.node_share) exist on at
    least as many of the partition's nodes as the stage takes."""
    _, cpus_per_task, memory = node_share(profile, stage)
    cpus = cpus_per_task * (stage.gpus_per_node or 1) if cpus_per_task else 0
    memory_mb = memory_megabytes(memory) if memory else 0.0
    fitting = part.nodes_with(cpus, memory_mb)
    if fitting is None or fitting >= stage.nodes:
        return
    short_of_cpus = part.nodes_with(cpus, 0) < stage.nodes
    asked, largest, key = ((f"{cpus} CPUs", str(part.most_cpus), "cpus_per_node") if short_of_cpus else
                           (f"{memory} of memory", f"{part.most_memory_mb}M", "mem_per_node"))
    where = f"{fitting} of partition {part.name}'s nodes have" if fitting else f"no node of partition {part.name} has"
    raise profile.error(key, f"stage {stage.name} asks {asked} per node on {stage.nodes} node(s), but {where} "
                        f"that much (largest: {largest}, sinfo); sbatch would refuse the job when its turn came",
                        f"set {key} to at most {largest}, or 0 to let Slurm decide")


def slurm_checks(client, profile) -> list[Check]:
    try:
        partitions = read_partitions(client)
    except SlurmError as exc:
        return [Check("slurm reachable", "FAIL", exc.stderr.strip() or str(exc))]
    checks = [Check("slurm reachable", "ok", "slurmctld answers")]
    for key in ("partition", "cpu_partition"):
        value = getattr(profile, key)
        if value:
            part = partitions.get(value)
            checks.append(Check(f"{key} {value}", "ok" if part else "FAIL",
                                f"{part.nodes} nodes, time limit {part.time_limit}, gres {','.join(part.gres) or 'none'}"
                                if part else f"not among {', '.join(sorted(partitions)) or 'no partitions'}"))
    part = partitions.get(profile.partition or "")
    if part and profile.gpus_per_node:
        enough = part.gpus_per_node >= profile.gpus_per_node
        checks.append(Check("GPUs per node", "ok" if enough else "warn",
                            f"partition offers {part.gpus_per_node}; the profile asks for {profile.gpus_per_node}"))
    if part and part.node_groups:
        memory_mb = memory_megabytes(profile.mem_per_node)
        fitting = part.nodes_with(profile.cpus_per_node, memory_mb)
        checks.append(Check("CPUs and memory per node", "ok" if fitting >= profile.nodes else "FAIL",
                            f"{fitting} of {part.nodes} nodes have cpus_per_node={profile.cpus_per_node} and "
                            f"mem_per_node={profile.mem_per_node} (largest: {part.most_cpus} CPUs, "
                            f"{part.most_memory_mb}M)"))
    for entity, value in (("account", profile.account), ("qos", profile.qos)):
        if value:
            known = _accounting_lookup(client, entity, value)
            checks.append(Check(f"{entity} {value}", {True: "ok", False: "FAIL", None: "warn"}[known],
                                {True: "exists", False: "unknown to sacctmgr",
                                 None: "cannot verify (no accounting database)"}[known]))
    if profile.image:
        helptext = client.run(["srun", "--help"], check=False)
        pyxis = "--container-image" in helptext.stdout + helptext.stderr
        checks.append(Check("pyxis", "ok" if pyxis else "FAIL",
                            "srun --help lists --container-image" if pyxis
                            else "srun has no --container-image: install pyxis, or set container: none"))
    return checks
