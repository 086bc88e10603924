"""The planner: turn a profile and a recipe into one resource and parallelism plan per stage.

Rules (from the tutorial and Megatron): world = nodes × GPUs = TP·PP·CP·DP; TP stays inside a node
and divides the heads and query groups; PP divides the layers; GBS is a multiple of MBS·DP. The
smallest TP, then PP, whose memory estimate fits is chosen; the recipe's micro-batch is the largest
tried. Pruning runs at TP=1 with PP over one node's GPUs; the report evaluates every model on one node
(TP=1, data-parallel); data prep is CPU-only.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field
from typing import Any, Optional

from . import memory as mm
from .errors import UserError
from .profile import ClusterProfile, format_minutes, parse_time_minutes
from .recipe import GPU_TRAINING_KINDS, Recipe, StageNode, stage_graph

# Keep this much of each GPU free of the estimate: the allocator, NCCL growth and estimate error.
USABLE_FRACTION = 0.9
STARTUP_HOURS = {"data": 0.05, "import": 0.1, "finetune": 0.1, "prune": 0.1, "distill": 0.15,
                 "report": 0.02, "export": 0.1}
DATA_PREP_HOURS = 0.25  # tokenising WikiText-103 (~120M tokens) on 32 workers; not modelled
HOST_BYTES_PER_SECOND = 1e9  # checkpoint conversion reads and writes about this fast
CONTINUATION_KINDS = GPU_TRAINING_KINDS


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

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class Plan:
    recipe: str
    profile: str
    executor: str
    stages: list[StagePlan]

    def stage(self, name: str) -> StagePlan:
        return next(s for s in self.stages if s.name == name)

    def critical_path_hours(self) -> float:
        finish: dict[str, float] = {}
        for s in self.stages:  # already topologically ordered
            finish[s.name] = s.est_hours + max((finish[d] for d in s.depends_on), default=0.0)
        return max(finish.values(), default=0.0)

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
    return [d for d in range(1, n + 1) if n % d == 0]


def _gib(x: float) -> float:
    return round(x / mm.GIB, 1)


class Planner:
    def __init__(self, profile: ClusterProfile, recipe: Recipe):
        self.profile = profile
        self.recipe = recipe
        self.gpu_gib = profile.gpu.memory_gib
        self.usable = profile.gpu.memory_gib * USABLE_FRACTION * mm.GIB
        self.tflops = mm.achievable_tflops(profile.gpu.model, profile.gpu.achievable_tflops, profile.attention)

    def plan(self) -> Plan:
        stages = [self._plan_stage(node) for node in stage_graph(self.recipe)]
        return Plan(recipe=self.recipe.name, profile=self.profile.source, executor=self.profile.executor,
                    stages=stages)

    def plan_stage(self, name: str) -> StagePlan:
        """One stage alone, e.g. for a benchmark of a GPU that could not hold the other stages."""
        return self._plan_stage(next(n for n in stage_graph(self.recipe) if n.name == name))

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

    def _need_gpus(self, key: str) -> int:
        if self.profile.gpus_per_node < 1:
            raise UserError(f"the {key.split('.')[1]} stage needs GPUs but the profile has gpus_per_node=0",
                            file=self.profile.source, key="gpus_per_node")
        return self.profile.gpus_per_node

    def _plan_training(self, sp: StagePlan, st: Any) -> None:
        key = f"stages.{sp.kind}"
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
        world = nodes * gpn
        seq = st.seq_length or recipe.data.seq_length
        teacher = teacher_shape(recipe)
        shape = student_shape(recipe, sp.pruning) if sp.kind == "distill" else teacher
        shapes = [shape, teacher] if sp.kind == "distill" else [shape]
        gbs, lr = self._scaled_batch(st, world, key)
        tps = self._tp_candidates(st, shapes, gpn, key)
        cp = st.cp
        if seq % (2 * cp) and cp > 1:
            raise self.recipe.error(f"{key}.cp", f"cp={cp} needs seq_length divisible by {2 * cp}, got {seq}")
        tried: list[str] = []
        divisible = False
        best_miss: tuple[float, str] | None = None
        for tp in tps:
            for pp in self._pp_candidates(st, shapes, world, tp, cp, key):
                dp = world // (tp * pp * cp)
                mbs = st.micro_batch_size
                while mbs >= 1:
                    if gbs % (mbs * dp) == 0:
                        divisible = True
                        accum = gbs // (mbs * dp)
                        sequence_parallel = st.sequence_parallel if st.sequence_parallel is not None else tp > 1
                        lay = mm.Layout(tp, pp, cp, dp, mbs, seq, accum, sequence_parallel, profile.attention,
                                        st.recompute)
                        est = mm.training_memory(shape, lay, teacher if sp.kind == "distill" else None)
                        label = f"TP={tp} PP={pp} MBS={mbs}"
                        if est.total <= self.usable:
                            self._fill_training(sp, st, nodes, gpn, lay, gbs, lr, est, tried, label)
                            return
                        tried.append(f"{label} needs {_gib(est.total)} GiB")
                        if best_miss is None or est.total < best_miss[0]:
                            best_miss = (est.total, label)
                    mbs = mbs // 2 if mbs > 1 else 0
        if not divisible:
            dps = sorted({world // (t * p * cp) for t in tps for p in self._pp_candidates(st, shapes, world, t, cp, key)})
            raise self.recipe.error(f"{key}.global_batch_size",
                                    f"global_batch_size={gbs} is not divisible by micro_batch_size×DP for any layout "
                                    f"of {world} GPUs (DP ∈ {dps}, micro_batch_size ≤ {st.micro_batch_size})")
        assert best_miss is not None
        raise self.recipe.error(key, f"no layout fits in {self.gpu_gib:g} GiB GPUs ({_gib(self.usable)} GiB usable): "
                                f"smallest estimate {_gib(best_miss[0])} GiB at {best_miss[1]} on {world} GPUs; add "
                                f"nodes, shorten seq_length, or set recompute: full")

    def _fill_training(self, sp: StagePlan, st: Any, nodes: int, gpn: int, lay: mm.Layout, gbs: int,
                       lr: float, est: mm.MemoryEstimate, tried: list[str], label: str) -> None:
        recipe = self.recipe
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
        shape = student_shape(recipe, sp.pruning) if sp.kind == "distill" else teacher_shape(recipe)
        flops = mm.flops_per_token(shape, lay.seq_length)
        if sp.kind == "distill":
            flops += mm.forward_flops_per_token(teacher_shape(recipe), lay.seq_length)
        val_tokens = (steps // st.val_check_interval) * st.limit_val_batches * gbs * lay.seq_length
        total_flops = tokens * flops + val_tokens * flops / 3
        sp.est_hours = total_flops / (nodes * gpn * self.tflops * 1e12) / 3600 + STARTUP_HOURS[sp.kind]
        reason = f"{label}: {sp.est_memory_gib} of {self.gpu_gib:g} GiB"
        if tried:
            misses = [tried[0]] if len(tried) == 1 else [tried[0], tried[-1]]
            reason += f"; {' and '.join(misses)} of {_gib(self.usable)} usable"
        elif st.tp:
            reason += " (TP from the recipe)"
        sp.why = reason + f"; DP={lay.dp}, {lay.grad_accum} accumulation step(s)"

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
        if st.pp:
            if st.pp > gpn:
                raise self.recipe.error(f"{key}.pp", f"pp={st.pp} exceeds gpus_per_node={gpn} (pruning runs on one node)")
            if shape.num_layers % st.pp:
                raise self.recipe.error(f"{key}.pp", f"pp={st.pp} does not divide the {shape.num_layers} layers")
            pp = st.pp
        else:
            pp = max(d for d in _divisors(shape.num_layers) if d <= gpn)
        est = mm.inference_memory(shape, pp, st.micro_batch_size, seq, self.profile.attention)
        if est.total > self.usable:
            raise self.recipe.error(key, f"pruning needs {_gib(est.total)} GiB per GPU at PP={pp} (TP=1), more than "
                            f"{_gib(self.usable)} usable of {self.gpu_gib:g}")
        spec = self.recipe.pruning[sp.pruning]
        calibrates = spec.drop_layers is None
        sp.nodes, sp.gpus_per_node, sp.tp, sp.pp = 1, pp, 1, pp
        sp.micro_batch_size = sp.global_batch_size = st.micro_batch_size
        sp.grad_accum = 1
        sp.seq_length = seq
        sp.steps = st.num_train_samples // st.micro_batch_size if calibrates else 0
        sp.tokens = sp.steps * st.micro_batch_size * seq
        sp.est_memory_gib, sp.gpu_memory_gib, sp.memory_breakdown = _gib(est.total), self.gpu_gib, est.gib()
        fwd = mm.forward_flops_per_token(shape, seq)
        sp.est_hours = sp.tokens * fwd / (pp * self.tflops * 1e12) / 3600 * pp + STARTUP_HOURS["prune"]
        what = "drop layers " + _ranges(spec.drop_layers) if not calibrates else ", ".join(
            f"{k.removeprefix('target_')}={v}" for k, v in spec.targets().items())
        sp.why = (f"TP=1 PP={pp}: pruning needs TP=1; {what}"
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
        sp.est_hours = tokens * mm.forward_flops_per_token(shape, seq) / (gpn * self.tflops * 1e12) / 3600 \
            + STARTUP_HOURS["report"] * models
        sp.why = (f"TP=1 PP={pp} DP={dp}: validation loss of {models} models on {ft.limit_val_batches} batches of "
                  f"{gbs}, then plots from the trainers' TensorBoard logs")

    def _plan_conversion(self, sp: StagePlan, st: Any) -> None:
        shape = teacher_shape(self.recipe)
        gpus = getattr(st, "gpus", 1) if self.profile.gpus_per_node else 0
        sp.gpus_per_node = gpus
        weights = shape.total_params() * mm.WEIGHT_BYTES
        sp.est_memory_gib = _gib(weights + mm.FIXED_OVERHEAD_GIB * mm.GIB) if gpus else None
        sp.gpu_memory_gib = self.gpu_gib if gpus else None
        sp.est_hours = 2 * weights / HOST_BYTES_PER_SECOND / 3600 + STARTUP_HOURS[sp.kind]
        source = self.recipe.model.source
        sp.why = (f"convert {_gib(weights)} GiB of bf16 weights from {source}" if sp.kind == "import"
                  else "convert each distilled student to Hugging Face format")
        if source == "random" and sp.kind == "import":
            sp.why = "build a randomly initialised checkpoint of the model shape"

    def _plan_cpu(self, sp: StagePlan, st: Any) -> None:
        if sp.kind == "data":
            workers = self.recipe.data.workers
            sp.cpus_per_task = min(workers, self.profile.cpus_per_node) if self.profile.cpus_per_node else workers
            sp.seq_length = self.recipe.data.seq_length
            sp.est_hours = DATA_PREP_HOURS if self.recipe.data.source.hf_dataset else STARTUP_HOURS["data"]
            sp.why = f"CPU only: tokenise with {self.recipe.data.workers} workers into Megatron .bin/.idx"
        else:
            sp.est_hours = STARTUP_HOURS[sp.kind]
            sp.why = "CPU only: plots and tables from the trainers' TensorBoard logs"

    def _partition(self, sp: StagePlan, st: Any) -> str | None:
        if self.profile.executor == "local":
            return None
        if st.partition:
            return st.partition
        if sp.gpus_per_node == 0:
            return self.profile.cpu_partition or self.profile.partition
        return self.profile.partition

    def _time_limit(self, sp: StagePlan, st: Any) -> str:
        requested = st.time or self.profile.default_time
        minutes = parse_time_minutes(requested)
        cap = self.profile.time_limit_minutes(sp.partition)
        if cap is not None and minutes > cap:
            if st.time:
                raise self.recipe.error(f"stages.{sp.kind}.time", f"time {st.time} exceeds the {sp.partition} partition's limit "
                                f"{self.profile.timeouts[sp.partition or '']}")
            minutes = cap
        return format_minutes(minutes)


def _ranges(values: list[int]) -> str:
    values = sorted(values)
    out, start = [], values[0]
    for prev, cur in zip(values, values[1:] + [None]):
        if cur != prev + 1 if cur is not None else True:
            out.append(f"{start}-{prev}" if prev != start else str(start))
            start = cur
    return ",".join(out)


def make_plan(profile: ClusterProfile, recipe: Recipe) -> Plan:
    return Planner(profile, recipe).plan()
