"""The plan: one StagePlan per stage, typed and versioned; what plan.json holds and every reader gets back.

The planner fills it (planner.py), the renderer turns it into stage configs and scripts, the backends
submit from it, and status reads it once per run (`read_plan`) to compare estimates with what ran.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, fields
from typing import Any, Mapping, Optional

from jobs.contract import BY_NAME, StageKind, read_bounded

PLAN_VERSION = 1
READABLE_VERSIONS = (0, PLAN_VERSION)  # 0: plan.json before it had a version (same fields, fewer of them)
MAX_PLAN_BYTES = 4 * 1024 * 1024


class PlanError(ValueError):
    """plan.json is unreadable, of another version, or not a plan."""


@dataclass
class StagePlan:
    name: str
    kind: str
    depends_on: list[str]
    entrypoint: str
    nodes: int
    gpus_per_node: int
    tp: int = 1
    pp: int = 1
    cp: int = 1
    dp: int = 1
    sequence_parallel: bool = False
    micro_batch_size: Optional[int] = None
    global_batch_size: Optional[int] = None
    grad_accum: Optional[int] = None
    steps: Optional[int] = None
    seq_length: Optional[int] = None
    tokens: Optional[int] = None
    lr: Optional[float] = None
    min_lr: Optional[float] = None
    est_memory_gib: Optional[float] = None
    gpu_memory_gib: Optional[float] = None
    memory_breakdown: dict[str, float] = field(default_factory=dict)
    partition: Optional[str] = None
    container: Optional[str] = None
    time_limit: str = "01:00:00"
    time_limit_source: str = ""     # the key the limit came from, or "estimate" (planner.py, _time_limit)
    est_hours: float = 0.0
    est_gpu_hours: float = 0.0
    requeue: bool = False
    attention: str = "fused"        # the engine the job runs: fused (Transformer Engine) | unfused (local spec)
    precision: str = "bf16-mixed"   # the engine's precision (model stages; "32" where one runs on the CPU)
    recompute: str = "none"         # activation recomputation of a training stage
    pruning: Optional[str] = None   # the stage's variant: its pruning entry or student
    cpus_per_task: Optional[int] = None
    why: str = ""
    est_startup_s: float = 0.0
    est_step_s: Optional[float] = None
    calibrated_runs: int = 0
    est_start_hours: float = 0.0
    calibration_profile_key: str = ""   # the keys a finished stage's measurement is recorded under
    calibration_shape_key: str = ""
    stall_timeout_s: Optional[int] = None  # training stages: the job exits for requeue after this long without progress
    tracking: Optional[dict] = None  # training stages: the profile's W&B / MLflow settings (config/tracking.py)

    @property
    def stage_kind(self) -> StageKind:
        return BY_NAME[self.kind]

    @property
    def uses_gpus(self) -> bool:
        return self.gpus_per_node > 0

    def to_json(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_json(cls, data: Mapping[str, Any]) -> "StagePlan":
        known = {f.name for f in fields(cls)}
        if not isinstance(data, Mapping) or not {"name", "kind", "depends_on", "entrypoint"} <= set(data):
            raise PlanError("a stage of plan.json lacks name, kind, depends_on or entrypoint")
        if data["kind"] not in BY_NAME:
            raise PlanError(f"a stage of plan.json has the unknown kind {data['kind']!r}")
        return cls(**{k: v for k, v in data.items() if k in known})


@dataclass
class Plan:
    recipe: str
    profile: str
    executor: str
    stages: list[StagePlan]
    nodes: int = 1
    gpus_per_node: int = 0
    one_at_a_time: bool = False  # the local executor without local_parallel
    exclusive: bool = False      # a Slurm stage takes whole nodes

    def stage(self, name: str) -> StagePlan:
        return next(s for s in self.stages if s.name == name)

    def names(self) -> list[str]:
        return [s.name for s in self.stages]

    def dependencies(self) -> dict[str, list[str]]:
        return {s.name: list(s.depends_on) for s in self.stages}

    def schedule(self) -> dict[str, tuple[float, float]]:
        """Start and finish hour of each stage when stages compete for the profile's GPUs: list
        scheduling in plan order, each stage starting once its dependencies are done and enough
        nodes have its GPUs free, as Slurm's backfill and the local supervisor do. CPU stages take
        no GPUs (the CPU partition), except that a one-at-a-time executor runs everything in turn."""
        free = [self.gpus_per_node] * self.nodes
        waiting = list(self.stages)
        running: list[tuple[float, StagePlan, list[tuple[int, int]]]] = []
        times: dict[str, tuple[float, float]] = {}
        now = 0.0
        while waiting or running:
            for s in list(waiting):
                if self.one_at_a_time and running:
                    break
                if not all(d in times and times[d][1] <= now for d in s.depends_on):
                    continue
                taken = self._allocate(s, free)
                if taken is not None:
                    waiting.remove(s)
                    times[s.name] = (now, now + s.est_hours)
                    running.append((now + s.est_hours, s, taken))
            if not running:  # nothing can start (a stage larger than the profile): run the next one alone
                s = waiting.pop(0)
                times[s.name] = (now, now + s.est_hours)
                running.append((now + s.est_hours, s, []))
            running.sort(key=lambda item: item[0])
            now, _, taken = running.pop(0)
            for node, gpus in taken:
                free[node] += gpus
        return times

    def _allocate(self, s: StagePlan, free: list[int]) -> list[tuple[int, int]] | None:
        if s.gpus_per_node == 0:
            return []
        take = self.gpus_per_node if self.exclusive else s.gpus_per_node
        nodes = [i for i, gpus in enumerate(free) if gpus >= take]
        if len(nodes) < s.nodes:
            return None
        for i in nodes[:s.nodes]:
            free[i] -= take
        return [(i, take) for i in nodes[:s.nodes]]

    def critical_path_hours(self) -> float:
        """Submit to last stage done, with stages waiting for each other's GPUs (see schedule)."""
        return max((finish for _, finish in self.schedule().values()), default=0.0)

    def gpu_hours(self) -> float:
        return sum(s.est_gpu_hours for s in self.stages)

    def to_json(self) -> dict[str, Any]:
        return {"plan_version": PLAN_VERSION, "recipe": self.recipe, "profile": self.profile,
                "executor": self.executor, "nodes": self.nodes, "gpus_per_node": self.gpus_per_node,
                "one_at_a_time": self.one_at_a_time, "exclusive": self.exclusive,
                "est_hours": round(self.critical_path_hours(), 3),
                "est_gpu_hours": round(self.gpu_hours(), 3),
                "stages": [s.to_json() for s in self.stages]}

    @classmethod
    def from_json(cls, data: Any) -> "Plan":
        if not isinstance(data, Mapping):
            raise PlanError("plan.json is not a JSON object")
        if data.get("plan_version", 0) not in READABLE_VERSIONS:
            raise PlanError(f"plan.json has plan_version {data.get('plan_version')!r}, this launcher reads "
                            f"{PLAN_VERSION} (the run was made by another launcher version)")
        stages = data.get("stages")
        if not isinstance(stages, list):
            raise PlanError("plan.json has no list of stages")
        try:
            return cls(recipe=str(data["recipe"]), profile=str(data["profile"]), executor=str(data["executor"]),
                       stages=[StagePlan.from_json(s) for s in stages], nodes=int(data.get("nodes", 1)),
                       gpus_per_node=int(data.get("gpus_per_node", 0)),
                       one_at_a_time=bool(data.get("one_at_a_time")), exclusive=bool(data.get("exclusive")))
        except (KeyError, TypeError, ValueError) as exc:
            raise PlanError(f"plan.json is not a plan: {exc}") from None

    def text(self) -> str:
        """plan.json's content."""
        return json.dumps(self.to_json(), indent=2) + "\n"


def read_plan(path: str) -> Plan:
    """plan.json as a Plan; PlanError (or OSError) when it cannot be one."""
    try:
        data = json.loads(read_bounded(path, MAX_PLAN_BYTES))
    except ValueError as exc:
        raise PlanError(f"plan.json is not JSON: {exc}") from None
    return Plan.from_json(data)
