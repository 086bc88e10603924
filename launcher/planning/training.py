"""The planner's training layouts: the smallest TP, then PP, then the largest micro-batch whose memory fits,
on every node a stage may take (the profile's, or --nodes / max_nodes) or the largest node count under that
which splits the global batch; or the NeMo 2 tutorial's own layout (`layout: tutorial`). Mixed into the
Planner (planner.py)."""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Iterator, Optional

from ..config.recipe import Recipe
from . import memory as mm
from . import timemodel as tm
from .plan import StagePlan
from .shapes import divisors, gib, show, stage_shape, teacher_shape


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


# Node counts below the profile's tried when its GPUs do not divide the batch.
MAX_FALLBACK_NODE_COUNTS = 32

# `layout: tutorial`: the NeMo 2 tutorial's own layouts (tutorials/llm/llama/pruning-distillation:
# 02_teacher_finetuning, 03_pruning, 04_distillation), on one node of 8 GPUs whatever the profile's node
# count: fine-tune and both distillations TP=8 PP=1 CP=1 with sequence parallelism (DP=1, so GBS 128 at
# MBS 4 is 32 accumulation steps); depth and width pruning alike TP=1 PP=8 (the notebook's common settings).
TUTORIAL_GPUS = 8
TUTORIAL_TRAIN = {"tp": 8, "pp": 1, "cp": 1, "nodes": 1, "gpus_per_node": TUTORIAL_GPUS, "sequence_parallel": True}
TUTORIAL_PRUNE_PP = 8


class TrainingLayouts:
    """Layout search and time of the training kinds; needs the Planner's recipe, profile, usable memory and rate."""

    recipe: Recipe
    profile: Any
    usable: float
    gpu_gib: float
    tflops: float

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
        nodes = st.nodes or profile.node_cap
        if nodes > profile.nodes:
            raise self.recipe.error(f"{key}.nodes", f"nodes={nodes} exceeds the profile's nodes={profile.nodes}")
        if nodes > profile.node_cap:
            raise self.recipe.error(f"{key}.nodes", f"nodes={nodes} exceeds the cap of {profile.node_cap} "
                                    f"(--nodes or the profile's max_nodes)")
        seq = st.seq_length or recipe.data.seq_length
        shapes = self._shapes(sp)
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
            if not st.nodes and profile.node_cap < profile.nodes:
                sp.why += f"; at most {profile.node_cap} of the profile's {profile.nodes} nodes (--nodes or max_nodes)"
            return
        if not full.divisible:
            raise self.recipe.error(f"{key}.global_batch_size",
                                    f"global_batch_size={full.gbs} is not divisible by micro_batch_size×DP for any "
                                    f"layout of {full.world} GPUs or fewer nodes (DP ∈ {list(full.dps)}, "
                                    f"micro_batch_size ≤ {st.micro_batch_size})")
        assert full.best_miss is not None
        raise self.recipe.error(key, f"no layout fits in {self.gpu_gib:g} GiB GPUs ({gib(self.usable)} GiB usable): "
                                f"smallest estimate {gib(full.best_miss[0])} GiB at {full.best_miss[1]} on "
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
                raise self.recipe.error(f"{key}.{name}", f"{name}={show(given)} conflicts with layout: tutorial "
                                        f"({name}={value} there); drop it or use layout: planned")

    def _plan_tutorial_training(self, sp: StagePlan, st: Any) -> None:
        """The tutorial's TP=8 PP=1 SP layout on one node, at the recipe's micro-batch (the tutorial's 4);
        refused where it cannot run as planned: heads or groups not divisible by 8, or over the memory."""
        key = f"stages.{sp.kind}"
        self._tutorial_gpus(key)
        self._tutorial_conflicts(st, key, TUTORIAL_TRAIN)
        t = TUTORIAL_TRAIN
        shapes = self._shapes(sp)
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
        est = mm.training_memory(shapes[0], lay, shapes[1] if len(shapes) > 1 else None)
        label = f"tutorial layout TP={t['tp']} PP={t['pp']} SP MBS={mbs}"
        if est.total > self.usable:
            raise self.recipe.error("layout", f"the tutorial's layout needs an estimated {gib(est.total)} GiB per "
                                    f"GPU for the {sp.name} stage at TP={t['tp']} PP={t['pp']} MBS={mbs}, more than "
                                    f"{gib(self.usable)} usable of the {self.gpu_gib:g} GiB card; use layout: planned")
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
                        tried.append(f"{label} needs {gib(est.total)} GiB")
                        if result.best_miss is None or est.total < result.best_miss[0]:
                            result.best_miss = (est.total, label)
                    mbs = mbs // 2 if mbs > 1 else 0
        result.dps = tuple(sorted(dps))
        return result

    def _layout_memory(self, sp: StagePlan, st: Any, shapes: list[mm.Shape], tp: int, pp: int, dp: int, mbs: int,
                       seq: int, accum: int) -> tuple[mm.Layout, mm.MemoryEstimate]:
        sequence_parallel = st.sequence_parallel if st.sequence_parallel is not None else tp > 1
        lay = mm.Layout(tp, pp, st.cp, dp, mbs, seq, accum, sequence_parallel, self.profile.attention, st.recompute)
        return lay, mm.training_memory(shapes[0], lay, shapes[1] if len(shapes) > 1 else None)

    def _divisible_node_counts(self, st: Any, shapes: list[mm.Shape], gpn: int, tps: list[int], cp: int,
                               below: int, key: str) -> Iterator[int]:
        """Node counts under `below`, largest first, on which some layout splits the global batch
        (micro-batch 1 always divides, so DP dividing the batch is enough)."""
        products = {tp * pp * cp for tp in tps for pp in ([st.pp] if st.pp else divisors(shapes[0].num_layers))
                    if all(s.num_layers % pp == 0 for s in shapes)}
        if self.recipe.scaling.policy == "fixed":  # DP must divide the batch: enumerate its divisors
            gbs = st.global_batch_size
            counts = {dp * p // gpn for dp in divisors(gbs) for p in products
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
            why = f"no layout of {full.world} GPUs fits ({gib(full.best_miss[0])} GiB at {full.best_miss[1]})"
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
        sp.est_memory_gib = gib(est.total)
        sp.gpu_memory_gib = self.gpu_gib
        sp.memory_breakdown = est.gib()
        sp.recompute = st.recompute
        self._training_time(sp, st, lay, gbs, steps)
        reason = f"{label}: {sp.est_memory_gib} of {self.gpu_gib:g} GiB"
        if tried:
            misses = [tried[0]] if len(tried) == 1 else [tried[0], tried[-1]]
            reason += f"; {' and '.join(misses)} of {gib(self.usable)} usable"
        elif st.tp:
            reason += " (TP from the recipe)"
        sp.why = reason + f"; DP={lay.dp}, {lay.grad_accum} accumulation step(s)"

    def _training_time(self, sp: StagePlan, st: Any, lay: mm.Layout, gbs: int, steps: int) -> None:
        """Startup + steps × (FLOPs at the achievable rate, with the pipeline bubble, + fixed per-step
        costs) + validation + checkpoint saves (written in parallel by the nodes)."""
        shapes = self._shapes(sp)
        teacher = len(shapes) > 1
        flops = mm.flops_per_token(shapes[0], lay.seq_length)
        if teacher:
            flops += mm.forward_flops_per_token(shapes[1], lay.seq_length)
        step_s, compute_s = tm.training_step_s(flops, lay, gbs, sp.nodes * sp.gpus_per_node, self.tflops, teacher)
        micro_batches = lay.grad_accum * (2 if teacher else 1)
        val_s = tm.validation_s(steps, st.val_check_interval, st.limit_val_batches, compute_s, micro_batches)
        save_s = tm.checkpoint_s(steps, st.ckpt_every_n_steps, shapes[0].total_params(), sp.nodes)
        loaded = sum(shape.total_params() for shape in shapes)
        sp.est_startup_s = round(self._startup_s(True, loaded, tm.TEACHER_SETUP_S if teacher else 0.0), 1)
        sp.est_step_s = step_s
        sp.est_hours = (sp.est_startup_s + steps * step_s + val_s + save_s) / 3600

    def _shapes(self, sp: StagePlan) -> list[mm.Shape]:
        """The stage's own model, then the teacher when it runs beside it (distillation)."""
        kind = sp.stage_kind
        own = stage_shape(self.recipe, kind.student, sp.pruning)
        return [own, teacher_shape(self.recipe)] if kind.teacher_forward else [own]

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
        candidates = [tp for tp in divisors(gpn) if ok(tp) is None]
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
        return [pp for pp in divisors(shapes[0].num_layers) if ok(pp) is None]

