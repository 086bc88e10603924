"""The planner: turn a profile and a recipe into one resource and parallelism plan per stage.

Rules (from the tutorial and Megatron): world = nodes × GPUs = TP·PP·CP·DP; TP stays inside a node
and divides the heads and query groups; PP divides the layers; GBS is a multiple of MBS·DP. The
smallest TP, then PP, whose memory estimate fits is chosen; the recipe's micro-batch is the largest
tried. Pruning runs at TP=1 with PP over one node's GPUs; the report evaluates every model on one node
(TP=1, data-parallel); data prep is CPU-only. A recipe with `layout: tutorial` takes the NeMo 2
tutorial's own layouts instead (`TUTORIAL_*` below), or is refused where they cannot run.

Time: each stage costs a startup (container, interpreter, NeMo import, checkpoint load) plus its
steps, each step its FLOPs at the GPU's achievable rate plus a fixed per-step cost that dominates
small models. Stages then compete for the profile's GPUs (`Plan.schedule`). Measured stage times
(`launcher/calibration.py`) replace the model for a stage whose key they cover.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Iterator, Optional

from . import calibration
from . import memory as mm
from .errors import UserError
from .profile import ClusterProfile, format_minutes, parse_time_minutes
from .recipe import GPU_TRAINING_KINDS, Recipe, StageNode, stage_graph

# Keep this much of each GPU free of the estimate: the allocator, NCCL growth and estimate error.
USABLE_FRACTION = 0.9
DATA_PREP_HOURS = 0.25  # tokenising WikiText-103 (~120M tokens) on 32 workers; not modelled
HOST_BYTES_PER_SECOND = 1e9  # checkpoint conversion, loads and saves read and write about this fast
CONTINUATION_KINDS = GPU_TRAINING_KINDS

# Startup, MEASURED on the device (1 × H200, local executor, no container): the tiny recipe's stages
# took 47-79 s each (benchmarks/results/tiny-gpu-20261128/status.txt), almost all of it before the
# first step; `import nemo.collections.llm` alone is 38 s (../shared/reference/device-notes.md).
PROCESS_START_S = 8.0    # interpreter, torch import, torchrun rendezvous
NEMO_IMPORT_S = 38.0
NEMO_SETUP_S = 12.0      # trainer, strategy, process groups, model build, data loaders
DISTILL_SETUP_S = 8.0    # the distillation wrapper around student and teacher
BUILTIN_DATA_S = 45.0    # the tiny corpus: imports, BPE training, tokenising (measured 47 s)
# Per-step costs independent of model size (kernel launches, optimizer, logging): the tiny recipe's
# 300 fine-tune steps at 2 micro-batches took ~21 s beyond the startup of a stage with no steps.
STEP_OVERHEAD_S = 0.03
MICRO_BATCH_OVERHEAD_S = 0.02
CHECKPOINT_BYTES_PER_PARAM = mm.WEIGHT_BYTES + mm.OPTIMIZER_BYTES  # weights + fp32 master and Adam

# Inputs above these make no sense for a Minitron run and would only make the planner's search slow
# (a loop over layers or nodes) or overflow floats; refused here, whatever the schema allows.
RECIPE_BOUNDS = {
    "model.num_layers": 1024, "model.hidden_size": 131072, "model.ffn_hidden_size": 1048576,
    "model.num_attention_heads": 1024, "model.num_query_groups": 1024, "model.vocab_size": 4194304,
    "data.seq_length": 1048576,
}
TRAIN_BOUNDS = {"steps": 10 ** 8, "tokens": 1e16, "micro_batch_size": 65536, "global_batch_size": 2 ** 24,
                "cp": 1024, "tp": 1024, "pp": 1024, "nodes": 16384, "gpus_per_node": 64,
                "val_check_interval": 10 ** 8, "limit_val_batches": 10 ** 6, "ckpt_every_n_steps": 10 ** 8,
                "seq_length": 1048576}
PRUNE_BOUNDS = {"micro_batch_size": 65536, "num_train_samples": 10 ** 9, "pp": 1024, "seq_length": 1048576}
PROFILE_BOUNDS = {"nodes": 16384}
# A requeued stage is told to checkpoint signal_lead_s before its limit; below this multiple of the
# lead the signal would arrive before any real work and the stage would requeue until its budget ends.
MIN_LIMIT_PER_SIGNAL_LEAD = 2
# Node counts below the profile's tried when its GPUs do not divide the batch.
MAX_FALLBACK_NODE_COUNTS = 32


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
    est_hours: float = 0.0
    est_gpu_hours: float = 0.0
    requeue: bool = False
    attention: str = "fused"
    pruning: Optional[str] = None
    cpus_per_task: Optional[int] = None
    why: str = ""
    # Appended fields (plan.json readers rely on the names above): the time model's parts, and the
    # keys a finished stage's measurement is recorded under (launcher.calibration.record).
    est_startup_s: float = 0.0
    est_step_s: Optional[float] = None
    calibrated_runs: int = 0
    est_start_hours: float = 0.0
    calibration_profile_key: str = ""
    calibration_shape_key: str = ""
    stall_timeout_s: Optional[int] = None  # training stages: the job exits for requeue after this long without progress

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


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

    def to_json(self) -> dict[str, Any]:
        return {"recipe": self.recipe, "profile": self.profile, "executor": self.executor,
                "est_hours": round(self.critical_path_hours(), 3),
                "est_gpu_hours": round(sum(s.est_gpu_hours for s in self.stages), 3),
                "stages": [s.to_json() for s in self.stages]}


def teacher_shape(recipe: Recipe) -> mm.Shape:
    m = recipe.model
    return mm.Shape(m.num_layers, m.hidden_size, m.ffn_hidden_size, m.num_attention_heads,
                    m.num_query_groups, m.vocab_size, m.tie_embeddings)


def student_shape(recipe: Recipe, pruning: str) -> mm.Shape:
    spec = recipe.pruning[pruning]
    t = teacher_shape(recipe)
    layers = t.num_layers - len(spec.drop_layers) if spec.drop_layers else (spec.target_num_layers or t.num_layers)
    return mm.Shape(layers, spec.target_hidden_size or t.hidden_size,
                    spec.target_ffn_hidden_size or t.ffn_hidden_size,
                    spec.target_num_attention_heads or t.num_attention_heads,
                    spec.target_num_query_groups or t.num_query_groups, t.vocab_size, t.tie_embeddings,
                    head_dim=t.kv_channels)


def _divisors(n: int) -> list[int]:
    """Ascending divisors in O(√n) steps: the planner bounds n, but a loop to n would still be slow."""
    small, large = [], []
    d = 1
    while d * d <= n:
        if n % d == 0:
            small.append(d)
            if d * d != n:
                large.append(n // d)
        d += 1
    return small + large[::-1]


def _gib(x: float) -> float:
    return round(x / mm.GIB, 1)


def _show(value: Any) -> str:
    try:
        return f"{value:g}"
    except (OverflowError, ValueError, TypeError):
        return "a number too large to print"


@dataclass
class _Search:
    """What one node count's layout search found: a layout, or why not."""

    nodes: int
    world: int
    gbs: int
    lr: float
    found: Optional[tuple[mm.Layout, mm.MemoryEstimate, list[str], str]] = None
    divisible: bool = False
    best_miss: Optional[tuple[float, str]] = None
    dps: tuple[int, ...] = ()


# `layout: tutorial`: the NeMo 2 tutorial's own layouts (tutorials/llm/llama/pruning-distillation:
# 02_teacher_finetuning, 03_pruning, 04_distillation), on one node of 8 GPUs whatever the profile's node
# count: fine-tune and both distillations TP=8 PP=1 CP=1 with sequence parallelism (DP=1, so GBS 128 at
# MBS 4 is 32 accumulation steps); depth and width pruning alike TP=1 PP=8 (the notebook's common settings).
TUTORIAL_GPUS = 8
TUTORIAL_TRAIN = {"tp": 8, "pp": 1, "cp": 1, "nodes": 1, "gpus_per_node": TUTORIAL_GPUS, "sequence_parallel": True}
TUTORIAL_PRUNE_PP = 8


class Planner:
    def __init__(self, profile: ClusterProfile, recipe: Recipe):
        from .executors import executor_class

        self.profile = profile
        self.recipe = recipe
        self.executor = executor_class(profile.executor)
        self.gpu_gib = profile.gpu.memory_gib
        self.usable = profile.gpu.memory_gib * USABLE_FRACTION * mm.GIB
        self.tflops = mm.achievable_tflops(profile.gpu.model, profile.gpu.achievable_tflops, profile.attention)
        self.calibrations = calibration.load()
        self.profile_key = calibration.profile_key(profile)

    def plan(self) -> Plan:
        self._check_bounds()
        stages = [self._plan_stage(node) for node in stage_graph(self.recipe)]
        plan = Plan(recipe=self.recipe.name, profile=self.profile.source, executor=self.profile.executor,
                    stages=stages, nodes=self.profile.nodes, gpus_per_node=self.profile.gpus_per_node,
                    one_at_a_time=not self.executor.stages_side_by_side(self.profile),
                    exclusive=self.executor.takes_whole_nodes(self.profile))
        for name, (start, _) in plan.schedule().items():
            plan.stage(name).est_start_hours = round(start, 3)
        return plan

    def plan_stage(self, name: str) -> StagePlan:
        """One stage alone, e.g. for a benchmark of a GPU that could not hold the other stages."""
        self._check_bounds()
        return self._plan_stage(next(n for n in stage_graph(self.recipe) if n.name == name))

    def _check_bounds(self) -> None:
        """Refuse sizes no Minitron run has, before any loop over layers or nodes can take long."""
        r = self.recipe
        values = {"model.num_layers": r.model.num_layers, "model.hidden_size": r.model.hidden_size,
                  "model.ffn_hidden_size": r.model.ffn_hidden_size,
                  "model.num_attention_heads": r.model.num_attention_heads,
                  "model.num_query_groups": r.model.num_query_groups, "model.vocab_size": r.model.vocab_size,
                  "data.seq_length": r.data.seq_length}
        bounds = dict(RECIPE_BOUNDS)
        for kind in GPU_TRAINING_KINDS:
            for name, limit in TRAIN_BOUNDS.items():
                values[f"stages.{kind}.{name}"] = getattr(r.settings(kind), name)
                bounds[f"stages.{kind}.{name}"] = limit
        for name, limit in PRUNE_BOUNDS.items():
            values[f"stages.prune.{name}"] = getattr(r.settings("prune"), name)
            bounds[f"stages.prune.{name}"] = limit
        for key, value in values.items():
            if value is not None and not value <= bounds[key]:
                raise r.error(key, f"{_show(value)} is above the planner's bound of {_show(bounds[key])}")
        for key, limit in PROFILE_BOUNDS.items():
            value = getattr(self.profile, key)
            if not value <= limit:
                raise UserError(f"{_show(value)} is above the planner's bound of {_show(limit)}",
                                file=self.profile.source, key=key)
        for name, spec in r.pruning.items():
            if spec.drop_layers is not None and not spec.drop_layers:
                raise r.error(f"pruning.{name}.drop_layers", "is empty: list the 1-indexed layers to drop, "
                              "or give target_* sizes instead")

    # -- per kind ------------------------------------------------------------------------------
    def _plan_stage(self, node: StageNode) -> StagePlan:
        settings = self.recipe.settings(node.kind)
        entry = settings.entrypoint or ("jobs.import_ckpt" if node.kind == "import" else f"jobs.{node.kind}")
        base = StagePlan(name=node.name, kind=node.kind, depends_on=list(node.depends_on), entrypoint=entry,
                         nodes=1, gpus_per_node=0, attention=self.profile.attention, pruning=node.pruning,
                         container=None if self.profile.container == "none" else self.profile.container)
        if node.kind in GPU_TRAINING_KINDS:
            self._plan_training(base, settings)
        elif node.kind == "prune":
            self._plan_prune(base, settings)
        elif node.kind == "report":
            self._plan_report(base, settings)
        elif node.kind in ("import", "export"):
            self._plan_conversion(base, settings)
        else:
            self._plan_cpu(base, settings)
        base.partition = self._partition(base, settings)
        base.time_limit = self._time_limit(base, settings)
        self._apply_calibration(base)
        base.est_gpu_hours = round(base.est_hours * base.nodes * base.gpus_per_node, 3)
        base.est_hours = round(base.est_hours, 3)
        limit_h = parse_time_minutes(base.time_limit) / 60
        if base.est_hours > limit_h:
            if base.requeue:
                base.why += (f"; ~{math.ceil(base.est_hours / limit_h) - 1} continuation(s) past the "
                             f"{base.time_limit} limit")
            else:
                base.why += f"; WARNING: estimate {base.est_hours:.1f} h exceeds its {base.time_limit} limit"
        return base

    def _apply_calibration(self, sp: StagePlan) -> None:
        """Measured startup and step times of earlier runs with this stage's key replace the model's."""
        teacher = teacher_shape(self.recipe)
        shape = calibration.shape_key(student_shape(self.recipe, sp.pruning), teacher) if sp.kind == "distill" \
            else calibration.shape_key(teacher)
        sp.calibration_profile_key, sp.calibration_shape_key = self.profile_key, shape
        found = calibration.lookup(self.calibrations, *calibration.stage_keys(sp))
        if found is None:
            return
        step_s = found.step_s if found.step_s is not None else sp.est_step_s
        sp.est_startup_s = round(found.startup_s, 1)
        sp.est_step_s = step_s
        sp.est_hours = (found.startup_s + (sp.steps or 0) * (step_s or 0.0)) / 3600
        sp.calibrated_runs = found.runs
        sp.why += f"; time calibrated from {found.runs} runs"

    def _startup_s(self, nemo: bool, load_params: float = 0.0, extra_s: float = 0.0) -> float:
        """Seconds before a stage's first step: container, interpreter, NeMo, checkpoint loads."""
        seconds = PROCESS_START_S + extra_s + load_params * mm.WEIGHT_BYTES / HOST_BYTES_PER_SECOND
        if nemo:
            seconds += NEMO_IMPORT_S + NEMO_SETUP_S
        if self.profile.container != "none":
            seconds += self.executor.container_start_s
        return seconds

    def _need_gpus(self, key: str) -> int:
        if self.profile.gpus_per_node < 1:
            raise UserError(f"the {key.split('.')[1]} stage needs GPUs but the profile has gpus_per_node=0",
                            file=self.profile.source, key="gpus_per_node")
        return self.profile.gpus_per_node

    def _plan_training(self, sp: StagePlan, st: Any) -> None:
        key = f"stages.{sp.kind}"
        if self.recipe.layout == "tutorial":
            return self._plan_tutorial_training(sp, st)
        recipe, profile = self.recipe, self.profile
        gpn = self._need_gpus(key)
        if st.gpus_per_node:
            if st.gpus_per_node > gpn:
                raise self.recipe.error(f"{key}.gpus_per_node", f"gpus_per_node={st.gpus_per_node} exceeds the "
                                        f"profile's gpus_per_node={gpn}")
            gpn = st.gpus_per_node
        nodes = st.nodes or profile.nodes
        if nodes > profile.nodes:
            raise self.recipe.error(f"{key}.nodes", f"nodes={nodes} exceeds the profile's nodes={profile.nodes}")
        seq = st.seq_length or recipe.data.seq_length
        teacher = teacher_shape(recipe)
        shape = student_shape(recipe, sp.pruning) if sp.kind == "distill" else teacher
        shapes = [shape, teacher] if sp.kind == "distill" else [shape]
        tps = self._tp_candidates(st, shapes, gpn, key)
        cp = st.cp
        if seq % (2 * cp) and cp > 1:
            raise self.recipe.error(f"{key}.cp", f"cp={cp} needs seq_length divisible by {2 * cp}, got {seq}")
        full = self._search(sp, st, nodes, gpn, shapes, tps, seq, key)
        result = full
        if full.found is None and not st.nodes:
            tried = 0
            for fewer in self._divisible_node_counts(st, shapes, gpn, tps, cp, nodes, key):
                result = self._search(sp, st, fewer, gpn, shapes, tps, seq, key)
                tried += 1
                if result.found is not None or tried >= MAX_FALLBACK_NODE_COUNTS:
                    break
        if result.found is not None:
            lay, est, tried_labels, label = result.found
            self._fill_training(sp, st, result.nodes, gpn, lay, result.gbs, result.lr, est, tried_labels, label)
            if result is not full:
                sp.why += self._fewer_nodes_note(sp, st, full, result, shapes, tps, gpn, seq, key)
            return
        if not full.divisible:
            raise self.recipe.error(f"{key}.global_batch_size",
                                    f"global_batch_size={full.gbs} is not divisible by micro_batch_size×DP for any "
                                    f"layout of {full.world} GPUs or fewer nodes (DP ∈ {list(full.dps)}, "
                                    f"micro_batch_size ≤ {st.micro_batch_size})")
        assert full.best_miss is not None
        raise self.recipe.error(key, f"no layout fits in {self.gpu_gib:g} GiB GPUs ({_gib(self.usable)} GiB usable): "
                                f"smallest estimate {_gib(full.best_miss[0])} GiB at {full.best_miss[1]} on "
                                f"{full.world} GPUs; add nodes, shorten seq_length, or set recompute: full")

    def _tutorial_gpus(self, key: str) -> None:
        """`layout: tutorial` needs nodes of exactly the tutorial's 8 GPUs (TP=8 and PP=8 fill one)."""
        gpn = self._need_gpus(key)
        if gpn != TUTORIAL_GPUS:
            raise self.recipe.error("layout", f"the tutorial's layout runs the {key.split('.')[1]} stage on one "
                                    f"node of {TUTORIAL_GPUS} GPUs, but the profile has gpus_per_node={gpn}; "
                                    f"use layout: planned")

    def _tutorial_conflicts(self, st: Any, key: str, fixed: dict[str, Any]) -> None:
        """A stage setting that contradicts the tutorial's layout is refused, not silently overridden."""
        for name, value in fixed.items():
            given = getattr(st, name)
            if given is not None and given != value:
                raise self.recipe.error(f"{key}.{name}", f"{name}={_show(given)} conflicts with layout: tutorial "
                                        f"({name}={value} there); drop it or use layout: planned")

    def _plan_tutorial_training(self, sp: StagePlan, st: Any) -> None:
        """The tutorial's TP=8 PP=1 SP layout on one node, at the recipe's micro-batch (the tutorial's 4);
        refused where it cannot run as planned: heads or groups not divisible by 8, or over the memory."""
        key = f"stages.{sp.kind}"
        self._tutorial_gpus(key)
        self._tutorial_conflicts(st, key, TUTORIAL_TRAIN)
        t = TUTORIAL_TRAIN
        teacher = teacher_shape(self.recipe)
        shapes = [student_shape(self.recipe, sp.pruning), teacher] if sp.kind == "distill" else [teacher]
        for shape in shapes:
            if shape.num_attention_heads % t["tp"] or shape.num_query_groups % t["tp"]:
                raise self.recipe.error("layout", f"the tutorial's layout needs TP={t['tp']}, which does not divide "
                                        f"the attention heads ({shape.num_attention_heads}) and query groups "
                                        f"({shape.num_query_groups}) of the {sp.name} stage; use layout: planned")
        seq = st.seq_length or self.recipe.data.seq_length
        world = t["nodes"] * t["gpus_per_node"]
        dp = world // (t["tp"] * t["pp"] * t["cp"])
        gbs, lr = self._scaled_batch(st, world, key)
        mbs = st.micro_batch_size
        if gbs % (mbs * dp):
            raise self.recipe.error(f"{key}.global_batch_size", f"global_batch_size={gbs} is not divisible by "
                                    f"micro_batch_size×DP = {mbs}×{dp} of layout: tutorial")
        lay = mm.Layout(t["tp"], t["pp"], t["cp"], dp, mbs, seq, gbs // (mbs * dp), t["sequence_parallel"],
                        self.profile.attention, st.recompute)
        est = mm.training_memory(shapes[0], lay, teacher if sp.kind == "distill" else None)
        label = f"tutorial layout TP={t['tp']} PP={t['pp']} SP MBS={mbs}"
        if est.total > self.usable:
            raise self.recipe.error("layout", f"the tutorial's layout needs an estimated {_gib(est.total)} GiB per "
                                    f"GPU for the {sp.name} stage at TP={t['tp']} PP={t['pp']} MBS={mbs}, more than "
                                    f"{_gib(self.usable)} usable of the {self.gpu_gib:g} GiB card; use layout: planned")
        self._fill_training(sp, st, t["nodes"], t["gpus_per_node"], lay, gbs, lr, est, [], label)

    def _search(self, sp: StagePlan, st: Any, nodes: int, gpn: int, shapes: list[mm.Shape], tps: list[int],
                seq: int, key: str) -> _Search:
        """The smallest TP, then PP, then the largest micro-batch whose memory fits, on `nodes` nodes."""
        world = nodes * gpn
        gbs, lr = self._scaled_batch(st, world, key)
        result = _Search(nodes=nodes, world=world, gbs=gbs, lr=lr)
        cp = st.cp
        tried: list[str] = []
        dps: set[int] = set()
        for tp in tps:
            for pp in self._pp_candidates(st, shapes, world, tp, cp, key):
                dp = world // (tp * pp * cp)
                dps.add(dp)
                mbs = st.micro_batch_size
                while mbs >= 1:
                    if gbs % (mbs * dp) == 0:
                        result.divisible = True
                        lay, est = self._layout_memory(sp, st, shapes, tp, pp, dp, mbs, seq, gbs // (mbs * dp))
                        label = f"TP={tp} PP={pp} MBS={mbs}"
                        if est.total <= self.usable:
                            result.found = (lay, est, tried, label)
                            return result
                        tried.append(f"{label} needs {_gib(est.total)} GiB")
                        if result.best_miss is None or est.total < result.best_miss[0]:
                            result.best_miss = (est.total, label)
                    mbs = mbs // 2 if mbs > 1 else 0
        result.dps = tuple(sorted(dps))
        return result

    def _layout_memory(self, sp: StagePlan, st: Any, shapes: list[mm.Shape], tp: int, pp: int, dp: int, mbs: int,
                       seq: int, accum: int) -> tuple[mm.Layout, mm.MemoryEstimate]:
        sequence_parallel = st.sequence_parallel if st.sequence_parallel is not None else tp > 1
        lay = mm.Layout(tp, pp, st.cp, dp, mbs, seq, accum, sequence_parallel, self.profile.attention, st.recompute)
        return lay, mm.training_memory(shapes[0], lay, shapes[1] if sp.kind == "distill" else None)

    def _divisible_node_counts(self, st: Any, shapes: list[mm.Shape], gpn: int, tps: list[int], cp: int,
                               below: int, key: str) -> Iterator[int]:
        """Node counts under `below`, largest first, on which some layout splits the global batch
        (micro-batch 1 always divides, so DP dividing the batch is enough)."""
        products = {tp * pp * cp for tp in tps for pp in ([st.pp] if st.pp else _divisors(shapes[0].num_layers))
                    if all(s.num_layers % pp == 0 for s in shapes)}
        if self.recipe.scaling.policy == "fixed":  # DP must divide the batch: enumerate its divisors
            gbs = st.global_batch_size
            counts = {dp * p // gpn for dp in _divisors(gbs) for p in products
                      if (dp * p) % gpn == 0 and 0 < dp * p // gpn < below}
            yield from sorted(counts, reverse=True)
            return
        for nodes in range(below - 1, max(0, below - 1 - 4 * MAX_FALLBACK_NODE_COUNTS), -1):
            world = nodes * gpn
            gbs, _ = self._scaled_batch(st, world, key)
            if any(world % p == 0 and gbs % (world // p) == 0 for p in products):
                yield nodes

    def _fewer_nodes_note(self, sp: StagePlan, st: Any, full: _Search, used: _Search, shapes: list[mm.Shape], tps: list[int],
                          gpn: int, seq: int, key: str) -> str:
        """Why the stage leaves nodes idle, and which global batch sizes would use them all."""
        if not full.divisible:
            why = (f"global_batch_size={full.gbs} does not split over {full.world} GPUs (DP ∈ {list(full.dps)}, "
                   f"micro_batch_size ≤ {st.micro_batch_size})")
        else:
            why = f"no layout of {full.world} GPUs fits ({_gib(full.best_miss[0])} GiB at {full.best_miss[1]})"
        note = f"; on {used.nodes} of {full.nodes} nodes: {why}"
        if self.recipe.scaling.policy != "fixed":
            return note
        units: set[int] = set()  # micro_batch_size × DP of the layouts that fit on every node
        for tp in tps:
            for pp in self._pp_candidates(st, shapes, full.world, tp, st.cp, key):
                dp = full.world // (tp * pp * st.cp)
                mbs = st.micro_batch_size
                while mbs >= 1:
                    accum = max(1, full.gbs // (mbs * dp))
                    if self._layout_memory(sp, st, shapes, tp, pp, dp, mbs, seq,
                                           accum)[1].total <= self.usable:
                        units.add(mbs * dp)
                    mbs //= 2
        steps = {math.lcm(unit, st.micro_batch_size) for unit in units}  # the recipe's GBS % MBS rule too
        below = [full.gbs // step * step for step in steps if full.gbs // step]
        above = [(full.gbs // step + 1) * step for step in steps]
        nearby = ([max(below)] if below else []) + ([min(above)] if above else [])
        if nearby:
            note += f"; global_batch_size {' or '.join(map(str, nearby))} would use every node"
        return note

    def _fill_training(self, sp: StagePlan, st: Any, nodes: int, gpn: int, lay: mm.Layout, gbs: int,
                       lr: float, est: mm.MemoryEstimate, tried: list[str], label: str) -> None:
        steps = st.steps
        if st.tokens:
            steps = math.ceil(st.tokens / (gbs * lay.seq_length))
        tokens = steps * gbs * lay.seq_length
        sp.nodes, sp.gpus_per_node = nodes, gpn
        sp.tp, sp.pp, sp.cp, sp.dp = lay.tp, lay.pp, lay.cp, lay.dp
        sp.sequence_parallel = lay.sequence_parallel
        sp.micro_batch_size, sp.global_batch_size, sp.grad_accum = lay.micro_batch_size, gbs, lay.grad_accum
        sp.steps, sp.seq_length, sp.tokens = steps, lay.seq_length, tokens
        sp.lr, sp.min_lr = lr, st.min_lr * (lr / st.lr if st.lr else 1.0)
        sp.est_memory_gib = _gib(est.total)
        sp.gpu_memory_gib = self.gpu_gib
        sp.memory_breakdown = est.gib()
        sp.requeue = True
        sp.stall_timeout_s = self.profile.stall_timeout_s
        self._training_time(sp, st, lay, gbs, steps)
        reason = f"{label}: {sp.est_memory_gib} of {self.gpu_gib:g} GiB"
        if tried:
            misses = [tried[0]] if len(tried) == 1 else [tried[0], tried[-1]]
            reason += f"; {' and '.join(misses)} of {_gib(self.usable)} usable"
        elif st.tp:
            reason += " (TP from the recipe)"
        sp.why = reason + f"; DP={lay.dp}, {lay.grad_accum} accumulation step(s)"

    def _training_time(self, sp: StagePlan, st: Any, lay: mm.Layout, gbs: int, steps: int) -> None:
        """Startup + steps × (FLOPs at the achievable rate, with the pipeline bubble, + fixed per-step
        costs) + validation + checkpoint saves (written in parallel by the nodes)."""
        teacher = teacher_shape(self.recipe)
        distill = sp.kind == "distill"
        shape = student_shape(self.recipe, sp.pruning) if distill else teacher
        flops = mm.flops_per_token(shape, lay.seq_length)
        if distill:
            flops += mm.forward_flops_per_token(teacher, lay.seq_length)
        world = sp.nodes * sp.gpus_per_node
        bubble = 1 + (lay.pp - 1) / lay.grad_accum
        compute_s = gbs * lay.seq_length * flops / (world * self.tflops * 1e12) * bubble
        micro_batches = lay.grad_accum * (2 if distill else 1)  # distillation also runs the teacher
        step_s = compute_s + STEP_OVERHEAD_S + MICRO_BATCH_OVERHEAD_S * micro_batches
        val_s = (steps // st.val_check_interval) * st.limit_val_batches * (
            compute_s / 3 + MICRO_BATCH_OVERHEAD_S * micro_batches)
        saves = math.ceil(steps / st.ckpt_every_n_steps)
        save_s = saves * shape.total_params() * CHECKPOINT_BYTES_PER_PARAM / (HOST_BYTES_PER_SECOND * sp.nodes)
        loaded = shape.total_params() + (teacher.total_params() if distill else 0)
        sp.est_startup_s = round(self._startup_s(True, loaded, DISTILL_SETUP_S if distill else 0.0), 1)
        sp.est_step_s = step_s
        sp.est_hours = (sp.est_startup_s + steps * step_s + val_s + save_s) / 3600

    def _scaled_batch(self, st: Any, world: int, key: str) -> tuple[int, float]:
        scaling = self.recipe.scaling
        if scaling.policy == "fixed":
            return st.global_batch_size, st.lr
        factor = world / scaling.reference_gpus
        gbs = max(st.micro_batch_size, round(st.global_batch_size * factor))
        ratio = gbs / st.global_batch_size
        lr = {"none": st.lr, "linear": st.lr * ratio, "sqrt": st.lr * math.sqrt(ratio)}[scaling.lr_rule]
        return gbs, lr

    def _tp_candidates(self, st: Any, shapes: list[mm.Shape], gpn: int, key: str) -> list[int]:
        def ok(tp: int) -> str | None:
            if tp > gpn:
                return f"tp={tp} exceeds the profile's gpus_per_node={gpn} (TP stays inside one node)"
            if gpn % tp:
                return f"tp={tp} does not divide gpus_per_node={gpn}"
            for shape in shapes:
                if shape.num_attention_heads % tp or shape.num_query_groups % tp:
                    return (f"tp={tp} does not divide the attention heads ({shape.num_attention_heads}) and "
                            f"query groups ({shape.num_query_groups})")
            return None

        if st.tp:
            problem = ok(st.tp)
            if problem:
                raise self.recipe.error(f"{key}.tp", problem)
            return [st.tp]
        candidates = [tp for tp in _divisors(gpn) if ok(tp) is None]
        if not candidates:  # only tp=1 always divides; reaching here means gpn < 1
            raise self.recipe.error(f"{key}.tp", "no tensor-parallel size is valid")
        return candidates

    def _pp_candidates(self, st: Any, shapes: list[mm.Shape], world: int, tp: int, cp: int,
                       key: str) -> list[int]:
        def ok(pp: int) -> str | None:
            if world % (tp * pp * cp):
                return f"TP·PP·CP = {tp}·{pp}·{cp} does not divide the {world} GPUs"
            for shape in shapes:
                if shape.num_layers % pp:
                    return f"pp={pp} does not divide the {shape.num_layers} layers"
            return None

        if st.pp:
            problem = ok(st.pp)
            if problem:
                raise self.recipe.error(f"{key}.pp", problem)
            return [st.pp]
        if world % (tp * cp):
            raise self.recipe.error(f"{key}.cp", f"cp={cp} does not divide the {world} GPUs at tp={tp}")
        return [pp for pp in _divisors(shapes[0].num_layers) if ok(pp) is None]

    def _plan_prune(self, sp: StagePlan, st: Any) -> None:
        key = "stages.prune"
        gpn = self._need_gpus(key)
        shape = teacher_shape(self.recipe)
        seq = st.seq_length or self.recipe.data.seq_length
        tutorial = self.recipe.layout == "tutorial"
        if tutorial:
            self._tutorial_gpus(key)
            self._tutorial_conflicts(st, key, {"pp": TUTORIAL_PRUNE_PP})
            if shape.num_layers % TUTORIAL_PRUNE_PP:
                raise self.recipe.error("layout", f"the tutorial's layout prunes at PP={TUTORIAL_PRUNE_PP}, which "
                                        f"does not divide the {shape.num_layers} layers; use layout: planned")
            pp = TUTORIAL_PRUNE_PP
        elif st.pp:
            if st.pp > gpn:
                raise self.recipe.error(f"{key}.pp", f"pp={st.pp} exceeds gpus_per_node={gpn} (pruning runs on one node)")
            if shape.num_layers % st.pp:
                raise self.recipe.error(f"{key}.pp", f"pp={st.pp} does not divide the {shape.num_layers} layers")
            pp = st.pp
        else:
            pp = max(d for d in _divisors(shape.num_layers) if d <= gpn)
        est = mm.inference_memory(shape, pp, st.micro_batch_size, seq, self.profile.attention)
        if est.total > self.usable:
            raise self.recipe.error("layout" if tutorial else key, f"pruning needs {_gib(est.total)} GiB per GPU at "
                                    f"PP={pp} (TP=1), more than {_gib(self.usable)} usable of {self.gpu_gib:g}"
                                    + ("; use layout: planned" if tutorial else ""))
        spec = self.recipe.pruning[sp.pruning]
        calibrates = spec.drop_layers is None
        sp.nodes, sp.gpus_per_node, sp.tp, sp.pp = 1, pp, 1, pp
        sp.micro_batch_size = sp.global_batch_size = st.micro_batch_size
        sp.grad_accum = 1
        sp.seq_length = seq
        sp.steps = st.num_train_samples // st.micro_batch_size if calibrates else 0
        sp.tokens = sp.steps * st.micro_batch_size * seq
        sp.est_memory_gib, sp.gpu_memory_gib, sp.memory_breakdown = _gib(est.total), self.gpu_gib, est.gib()
        # A calibration batch is one forward pass through every pipeline stage in turn.
        sp.est_step_s = (st.micro_batch_size * seq * mm.forward_flops_per_token(shape, seq) / (self.tflops * 1e12)
                         + MICRO_BATCH_OVERHEAD_S * pp)
        saved = student_shape(self.recipe, sp.pruning).total_params() * mm.WEIGHT_BYTES / HOST_BYTES_PER_SECOND
        sp.est_startup_s = round(self._startup_s(True, shape.total_params()) + saved, 1)
        sp.est_hours = (sp.est_startup_s + sp.steps * sp.est_step_s) / 3600
        what = "drop layers " + _ranges(spec.drop_layers) if not calibrates else ", ".join(
            f"{k.removeprefix('target_')}={v}" for k, v in spec.targets().items())
        sp.why = (("tutorial layout " if tutorial else "") + f"TP=1 PP={pp}: pruning needs TP=1; {what}"
                  + (f"; {st.num_train_samples} calibration samples at batch {st.micro_batch_size}" if calibrates
                     else "; no calibration"))

    def _plan_report(self, sp: StagePlan, st: Any) -> None:
        """Validation of every model on the same batches as the trainers: data-parallel forward passes
        over one node, TP=1, the smallest PP that fits the teacher."""
        if self.profile.gpus_per_node == 0:
            return self._plan_cpu(sp, st)
        gpn = self.profile.gpus_per_node
        shape = teacher_shape(self.recipe)
        ft = self.recipe.settings("finetune")
        seq = ft.seq_length or self.recipe.data.seq_length
        for pp in (d for d in _divisors(shape.num_layers) if d <= gpn and gpn % d == 0):
            est = mm.inference_memory(shape, pp, 1, seq, self.profile.attention)
            if est.total <= self.usable:
                break
        else:
            raise self.recipe.error("stages.report", f"evaluating the teacher needs {_gib(est.total)} GiB per GPU "
                                    f"even at PP={pp}, more than {_gib(self.usable)} usable")
        dp = gpn // pp
        gbs = ft.global_batch_size if ft.global_batch_size % dp == 0 else dp
        models = 2 + 2 * len(self.recipe.students)
        tokens = models * ft.limit_val_batches * gbs * seq
        sp.nodes, sp.gpus_per_node, sp.tp, sp.pp, sp.dp = 1, gpn, 1, pp, dp
        sp.micro_batch_size, sp.global_batch_size, sp.grad_accum = 1, gbs, gbs // dp
        sp.seq_length, sp.tokens = seq, tokens
        sp.est_memory_gib, sp.gpu_memory_gib, sp.memory_breakdown = _gib(est.total), self.gpu_gib, est.gib()
        loaded = 2 * shape.total_params() + 2 * sum(student_shape(self.recipe, s).total_params()
                                                    for s in self.recipe.students)
        sp.est_startup_s = round(self._startup_s(True, loaded), 1)
        batches = models * ft.limit_val_batches * (gbs // dp)
        sp.est_hours = (sp.est_startup_s + tokens * mm.forward_flops_per_token(shape, seq) / (gpn * self.tflops * 1e12)
                        + batches * MICRO_BATCH_OVERHEAD_S) / 3600
        sp.why = (f"TP=1 PP={pp} DP={dp}: validation loss of {models} models on {ft.limit_val_batches} batches of "
                  f"{gbs}, then plots from the trainers' TensorBoard logs")

    def _plan_conversion(self, sp: StagePlan, st: Any) -> None:
        shape = teacher_shape(self.recipe)
        gpus = getattr(st, "gpus", 1) if self.profile.gpus_per_node else 0
        sp.gpus_per_node = gpus
        weights = shape.total_params() * mm.WEIGHT_BYTES
        sp.est_memory_gib = _gib(weights + mm.FIXED_OVERHEAD_GIB * mm.GIB) if gpus else None
        sp.gpu_memory_gib = self.gpu_gib if gpus else None
        source = self.recipe.model.source
        if sp.kind == "import":  # read the Hugging Face weights and write NeMo's (random: write only)
            moved = weights * (1 if source == "random" else 2)
        else:  # each student: read NeMo's, write Hugging Face's
            moved = 2 * mm.WEIGHT_BYTES * sum(student_shape(self.recipe, s).total_params() for s in self.recipe.students)
        sp.est_startup_s = round(self._startup_s(True) + moved / HOST_BYTES_PER_SECOND, 1)
        sp.est_hours = sp.est_startup_s / 3600
        sp.why = (f"convert {_gib(weights)} GiB of bf16 weights from {source}" if sp.kind == "import"
                  else "convert each distilled student to Hugging Face format")
        if source == "random" and sp.kind == "import":
            sp.why = "build a randomly initialised checkpoint of the model shape"

    def _plan_cpu(self, sp: StagePlan, st: Any) -> None:
        if sp.kind == "data":
            workers = self.recipe.data.workers
            sp.cpus_per_task = min(workers, self.profile.cpus_per_node) if self.profile.cpus_per_node else workers
            sp.seq_length = self.recipe.data.seq_length
            builtin = self.recipe.data.source.builtin is not None
            sp.est_startup_s = round(self._startup_s(False, extra_s=BUILTIN_DATA_S - PROCESS_START_S) if builtin
                                     else self._startup_s(False) + DATA_PREP_HOURS * 3600, 1)
            sp.why = f"CPU only: tokenise with {self.recipe.data.workers} workers into Megatron .bin/.idx"
        else:
            sp.est_startup_s = round(self._startup_s(True), 1)
            sp.why = "CPU only: plots and tables from the trainers' TensorBoard logs"
        sp.est_hours = sp.est_startup_s / 3600

    def _partition(self, sp: StagePlan, st: Any) -> str | None:
        if not self.executor.uses_partitions:
            return None
        if st.partition:
            return st.partition
        if sp.gpus_per_node == 0:
            return self.profile.cpu_partition or self.profile.partition
        return self.profile.partition

    def _time_limit(self, sp: StagePlan, st: Any) -> str:
        """The stage's limit, refused when it is zero or too short for the pre-limit checkpoint signal;
        errors name the key the limit came from."""
        requested = st.time or self.profile.default_time
        minutes = parse_time_minutes(requested)
        cap = self.profile.time_limit_minutes(sp.partition)
        source = self.recipe.error if st.time else None
        key = f"stages.{sp.kind}.time" if st.time else "default_time"
        if cap is not None and minutes > cap:
            if st.time:
                raise self.recipe.error(f"stages.{sp.kind}.time", f"time {st.time} exceeds the {sp.partition} partition's limit "
                                f"{self.profile.timeouts[sp.partition or '']}")
            minutes, source, key = cap, None, f"timeouts.{sp.partition}"
        problem = None
        lead = self.profile.signal_lead_s
        if minutes < 1:
            problem = f"a time limit of {requested!r} leaves the {sp.name} stage no time (Slurm reads 0 as no limit): give HH:MM:SS"
        elif sp.requeue and self.executor.signals_before_limit and minutes * 60 < MIN_LIMIT_PER_SIGNAL_LEAD * lead:
            need = format_minutes(math.ceil(MIN_LIMIT_PER_SIGNAL_LEAD * lead / 60))
            problem = (f"the {sp.name} stage's limit {format_minutes(minutes)} is under {MIN_LIMIT_PER_SIGNAL_LEAD} × "
                       f"signal_lead_s={lead} s, so its checkpoint signal would fire before any work; give at least "
                       f"{need} or lower signal_lead_s")
        if problem:
            if source is not None:
                raise source(key, problem)
            raise UserError(problem, file=self.profile.source, key=key)
        return format_minutes(minutes)


def _ranges(values: list[int]) -> str:
    """`2-3,7` for [2, 3, 7]; empty for []."""
    out: list[list[int]] = []
    for value in sorted(values):
        if out and out[-1][1] == value - 1:
            out[-1][1] = value
        else:
            out.append([value, value])
    return ",".join(f"{a}-{b}" if a != b else str(a) for a, b in out)


def make_plan(profile: ClusterProfile, recipe: Recipe) -> Plan:
    return Planner(profile, recipe).plan()
