"""The planner: turn a profile and a recipe into one resource and parallelism plan per stage.

Rules (from the tutorial and Megatron): world = nodes × GPUs = TP·PP·CP·DP; TP stays inside a node
and divides the heads and query groups; PP divides the layers; GBS is a multiple of MBS·DP. The
smallest TP, then PP, whose memory estimate fits is chosen; the recipe's micro-batch is the largest
tried (training.py). No stage takes more than the profile's node_cap (max_nodes or --nodes). Pruning
runs at TP=1 with PP over one node's GPUs, or over the fewest nodes that hold it; evaluation runs every
model on one node (TP=1, data-parallel); data prep is CPU-only. Which of these a stage gets is its kind's
`estimate` in the stage-kind table (jobs/contract/kinds.py). A recipe with `layout: tutorial` takes
the NeMo 2 tutorial's own layouts instead, or is refused where they cannot run.

Time: timemodel.py; stages then compete for the profile's GPUs (`Plan.schedule`). Measured stage
times (calibration.py) replace the model for a stage whose key they cover. Each stage's time limit is
its estimate with a margin, capped by its partition (`_time_limit`), unless the recipe gives one.
"""

from __future__ import annotations

import math
from typing import Any, Callable

from jobs.contract import PIPELINE_KINDS, Estimate

from ..config.executors import traits
from ..config.graph import StageNode, sources, stage_graph
from ..config.profile import ClusterProfile
from ..config.recipe import Recipe
from ..config.values import format_minutes, parse_time_minutes
from ..core.errors import UserError
from . import calibration
from . import memory as mm
from . import timemodel as tm
from .plan import Plan, StagePlan
from .shapes import divisors, gib, ranges, show, stage_shape, student_shape, teacher_shape
from .training import TUTORIAL_PRUNE_PP, TrainingLayouts

CPU_PRECISION = "32"
# A profile without GPUs (gpus_per_node: 0) runs its model stages on one node's CPUs, one process each.
CPU_MODEL_ESTIMATES = (Estimate.TRAINING, Estimate.PRUNING, Estimate.EVALUATION)

# Keep this much of each GPU free of the estimate: the allocator, NCCL growth and estimate error.
USABLE_FRACTION = 0.9

# Inputs above these make no sense for a Minitron run and would only make the planner's search slow
# (a loop over layers or nodes) or overflow floats; refused here, whatever the schema allows.
RECIPE_BOUNDS = {
    "model.num_layers": 1024, "model.hidden_size": 131072, "model.ffn_hidden_size": 1048576,
    "model.num_attention_heads": 1024, "model.num_query_groups": 1024, "model.vocab_size": 4194304,
    "data.seq_length": 1048576,
}
# Per estimate model: the stage settings bounded, and their bounds.
SETTING_BOUNDS = {
    Estimate.TRAINING: {"steps": 10 ** 8, "tokens": 1e16, "micro_batch_size": 65536, "global_batch_size": 2 ** 24,
                        "cp": 1024, "tp": 1024, "pp": 1024, "nodes": 16384, "gpus_per_node": 64,
                        "val_check_interval": 10 ** 8, "limit_val_batches": 10 ** 6,
                        "ckpt_every_n_steps": 10 ** 8, "seq_length": 1048576},
    Estimate.PRUNING: {"micro_batch_size": 65536, "num_train_samples": 10 ** 9, "pp": 1024, "seq_length": 1048576},
}
PROFILE_BOUNDS = {"nodes": 16384}
# A requeued stage is told to checkpoint signal_lead_s before its limit; below this multiple of the
# lead the signal would arrive before any real work and the stage would requeue until its budget ends.
MIN_LIMIT_PER_SIGNAL_LEAD = 2
# max_continuations above what the run can use is refused: each continuation holds the stage's GPUs for
# another full time limit, so a budget beyond the estimate's need only lets a stage that stopped making
# progress requeue for days. Allowed: the profile's default budget, or twice the need (the time model
# can be off by that much). Slurm's MaxBatchRequeue does not bound it: it counts launch and node-failure
# requeues, not the script's own `scontrol requeue`.
FREE_CONTINUATIONS = 10
CONTINUATION_MARGIN = 2


class Planner(TrainingLayouts):
    def __init__(self, profile: ClusterProfile, recipe: Recipe):
        self.profile = profile
        self.recipe = recipe
        self.executor = traits(profile.executor)
        gpu = profile.gpu if profile.gpus_per_node else None
        self.gpu_gib = gpu.memory_gib if gpu else 0.0
        self.usable = self.gpu_gib * USABLE_FRACTION * mm.GIB
        self.tflops = (mm.achievable_tflops(gpu.model, gpu.achievable_tflops, profile.attention) if gpu
                       else tm.CPU_TFLOPS)
        self.calibrations = calibration.load()
        self.profile_key = calibration.profile_key(profile)
        self.estimates: dict[Estimate, Callable[[StagePlan, Any], None]] = {
            Estimate.DATA: self._plan_data, Estimate.HF_IMPORT: self._plan_conversion,
            Estimate.TRAINING: self._plan_training, Estimate.PRUNING: self._plan_prune,
            Estimate.EVALUATION: self._plan_evaluation, Estimate.HF_EXPORT: self._plan_conversion,
        }

    def plan(self) -> Plan:
        self._check_bounds()
        stages = [self._plan_stage(node) for node in stage_graph(self.recipe)]
        self._check_continuations(stages)
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
        for kind in PIPELINE_KINDS:
            for name, limit in SETTING_BOUNDS.get(kind.estimate, {}).items():
                values[f"stages.{kind.name}.{name}"] = getattr(r.settings(kind.name), name)
                bounds[f"stages.{kind.name}.{name}"] = limit
        for key, value in values.items():
            if value is not None and not value <= bounds[key]:
                raise r.error(key, f"{show(value)} is above the planner's bound of {show(bounds[key])}")
        for key, limit in PROFILE_BOUNDS.items():
            value = getattr(self.profile, key)
            if not value <= limit:
                raise UserError(f"{show(value)} is above the planner's bound of {show(limit)}",
                                file=self.profile.source, key=key)
        for name, spec in r.pruning.items():
            if spec.drop_layers is not None and not spec.drop_layers:
                raise r.error(f"pruning.{name}.drop_layers", "is empty: list the 1-indexed layers to drop, "
                              "or give target_* sizes instead")

    # -- per stage ---------------------------------------------------------------------------
    def _plan_stage(self, node: StageNode) -> StagePlan:
        kind = node.stage_kind
        settings = self.recipe.settings(node.kind)
        base = StagePlan(name=node.name, kind=node.kind, depends_on=list(node.depends_on),
                         entrypoint=settings.entrypoint or kind.entrypoint, nodes=1, gpus_per_node=0,
                         attention=self.profile.attention, pruning=node.pruning,
                         container=None if self.profile.container == "none" else self.profile.container)
        if not self.profile.gpus_per_node and kind.estimate in CPU_MODEL_ESTIMATES:
            self._plan_on_cpu(base, settings)
        else:
            self.estimates[kind.estimate](base, settings)
        if "engine" in kind.sections and not self.profile.gpus_per_node:
            base.attention = "unfused"  # no GPUs at all: Transformer Engine's kernels need one
            base.cpus_per_task = self.profile.cpus_per_node or None  # a model stage has a node's CPUs
        if "engine" in kind.sections:  # a model stage planned without GPUs runs in full precision on the CPU
            base.precision = (settings.precision or self.recipe.precision) if base.uses_gpus else CPU_PRECISION
        if kind.trains:
            base.requeue = True
            base.stall_timeout_s = self.profile.stall_timeout_s
            base.tracking = self.profile.tracking.for_stages()
        base.partition = self._partition(base, settings)
        self._apply_calibration(base)
        base.est_gpu_hours = round(base.est_hours * base.nodes * base.gpus_per_node, 3)
        base.est_hours = round(base.est_hours, 3)
        self._time_limit(base, settings)
        return base

    def _check_continuations(self, stages: list[StagePlan]) -> None:
        """Refuse a continuation budget above what the run can use (FREE_CONTINUATIONS)."""
        if not self.executor.signals_before_limit:
            return  # without a time-limit signal, continuations are the stall watchdog's alone
        lead = self.profile.signal_lead_s
        needs = {s.name: tm.continuations_needed(s.est_hours, s.est_startup_s, s.time_limit, lead) for s in stages if s.requeue}
        if not needs:
            return
        longest = max(needs, key=lambda name: needs[name])
        allowed = max(FREE_CONTINUATIONS, CONTINUATION_MARGIN * needs[longest])
        budget = self.profile.max_continuations
        if budget > allowed:
            stage = next(s for s in stages if s.name == longest)
            raise self.profile.error("max_continuations", f"{budget} is more than this run can use: by the estimate "
                                     f"its longest training stage, {longest}, needs ~{needs[longest]} of its "
                                     f"{stage.time_limit} limit, so at most {allowed} (more only lets a stalled "
                                     f"stage requeue for days)", f"write max_continuations: {allowed}")

    def _apply_calibration(self, sp: StagePlan) -> None:
        """Measured startup and step times of earlier runs with this stage's key replace the model's."""
        shapes = self._shapes(sp) if sp.stage_kind.estimate == Estimate.TRAINING else [teacher_shape(self.recipe)]
        shape = calibration.shape_key(*shapes)
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
        container_s = self.executor.container_start_s if self.profile.container != "none" else 0.0
        return tm.startup_s(container_s, nemo, load_params, extra_s)

    def _need_gpus(self, key: str) -> int:
        if self.profile.gpus_per_node < 1:
            raise UserError(f"the {key.split('.')[1]} stage needs GPUs but the profile has gpus_per_node=0",
                            file=self.profile.source, key="gpus_per_node")
        return self.profile.gpus_per_node

    def _plan_on_cpu(self, sp: StagePlan, st: Any) -> None:
        """A model stage of a profile without GPUs: one process on one node's CPUs (TP=PP=CP=DP=1), in fp32
        with megatron-core's local spec (`_plan_stage`); a training stage accumulates its whole global batch
        and trains without gradient clipping (megatron-core's clipping needs CUDA tensors). For clusters and
        testbeds without GPUs: a smoke run proves the launcher, Slurm and the stage jobs, not throughput."""
        kind, key = sp.stage_kind, f"stages.{sp.kind}"
        if self.recipe.layout == "tutorial":
            raise self.recipe.error("layout", f"the tutorial's layout runs the {sp.kind} stage on 8 GPUs, but the "
                                    f"profile has gpus_per_node=0; use layout: planned")
        sp.nodes, sp.gpus_per_node = 1, 0
        shape = teacher_shape(self.recipe)
        seq = (getattr(st, "seq_length", None) if kind.estimate != Estimate.EVALUATION else None) \
            or self.recipe.data.seq_length
        if kind.estimate == Estimate.TRAINING:
            gbs, lr = self._scaled_batch(st, 1, key)
            mbs = st.micro_batch_size
            while gbs % mbs:
                mbs //= 2
            steps = math.ceil(st.tokens / (gbs * seq)) if st.tokens else st.steps
            sp.micro_batch_size, sp.global_batch_size, sp.grad_accum = mbs, gbs, gbs // mbs
            sp.steps, sp.seq_length, sp.tokens = steps, seq, steps * gbs * seq
            sp.lr, sp.min_lr = lr, st.min_lr * (lr / st.lr if st.lr else 1.0)
            sp.recompute = st.recompute
            shapes = self._shapes(sp)
            flops = mm.flops_per_token(shapes[0], seq) + (
                mm.forward_flops_per_token(shapes[1], seq) if len(shapes) > 1 else 0.0)
            step_s = gbs * seq * flops / (self.tflops * 1e12) + tm.STEP_OVERHEAD_S
            val_s = (steps // st.val_check_interval) * st.limit_val_batches * step_s / 3
            loaded = sum(s.total_params() for s in shapes)
            sp.est_startup_s = round(self._startup_s(True, loaded, tm.TEACHER_SETUP_S if len(shapes) > 1 else 0.0), 1)
            sp.est_step_s = step_s
            sp.est_hours = (sp.est_startup_s + steps * step_s + val_s) / 3600
            sp.why = (f"CPU: 1 process, fp32, MBS={mbs}, {gbs // mbs} accumulation step(s); no gradient clipping "
                      f"(CUDA only)")
        elif kind.estimate == Estimate.PRUNING:
            spec = self.recipe.pruning[sp.pruning]
            calibrates = spec.drop_layers is None
            sp.micro_batch_size = sp.global_batch_size = st.micro_batch_size
            sp.grad_accum, sp.seq_length = 1, seq
            sp.steps = st.num_train_samples // st.micro_batch_size if calibrates else 0
            sp.tokens = sp.steps * st.micro_batch_size * seq
            sp.est_step_s = st.micro_batch_size * seq * mm.forward_flops_per_token(shape, seq) / (self.tflops * 1e12)
            sp.est_startup_s = round(self._startup_s(True, shape.total_params()), 1)
            sp.est_hours = (sp.est_startup_s + sp.steps * sp.est_step_s) / 3600
            what = "drop layers " + ranges(spec.drop_layers) if not calibrates else ", ".join(
                f"{k.removeprefix('target_')}={v}" for k, v in spec.targets().items())
            sp.why = (f"CPU: 1 process, fp32; {what}" + (f"; {st.num_train_samples} calibration samples at batch "
                                                         f"{st.micro_batch_size}" if calibrates else "; no calibration"))
        else:
            trained = self.recipe.settings(kind.batches_from)
            seq = trained.seq_length or self.recipe.data.seq_length
            evaluated = [stage_shape(self.recipe, s.variant is not None, s.variant)
                         for s in sources(self.recipe, kind, sp.pruning) if s.output.name == "model"]
            gbs = trained.global_batch_size
            sp.micro_batch_size, sp.global_batch_size = trained.micro_batch_size, gbs
            sp.grad_accum, sp.seq_length = gbs // trained.micro_batch_size, seq
            sp.tokens = len(evaluated) * trained.limit_val_batches * gbs * seq
            sp.est_startup_s = round(self._startup_s(True, sum(m.total_params() for m in evaluated)), 1)
            sp.est_hours = (sp.est_startup_s + sp.tokens * mm.forward_flops_per_token(shape, seq)
                            / (self.tflops * 1e12)) / 3600
            then = ("plots from the trainers' TensorBoard logs" if any(i.output == "log_dir" for i in kind.inputs)
                    else "a table")
            sp.why = (f"CPU: 1 process, fp32, MBS={sp.micro_batch_size}: validation loss of {len(evaluated)} models "
                      f"on {trained.limit_val_batches} batches of {gbs}, then {then}")

    def _plan_prune(self, sp: StagePlan, st: Any) -> None:
        """TP=1 and the largest PP one node holds; where the model does not fit one node's GPUs that way, the
        smallest PP over more nodes (at most the cap) that fits: pruning gains nothing from more."""
        key = f"stages.{sp.kind}"
        gpn = self._need_gpus(key)
        shape = teacher_shape(self.recipe)
        seq = st.seq_length or self.recipe.data.seq_length
        tutorial = self.recipe.layout == "tutorial"
        cap = self.profile.node_cap
        if tutorial:
            self._tutorial_gpus(key)
            self._tutorial_conflicts(st, key, {"pp": TUTORIAL_PRUNE_PP})
            if shape.num_layers % TUTORIAL_PRUNE_PP:
                raise self.recipe.error("layout", f"the tutorial's layout prunes at PP={TUTORIAL_PRUNE_PP}, which "
                                        f"does not divide the {shape.num_layers} layers; use layout: planned")
            candidates = [TUTORIAL_PRUNE_PP]
        elif st.pp:
            if shape.num_layers % st.pp:
                raise self.recipe.error(f"{key}.pp", f"pp={st.pp} does not divide the {shape.num_layers} layers")
            if tm.pipeline_nodes(st.pp, gpn, cap) is None:
                raise self.recipe.error(f"{key}.pp", f"pp={st.pp} does not fit {cap} node(s) of {gpn} GPUs, each "
                                        f"holding an equal share of the stages")
            candidates = [st.pp]
        else:
            one_node = max(d for d in divisors(shape.num_layers) if d <= gpn)
            candidates = [one_node] + [d for d in divisors(shape.num_layers)
                                       if d > gpn and tm.pipeline_nodes(d, gpn, cap) is not None]
        first = None
        for pp in candidates:
            nodes = tm.pipeline_nodes(pp, gpn, cap)
            est = mm.inference_memory(shape, pp, st.micro_batch_size, seq, self.profile.attention)
            first = first or (pp, est)
            if est.total <= self.usable:
                break
        else:
            over = f" over {nodes} nodes" if nodes > 1 else ""
            raise self.recipe.error("layout" if tutorial else key, f"pruning needs {gib(est.total)} GiB per GPU at "
                                    f"PP={pp} (TP=1){over}, more than {gib(self.usable)} usable of {self.gpu_gib:g}"
                                    + ("; use layout: planned" if tutorial else ""))
        placement = ""
        if nodes > 1:
            placement = (f"; {nodes} nodes: one node's PP={first[0]} needs {gib(first[1].total)} GiB per GPU, more "
                         f"than {gib(self.usable)} usable")
        elif cap > 1:
            placement = "; one node holds its pipeline"
        spec = self.recipe.pruning[sp.pruning]
        calibrates = spec.drop_layers is None
        sp.nodes, sp.gpus_per_node, sp.tp, sp.pp = nodes, pp // nodes, 1, pp
        sp.micro_batch_size = sp.global_batch_size = st.micro_batch_size
        sp.grad_accum = 1
        sp.seq_length = seq
        sp.steps = st.num_train_samples // st.micro_batch_size if calibrates else 0
        sp.tokens = sp.steps * st.micro_batch_size * seq
        sp.est_memory_gib, sp.gpu_memory_gib, sp.memory_breakdown = gib(est.total), self.gpu_gib, est.gib()
        # A calibration batch is one forward pass through every pipeline stage in turn.
        sp.est_step_s = (st.micro_batch_size * seq * mm.forward_flops_per_token(shape, seq) / (self.tflops * 1e12)
                         + tm.MICRO_BATCH_OVERHEAD_S * pp)
        saved = student_shape(self.recipe, sp.pruning).total_params() * mm.WEIGHT_BYTES / tm.HOST_BYTES_PER_SECOND
        sp.est_startup_s = round(self._startup_s(True, shape.total_params()) + saved, 1)
        sp.est_hours = (sp.est_startup_s + sp.steps * sp.est_step_s) / 3600
        what = "drop layers " + ranges(spec.drop_layers) if not calibrates else ", ".join(
            f"{k.removeprefix('target_')}={v}" for k, v in spec.targets().items())
        sp.why = (("tutorial layout " if tutorial else "") + f"TP=1 PP={pp}: pruning needs TP=1; {what}"
                  + (f"; {st.num_train_samples} calibration samples at batch {st.micro_batch_size}" if calibrates
                     else "; no calibration") + placement)

    def _plan_evaluation(self, sp: StagePlan, st: Any) -> None:
        """Validation of every model on the batches its kind's `batches_from` trained on: data-parallel
        forward passes over one node, TP=1, the smallest PP that fits the teacher."""
        curves = any(i.output == "log_dir" for i in sp.stage_kind.inputs)
        then = "plots from the trainers' TensorBoard logs" if curves else "a table"
        gpn = self.profile.gpus_per_node
        shape = teacher_shape(self.recipe)
        trained = self.recipe.settings(sp.stage_kind.batches_from)
        seq = trained.seq_length or self.recipe.data.seq_length
        mbs, pp, est = self._evaluation_layout(shape, trained, seq, gpn, f"stages.{sp.kind}")
        dp = gpn // pp
        gbs = trained.global_batch_size if trained.global_batch_size % (mbs * dp) == 0 else dp
        evaluated = [stage_shape(self.recipe, s.variant is not None, s.variant)
                     for s in sources(self.recipe, sp.stage_kind, sp.pruning) if s.output.name == "model"]
        models = len(evaluated)
        tokens = models * trained.limit_val_batches * gbs * seq
        sp.nodes, sp.gpus_per_node, sp.tp, sp.pp, sp.dp = 1, gpn, 1, pp, dp
        sp.micro_batch_size, sp.global_batch_size, sp.grad_accum = mbs, gbs, gbs // (mbs * dp)
        sp.seq_length, sp.tokens = seq, tokens
        sp.est_memory_gib, sp.gpu_memory_gib, sp.memory_breakdown = gib(est.total), self.gpu_gib, est.gib()
        sp.est_startup_s = round(self._startup_s(True, sum(m.total_params() for m in evaluated)), 1)
        batches = models * trained.limit_val_batches * (gbs // (mbs * dp))
        sp.est_hours = (sp.est_startup_s + tokens * mm.forward_flops_per_token(shape, seq) / (gpn * self.tflops * 1e12)
                        + batches * tm.MICRO_BATCH_OVERHEAD_S) / 3600
        sp.why = (f"TP=1 PP={pp} DP={dp} MBS={mbs}: validation loss of {models} models on {trained.limit_val_batches} "
                  f"batches of {gbs}, then {then}" + ("; one node: forward passes only" if self.profile.node_cap > 1
                                                      else ""))

    def _evaluation_layout(self, shape: mm.Shape, trained: Any, seq: int, gpn: int,
                           key: str) -> tuple[int, int, mm.MemoryEstimate]:
        """(micro-batch, PP, memory) of an evaluation on one node: the trainer's own micro-batches where they
        split its global batch and fit at some PP (every validation loss is then measured as the trainer
        measured it), else micro-batches of 1; the smallest PP that fits the teacher."""
        for mbs in dict.fromkeys((trained.micro_batch_size, 1)):
            for pp in (d for d in divisors(shape.num_layers) if d <= gpn and gpn % d == 0):
                if mbs > 1 and trained.global_batch_size % (mbs * (gpn // pp)):
                    continue
                est = mm.inference_memory(shape, pp, mbs, seq, self.profile.attention)
                if est.total <= self.usable:
                    return mbs, pp, est
        raise self.recipe.error(key, f"evaluating the teacher needs {gib(est.total)} GiB per GPU even at PP={pp}, "
                                f"more than {gib(self.usable)} usable")

    def _plan_conversion(self, sp: StagePlan, st: Any) -> None:
        """One GPU: the source model into a checkpoint (HF_IMPORT: read the Hugging Face weights and write
        NeMo's; random: write only), or each student back to Hugging Face (HF_EXPORT)."""
        shape = teacher_shape(self.recipe)
        gpus = st.gpus if self.profile.gpus_per_node else 0
        sp.gpus_per_node = gpus
        weights = shape.total_params() * mm.WEIGHT_BYTES
        sp.est_memory_gib = gib(weights + mm.FIXED_OVERHEAD_GIB * mm.GIB) if gpus else None
        sp.gpu_memory_gib = self.gpu_gib if gpus else None
        source = self.recipe.model.source
        if sp.stage_kind.estimate == Estimate.HF_IMPORT:
            moved = weights * (1 if source == "random" else 2)
            sp.why = (f"convert {gib(weights)} GiB of bf16 weights from {source}" if source != "random"
                      else "build a randomly initialised checkpoint of the model shape")
        else:
            moved = 2 * mm.WEIGHT_BYTES * sum(student_shape(self.recipe, s).total_params() for s in self.recipe.students)
            sp.why = "convert each distilled student to Hugging Face format"
        if gpus and self.profile.nodes * self.profile.gpus_per_node > gpus:
            sp.why += "; one GPU: a conversion uses no more"
        sp.est_startup_s = round(self._startup_s(True) + moved / tm.HOST_BYTES_PER_SECOND, 1)
        sp.est_hours = sp.est_startup_s / 3600

    def _plan_data(self, sp: StagePlan, st: Any) -> None:
        """CPU workers tokenise the corpus (a builtin one in seconds, WikiText-103 in DATA_PREP_HOURS)."""
        workers = self.recipe.data.workers
        sp.cpus_per_task = min(workers, self.profile.cpus_per_node) if self.profile.cpus_per_node else workers
        sp.seq_length = self.recipe.data.seq_length
        builtin = self.recipe.data.source.builtin is not None
        sp.est_startup_s = round(self._startup_s(False, extra_s=tm.BUILTIN_DATA_S - tm.PROCESS_START_S) if builtin
                                 else self._startup_s(False) + tm.DATA_PREP_HOURS * 3600, 1)
        sp.why = f"CPU only: tokenise with {workers} workers into Megatron .bin/.idx"
        sp.est_hours = sp.est_startup_s / 3600

    def _partition(self, sp: StagePlan, st: Any) -> str | None:
        if not self.executor.uses_partitions:
            return None
        if st.partition:
            return st.partition
        if sp.gpus_per_node == 0:
            return self.profile.cpu_partition or self.profile.partition
        return self.profile.partition

    def _time_limit(self, sp: StagePlan, st: Any) -> None:
        """The stage's limit and the key it came from: the recipe's `time` where it gives one (refused above
        its partition's MaxTime), else the estimate with its margin (timemodel.planned_limit_minutes) capped
        at the partition's MaxTime (`timeouts`), or at default_time where none is known. Refused where the
        executor ends stages at their limit: a limit too short for the checkpoint signal, a training stage
        whose continuations cannot cover its estimate, another stage whose estimate exceeds its cap."""
        maxtime = self.profile.time_limit_minutes(sp.partition)
        cap, cap_key = ((maxtime, f"timeouts.{sp.partition}") if maxtime is not None
                        else (parse_time_minutes(self.profile.default_time), "default_time"))
        signalled = sp.requeue and self.executor.signals_before_limit
        lead = self.profile.signal_lead_s if signalled else 0
        if st.time:
            minutes, key, note = parse_time_minutes(st.time), f"stages.{sp.kind}.time", f"stages.{sp.kind}.time"
            if maxtime is not None and minutes > maxtime:
                raise self.recipe.error(key, f"time {st.time} exceeds the {sp.partition} partition's limit "
                                        f"{self.profile.timeouts[sp.partition or '']}",
                                        "give at most that, or leave time out for a limit from the estimate")
        else:
            minutes = tm.planned_limit_minutes(sp.est_hours * 3600, lead)
            if signalled:
                minutes = max(minutes, math.ceil(MIN_LIMIT_PER_SIGNAL_LEAD * lead / 60))
            key, note = "estimate", (f"estimate ×{tm.LIMIT_MARGIN:g} + {tm.LIMIT_FLOOR_MIN} min"
                                     + (" + signal lead" if lead else ""))
            if self.executor.ends_at_limit and minutes > cap:
                note = f"{cap_key}, under the estimate's {format_minutes(minutes)}"
                minutes, key = cap, cap_key
        sp.time_limit, sp.time_limit_source = format_minutes(minutes), key
        sp.why += f"; limit: {note}"
        problem = None
        if minutes < 1:
            problem = f"a time limit of {st.time!r} leaves the {sp.name} stage no time (Slurm reads 0 as no limit): give HH:MM:SS"
        elif signalled and minutes * 60 < MIN_LIMIT_PER_SIGNAL_LEAD * lead:
            need = format_minutes(math.ceil(MIN_LIMIT_PER_SIGNAL_LEAD * lead / 60))
            problem = (f"the {sp.name} stage's limit {format_minutes(minutes)} is under {MIN_LIMIT_PER_SIGNAL_LEAD} × "
                       f"signal_lead_s={lead} s, so its checkpoint signal would fire before any work; give at least "
                       f"{need} or lower signal_lead_s")
        if problem:
            if key.startswith("stages."):
                raise self.recipe.error(key, problem)
            raise UserError(problem, file=self.profile.source, key=key)
        if self.executor.ends_at_limit:
            self._check_limit_holds(sp, minutes, lead)

    def _check_limit_holds(self, sp: StagePlan, minutes: int, lead: int) -> None:
        """A training stage continues past its limit (a checkpoint at the signal, then a requeue) at most
        max_continuations times, each run starting again; any other stage must end within its limit. An
        explicit recipe limit under a stage's estimate is the user's call: a warning in the why line."""
        est_s, limit, source = sp.est_hours * 3600, format_minutes(minutes), sp.time_limit_source
        explicit = source.startswith("stages.")
        key = sp.time_limit_source if explicit else f"stages.{sp.kind}"
        if lead:
            runs = tm.attempts(est_s, sp.est_startup_s, minutes * 60, lead)
            allowed = 1 + self.profile.max_continuations
            if runs is not None and runs <= allowed:
                if runs > 1:
                    sp.why += f"; ~{runs - 1} continuation(s) past the {limit} limit"
                return
            needs = (f"needs {runs} runs of its {limit} limit ({source}), more than the {allowed} that "
                     f"max_continuations={self.profile.max_continuations} allows" if runs else
                     f"cannot progress within its {limit} limit ({source}) after a {sp.est_startup_s:.0f} s startup "
                     f"and the {lead} s signal lead")
            raise self.recipe.error(key, f"the {sp.name} stage's estimate of {sp.est_hours:.1f} h {needs}",
                                    f"raise max_continuations in the profile, give stages.{sp.kind}.partition "
                                    f"a longer limit, or fewer steps")
        if est_s <= minutes * 60:
            return
        if explicit:
            sp.why += f"; WARNING: estimate {sp.est_hours:.1f} h exceeds its {limit} limit"
            return
        raise self.recipe.error(key, f"the {sp.name} stage's estimate of {sp.est_hours:.1f} h exceeds its {limit} "
                                f"limit ({source}), and only training stages continue past their limit",
                                f"give stages.{sp.kind}.partition a longer limit, or the stage less work")


def make_plan(profile: ClusterProfile, recipe: Recipe) -> Plan:
    return Planner(profile, recipe).plan()
