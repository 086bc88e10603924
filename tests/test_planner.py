"""Planner invariants over random cluster shapes (hypothesis), plus the tutorial's own numbers."""

import math
import os
import re
import sys

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher.planning import memory as mm
from launcher.planning import timemodel as tm
from launcher.planning.shapes import divisors, student_shape, teacher_shape
from launcher.core.errors import UserError
from launcher.planning.planner import FREE_CONTINUATIONS, USABLE_FRACTION, Planner, make_plan
from launcher.config.profile import load_profile, profile_from_located
from launcher.config.recipe import load_recipe
from launcher.config.yamlfile import Located


def profile_of(nodes, gpus, memory, executor="slurm", gpu=None, **keys):
    """GPUs of any memory size: a model the planner does not know, at an H100's throughput."""
    gpu = gpu or {"model": "test-gpu", "memory_gib": memory, "achievable_tflops": mm.achievable_tflops("H100", None)}
    data = {"executor": executor, "nodes": nodes, "gpus_per_node": gpus, "gpu": gpu,
            "partition": "gpu", "cpu_partition": "cpu", "job_dir": "/shared/runs", "container": "none", **keys}
    return profile_from_located(Located(data=data, file="generated.yaml"), "generated.yaml")


@pytest.fixture(autouse=True)
def _no_calibration(minitron_home):
    """Plans here come from the model alone, whatever the user's $MINITRON_HOME holds."""


def expected_graph(recipe):
    """The stage graph README.md describes, derived here from the recipe alone."""
    imports = not recipe.model.source.startswith("nemo:")
    deps = {"data": set()}
    if imports:
        deps["import"] = {"data"} if recipe.model.tokenizer.startswith("bpe:") else set()
    # the edges nothing else implies: a trained tokenizer puts data before import, and so before finetune
    trained = recipe.model.tokenizer.startswith("bpe:")
    deps["finetune"] = ({"import"} if trained else {"data", "import"}) if imports else {"data"}
    for name in recipe.pruning:
        deps[f"prune_{name}"] = {"finetune"}
    for name in recipe.students:
        deps[f"distill_{name}"] = {f"prune_{name}"}
    if recipe.stages["report"].enabled:
        deps["report"] = {f"distill_{name}" for name in recipe.students}
    for stage, waits in recipe.after.items():
        deps[stage] |= set(waits)
    return deps


def check_invariants(plan, profile, recipe):
    assert {s.name: set(s.depends_on) for s in plan.stages} == expected_graph(recipe)
    seen = set()
    for s in plan.stages:
        assert set(s.depends_on) <= seen, f"{s.name} planned before its dependencies"
        seen.add(s.name)
        assert s.est_hours > 0 and s.est_startup_s > 0
        if s.kind == "data":
            assert s.gpus_per_node == 0
            continue
        if s.kind == "report":  # evaluates every model: TP=1, one node, data-parallel batches
            assert s.tp == 1 and s.nodes == 1 and s.global_batch_size % (s.micro_batch_size * s.dp) == 0
        if s.gpus_per_node == 0:
            continue
        world = s.nodes * s.gpus_per_node
        assert s.nodes <= profile.nodes and s.gpus_per_node <= profile.gpus_per_node
        assert s.tp * s.pp * s.cp * s.dp == world
        assert s.tp <= profile.gpus_per_node
        if s.kind in ("finetune", "distill", "prune"):
            assert s.global_batch_size % (s.micro_batch_size * s.dp) == 0
            assert s.grad_accum == s.global_batch_size // (s.micro_batch_size * s.dp)
            assert s.est_memory_gib <= profile.gpu.memory_gib * USABLE_FRACTION + 0.05
        if s.kind in ("finetune", "distill"):
            m = recipe.model
            assert m.num_attention_heads % s.tp == 0 and m.num_query_groups % s.tp == 0
            assert m.num_layers % s.pp == 0
            assert math.isclose(s.est_gpu_hours, s.est_hours * world, rel_tol=0.02, abs_tol=0.01)
        if s.kind == "prune":  # TP=1, DP=1; more than one node only where one cannot hold the pipeline
            assert s.tp == 1 and s.dp == 1 and s.nodes <= profile.node_cap
            assert s.global_batch_size == s.micro_batch_size
            if s.nodes > 1:
                one_node = max(d for d in divisors(recipe.model.num_layers) if d <= profile.gpus_per_node)
                assert prune_memory(profile, recipe, one_node) > profile.gpu.memory_gib * USABLE_FRACTION
    # Stages share the GPUs: the run takes at least its longest stage and at most all of them in a row,
    # and no stage starts before its dependencies have finished.
    total = plan.critical_path_hours()
    assert max(s.est_hours for s in plan.stages) - 1e-9 <= total <= sum(s.est_hours for s in plan.stages) + 1e-9
    times = plan.schedule()
    for s in plan.stages:
        assert all(times[s.name][0] >= times[d][1] - 1e-9 for d in s.depends_on)


def prune_memory(profile, recipe, pp):
    """GiB per GPU of the teacher's pruning forward at TP=1 and `pp`."""
    st = recipe.settings("prune")
    seq = st.seq_length or recipe.data.seq_length
    return mm.inference_memory(teacher_shape(recipe), pp, st.micro_batch_size, seq, profile.attention).total / mm.GIB


def fits_somewhere(profile, recipe, kind, pruning=None, nodes=None):
    """Oracle: the largest node count (≤ the profile's) with a layout that splits the batch and fits
    the memory model, by brute force over every TP, PP and halved micro-batch; None when none does."""
    st = recipe.settings(kind)
    gpn = profile.gpus_per_node
    teacher = teacher_shape(recipe)
    shapes = [student_shape(recipe, pruning), teacher] if kind == "distill" else [teacher]
    seq = st.seq_length or recipe.data.seq_length
    usable = profile.gpu.memory_gib * USABLE_FRACTION * mm.GIB
    for n in ([nodes] if nodes else range(profile.nodes, 0, -1)):
        world = n * gpn
        gbs = st.global_batch_size
        if recipe.scaling.policy == "linear":
            gbs = max(st.micro_batch_size, round(st.global_batch_size * world / recipe.scaling.reference_gpus))
        for tp in range(1, gpn + 1):
            if gpn % tp or any(s.num_attention_heads % tp or s.num_query_groups % tp for s in shapes):
                continue
            for pp in range(1, shapes[0].num_layers + 1):
                if world % (tp * pp) or any(s.num_layers % pp for s in shapes):
                    continue
                dp = world // (tp * pp)
                mbs = st.micro_batch_size
                while mbs >= 1:
                    if gbs % (mbs * dp) == 0:
                        lay = mm.Layout(tp, pp, 1, dp, mbs, seq, gbs // (mbs * dp), tp > 1, profile.attention)
                        if mm.training_memory(shapes[0], lay, teacher if kind == "distill" else None).total <= usable:
                            return n
                    mbs //= 2
    return None


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(nodes=st.integers(1, 16), gpus=st.sampled_from([1, 2, 4, 8]), memory=st.sampled_from([16, 24, 40, 48, 80, 94, 141]),
       mbs=st.sampled_from([1, 2, 4, 8]), gbs_factor=st.integers(1, 64), seq=st.sampled_from([1024, 2048, 4096, 8192]),
       policy=st.sampled_from(["fixed", "linear"]))
def test_plan_satisfies_invariants_or_says_why(nodes, gpus, memory, mbs, gbs_factor, seq, policy):
    profile = profile_of(nodes, gpus, memory)
    overrides = [f"data.seq_length={seq}", f"scaling.policy={policy}"]
    for kind in ("finetune", "distill"):
        overrides += [f"stages.{kind}.micro_batch_size={mbs}", f"stages.{kind}.global_batch_size={mbs * gbs_factor}"]
    recipe = load_recipe(None, overrides)
    training = [("finetune", None)] + [("distill", name) for name in recipe.students]
    try:
        plan = make_plan(profile, recipe)
    except UserError as exc:
        assert exc.key and str(exc)  # infeasible: a reason naming the key ...
        if exc.key.startswith(("stages.finetune", "stages.distill")):  # ... and truly infeasible
            kind = exc.key.split(".")[1]
            for stage_kind, pruning in training:
                if stage_kind == kind:
                    assert fits_somewhere(profile, recipe, kind, pruning) is None, f"refused a plannable {kind}"
        return
    check_invariants(plan, profile, recipe)
    for kind, pruning in training:  # the largest node count that works, never fewer
        s = plan.stage(kind if kind == "finetune" else f"distill_{pruning}")
        assert s.nodes == fits_somewhere(profile, recipe, kind, pruning)
        if s.nodes < profile.nodes:
            assert f"on {s.nodes} of {profile.nodes} nodes" in s.why


@settings(max_examples=60, deadline=None)
@given(gpus=st.sampled_from([1, 2, 4, 8]), memory=st.sampled_from([8, 16, 80]))
def test_tiny_recipe_always_plans(gpus, memory):
    profile = profile_of(1, gpus, memory)
    recipe = load_recipe("tiny")
    check_invariants(make_plan(profile, recipe), profile, recipe)


def test_reference_profile_plan():
    profile, recipe = load_profile("h100-1x8"), load_recipe()
    plan = make_plan(profile, recipe)
    ft = plan.stage("finetune")
    assert ft.gpus_per_node == 8 and ft.global_batch_size == 128 and ft.steps == 30 and ft.seq_length == 8192
    assert ft.tokens == 30 * 128 * 8192
    assert plan.stage("prune_width").tp == 1 and plan.stage("prune_width").pp == 8
    assert plan.stage("data").gpus_per_node == 0 and plan.stage("data").partition == "cpu"
    assert "TP=" in ft.why and "GiB" in ft.why


def first_fitting_layout(profile, recipe, kind, pruning=None):
    """Oracle: (tp, pp, mbs) of the smallest TP, then PP, then the largest micro-batch that fits."""
    st = recipe.settings(kind)
    gpn, world = profile.gpus_per_node, profile.nodes * profile.gpus_per_node
    teacher = teacher_shape(recipe)
    shapes = [student_shape(recipe, pruning), teacher] if kind == "distill" else [teacher]
    seq = st.seq_length or recipe.data.seq_length
    for tp in (1, 2, 4, 8):
        if tp > gpn or any(s.num_attention_heads % tp or s.num_query_groups % tp for s in shapes):
            continue
        for pp in (1, 2, 4, 8, 16, 32):
            if world % (tp * pp) or any(s.num_layers % pp for s in shapes):
                continue
            dp = world // (tp * pp)
            for mbs in (st.micro_batch_size, st.micro_batch_size // 2, st.micro_batch_size // 4, 1):
                if mbs < 1 or st.global_batch_size % (mbs * dp):
                    continue
                lay = mm.Layout(tp, pp, 1, dp, mbs, seq, st.global_batch_size // (mbs * dp), tp > 1, "fused")
                est = mm.training_memory(shapes[0], lay, teacher if kind == "distill" else None)
                if est.total <= profile.gpu.memory_gib * USABLE_FRACTION * mm.GIB:
                    return tp, pp, mbs
    return None


@pytest.mark.parametrize("memory", [40, 48, 80])
def test_smallest_tp_is_chosen(memory):
    profile, recipe = profile_of(1, 8, memory), load_recipe()
    plan = make_plan(profile, recipe)
    for kind, pruning, name in (("finetune", None, "finetune"), ("distill", "depth", "distill_depth"),
                                ("distill", "width", "distill_width")):
        s = plan.stage(name)
        assert (s.tp, s.pp, s.micro_batch_size) == first_fitting_layout(profile, recipe, kind, pruning)
    if memory <= 48:  # small cards need tensor parallelism: the comparison above covers TP > 1
        assert plan.stage("finetune").tp > 1


def test_fixed_policy_keeps_gbs_and_linear_scales_it():
    recipe = load_recipe()
    fixed = make_plan(profile_of(4, 8, 80), recipe).stage("finetune")
    assert fixed.global_batch_size == 128 and fixed.nodes == 4
    linear = make_plan(profile_of(4, 8, 80), load_recipe(None, ["scaling.policy=linear", "scaling.lr_rule=sqrt"]))
    ft = linear.stage("finetune")
    assert ft.global_batch_size == 512 and ft.lr == pytest.approx(2e-4)


def test_token_budget_sets_steps():
    profile = load_profile("h100-1x8")
    profile.max_continuations = 200  # the paper's 94B tokens take ~640 h on one node: 161 runs of 4 h
    plan = make_plan(profile, load_recipe(None, ["stages.distill.tokens=94e9"]))
    s = plan.stage("distill_depth")
    assert s.steps == math.ceil(94e9 / (128 * 8192))


@pytest.mark.parametrize("override, key", [
    ("stages.finetune.tp=16", "stages.finetune.tp"),
    ("stages.finetune.tp=3", "stages.finetune.tp"),
    ("stages.finetune.pp=5", "stages.finetune.pp"),
    ("stages.finetune.nodes=2", "stages.finetune.nodes"),
    ("stages.finetune.global_batch_size=6", "stages.finetune.global_batch_size"),
])
def test_infeasible_inputs_name_the_key(override, key):
    with pytest.raises(UserError) as info:
        make_plan(load_profile("h100-1x8"), load_recipe(None, [override]))
    assert info.value.key == key


def test_nothing_fits_gives_the_numbers():
    with pytest.raises(UserError, match=r"no layout fits in 16 GiB GPUs .* smallest estimate"):
        make_plan(profile_of(1, 1, 16), load_recipe())


def test_unfused_attention_costs_more_memory():
    shape = mm.Shape(32, 4096, 14336, 32, 8, 128256)
    fused = mm.training_memory(shape, mm.Layout(8, 1, 1, 1, 1, 8192, 128, True, "fused"))
    unfused = mm.training_memory(shape, mm.Layout(8, 1, 1, 1, 1, 8192, 128, True, "unfused"))
    assert unfused.activations > 4 * fused.activations


# -- the memory model against the peaks measured on the H200 (benchmarks/RESULTS.md) ---------------
RESULTS = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "RESULTS.md")
MEASURED_SHAPES = {  # benchmarks/planner_gpu.py's SHAPES: layers, hidden, ffn, heads, query groups, vocab
    "8b": mm.Shape(32, 4096, 14336, 32, 8, 128256),
    "4b-depth": mm.Shape(16, 4096, 14336, 32, 8, 128256),
    "4b-width": mm.Shape(32, 3072, 9216, 32, 8, 128256, head_dim=128),
    "2b": mm.Shape(16, 2048, 8192, 16, 8, 128256),
}
MEASURED_CARD_GIB = 139  # the profile's memory_gib for that H200


def measured_layouts():
    """Rows of the planner_gpu section: (title, shape, teacher, tp, pp, dp, mbs, seq, gbs, peak GiB or None=OOM)."""
    text = open(RESULTS, encoding="utf-8").read()
    section = text[text.index("<!-- BEGIN planner_gpu -->"):text.index("<!-- END planner_gpu -->")]
    gbs = int(re.search(r"GBS (\d+)", section).group(1))
    tolerance = int(re.search(r"within ±(\d+)% of the measured peak", section).group(1))
    rows = []
    for title, table in re.findall(r"\*\*(.+?)\*\*\n\n(\|.+?)(?:\n\n|$)", section, re.S):
        head = re.match(r"(?:distill (\S+) → )?(\S+?)(?: fine-tune)?, seq (\d+)", title)
        teacher, shape, seq = head.group(1), head.group(2), int(head.group(3))
        lines = table.strip().splitlines()
        columns = [c.strip() for c in lines[0].strip("|").split("|")]
        for line in lines[2:]:
            cells = [c.strip() for c in line.strip("|").split("|")]
            row = dict(zip(columns, cells))
            if "not run" in line:
                continue
            tp, pp, mbs = int(row["TP"]), int(row["PP"]), int(row["MBS"])
            peak = None if "OOM" in line else float(row["peak reserved GiB"])
            rows.append((title, shape, teacher, tp, pp, int(row["DP"]), mbs, seq, gbs, peak))
    return rows, tolerance


def test_memory_model_matches_the_measured_peaks():
    rows, tolerance = measured_layouts()
    assert len([r for r in rows if r[-1] is not None]) >= 8 and any(r[-1] is None for r in rows)
    for title, shape, teacher, tp, pp, dp, mbs, seq, gbs, peak in rows:
        lay = mm.Layout(tp, pp, 1, dp, mbs, seq, gbs // (mbs * dp), tp > 1, "unfused")
        estimate = mm.training_memory(MEASURED_SHAPES[shape], lay,
                                      MEASURED_SHAPES[teacher] if teacher else None).total / mm.GIB
        if peak is None:  # ran out of memory: the planner must not have chosen it
            assert estimate > MEASURED_CARD_GIB * USABLE_FRACTION, (title, mbs, estimate)
        else:
            assert abs(estimate - peak) <= peak * tolerance / 100, (title, mbs, estimate, peak)


def test_fused_attention_memory_matches_the_peaks_measured_with_transformer_engine():
    """The container's path (TE, fused attention): rows of RESULTS.md's planner_gpu_te section."""
    text = open(RESULTS, encoding="utf-8").read()
    section = text[text.index("<!-- BEGIN planner_gpu_te -->"):text.index("<!-- END planner_gpu_te -->")]
    gbs = int(re.search(r"GBS (\d+)", section).group(1))
    tolerance = int(re.search(r"within ±(\d+)% of the measured peak", section).group(1))
    rows = re.findall(r"^\| (\S+) \| (\d+) \| (\d+) \| [\d.]+ \| \d+% \| ([\d.]+) \|", section, re.M)
    assert len(rows) == 4, rows
    for shape, seq, mbs, peak in rows:
        lay = mm.Layout(1, 1, 1, 1, int(mbs), int(seq), gbs // int(mbs), False, "fused")
        estimate = mm.training_memory(MEASURED_SHAPES[shape], lay).total / mm.GIB
        assert abs(estimate - float(peak)) <= float(peak) * tolerance / 100, (shape, seq, mbs, estimate, peak)


# -- any node count --------------------------------------------------------------------------------
@pytest.mark.parametrize("nodes, gpus, expected", [(3, 4, 2), (5, 8, 4), (6, 8, 4), (7, 4, 4)])
def test_gpus_that_do_not_divide_the_batch_plan_on_fewer_nodes(nodes, gpus, expected):
    profile, recipe = profile_of(nodes, gpus, 80), load_recipe()
    plan = make_plan(profile, recipe)
    check_invariants(plan, profile, recipe)
    for name in ("finetune", "distill_depth", "distill_width"):
        s = plan.stage(name)
        assert s.nodes == expected and s.global_batch_size == 128
        note = re.search(rf"on {expected} of {nodes} nodes: .*global_batch_size (\d+) or (\d+) would use every node",
                         s.why)
        assert note, s.why
        for suggested in map(int, note.groups()):  # each suggestion really plans on every node
            bigger = load_recipe(None, [f"stages.{s.kind}.global_batch_size={suggested}"])
            assert make_plan(profile, bigger).stage(name).nodes == nodes


def test_explicit_nodes_are_kept_and_refused_when_the_batch_does_not_split():
    with pytest.raises(UserError) as info:
        make_plan(profile_of(3, 4, 80), load_recipe(None, ["stages.finetune.nodes=3"]))
    assert info.value.key == "stages.finetune.global_batch_size"


# -- time ------------------------------------------------------------------------------------------
MEASURED_TINY_DEVICE_S = 485  # held-out small recipe, device-h200, submit → every stage DONE (issue 14)


def test_tiny_recipe_on_the_device_predicts_its_measured_wall_time():
    plan = make_plan(load_profile("device-h200"), load_recipe("tiny"))
    estimate_s = plan.critical_path_hours() * 3600
    assert 0.75 <= estimate_s / MEASURED_TINY_DEVICE_S <= 1.33, estimate_s
    # measured on the device, 37-79 s a stage, mostly startup: so is the model
    assert all(30 <= s.est_hours * 3600 <= 90 for s in plan.stages)
    assert all(s.est_startup_s >= 0.7 * s.est_hours * 3600 for s in plan.stages)


def test_stages_on_one_gpu_run_one_after_another():
    plan = make_plan(load_profile("device-h200"), load_recipe("tiny"))
    assert plan.critical_path_hours() == pytest.approx(sum(s.est_hours for s in plan.stages))
    times = plan.schedule()
    intervals = sorted(times.values())
    assert all(a[1] <= b[0] + 1e-9 for a, b in zip(intervals, intervals[1:]))


def test_stages_with_nodes_of_their_own_overlap():
    one, two = make_plan(profile_of(1, 8, 80), load_recipe()), make_plan(profile_of(2, 8, 80), load_recipe())
    t1, t2 = one.schedule(), two.schedule()
    # one node: the two prunes (each a whole node) queue; two nodes: they run side by side
    assert t1["prune_width"][0] >= t1["prune_depth"][1]
    assert t2["prune_width"][0] == t2["prune_depth"][0]
    assert two.critical_path_hours() < one.critical_path_hours()


# -- hostile input: bounded, one-line refusals ------------------------------------------------------
@pytest.mark.parametrize("attribute, value, key", [
    ("model.num_layers", 10 ** 12, "model.num_layers"),
    ("model.hidden_size", 10 ** 400, "model.hidden_size"),
    ("stages.finetune.steps", 10 ** 30, "stages.finetune.steps"),
    ("stages.distill.tokens", float("nan"), "stages.distill.tokens"),
    ("stages.finetune.global_batch_size", 2 ** 40, "stages.finetune.global_batch_size"),
])
def test_sizes_beyond_the_planners_bounds_are_refused_at_once(attribute, value, key, monkeypatch):
    recipe = load_recipe()  # set past the schema, which may bound these itself
    parts = attribute.split(".")
    target = recipe.model if parts[0] == "model" else recipe.settings(parts[1])
    setattr(target, parts[-1], value)

    def no_search(*args):
        raise AssertionError("a stage was planned (searched over layers, nodes, batches) before the bounds check")

    monkeypatch.setattr(Planner, "_plan_stage", no_search)
    with pytest.raises(UserError) as info:
        make_plan(load_profile("h100-1x8"), recipe)
    assert info.value.key == key and "\n" not in str(info.value) and len(str(info.value)) < 300


def test_empty_drop_layers_is_refused():
    recipe = load_recipe("tiny")
    recipe.pruning["depth"].drop_layers = []
    with pytest.raises(UserError) as info:
        make_plan(load_profile("device-h200"), recipe)
    assert info.value.key == "pruning.depth.drop_layers"


@pytest.mark.parametrize("kind", ["data", "finetune"])
def test_a_zero_time_limit_is_refused(kind):
    recipe = load_recipe()
    recipe.settings(kind).time = "0"
    with pytest.raises(UserError) as info:
        make_plan(load_profile("h100-1x8"), recipe)
    assert info.value.key == f"stages.{kind}.time"


def test_a_limit_within_twice_the_signal_lead_is_refused():
    recipe = load_recipe(None, ["stages.finetune.time=00:09:00"])
    with pytest.raises(UserError, match=r"signal_lead_s=300 .* at least 00:10:00") as info:
        make_plan(load_profile("h100-1x8"), recipe)
    assert info.value.key == "stages.finetune.time"
    make_plan(load_profile("h100-1x8"), load_recipe(None, ["stages.finetune.time=00:10:00"]))
    short_default = profile_of(1, 8, 80)
    short_default.default_time = "00:05:00"
    with pytest.raises(UserError) as info:
        make_plan(short_default, load_recipe())
    assert info.value.key == "default_time"


def test_divisors_are_exact_and_take_square_root_steps():
    assert all(divisors(n) == [d for d in range(1, n + 1) if n % d == 0] for n in range(1, 400))
    n = 2 ** 20 * 3 ** 6
    lines = []

    def count(frame, event, arg):
        if frame.f_code is divisors.__code__ and event == "line":
            lines.append(1)
            if len(lines) > 20 * math.isqrt(n):
                raise AssertionError("divisors walks more than O(sqrt n) candidates")
        return count

    sys.settrace(count)
    try:
        assert len(divisors(n)) == 21 * 7
    finally:
        sys.settrace(None)


def test_precision_is_the_recipes_on_gpus_and_full_on_the_cpu():
    recipe = load_recipe("tiny", ['precision="16-mixed"', 'stages.distill.precision="bf16-mixed"',
                                  "stages.import.gpus=0"])
    plan = {s.name: s for s in make_plan(profile_of(1, 1, 80, "local"), recipe).stages}
    assert plan["finetune"].precision == "16-mixed" and plan["distill_width"].precision == "bf16-mixed"
    assert not plan["import"].uses_gpus and plan["import"].precision == "32"  # the old jobs' CPU default too


def test_the_test_gpu_plans_as_an_h100_does():
    """profile_of's unknown GPU with an H100's throughput stands in for one (its memory is free to vary)."""
    h100 = make_plan(profile_of(1, 8, 80, gpu={"model": "H100-80GB", "memory_gib": 80}), load_recipe())
    assert [s.est_hours for s in make_plan(profile_of(1, 8, 80), load_recipe()).stages] == \
        [s.est_hours for s in h100.stages]


def test_a_continuation_budget_above_what_the_run_can_use_is_refused():
    """FREE_CONTINUATIONS always; above it, twice what the longest training stage needs by the estimate."""
    long_run = load_recipe(None, ["stages.distill.tokens=94e9"])
    plan = make_plan(profile_of(1, 8, 80, max_continuations=200), long_run)  # enough, and not too many
    lead = profile_of(1, 8, 80).signal_lead_s
    needed = max(tm.continuations_needed(s.est_hours, s.est_startup_s, s.time_limit, lead)
                 for s in plan.stages if s.requeue)
    assert needed > FREE_CONTINUATIONS
    with pytest.raises(UserError, match="more than the 11 that max_continuations=10 allows"):
        make_plan(profile_of(1, 8, 80), long_run)  # too few: refused at plan time (tests/test_plan_limits.py)
    for recipe, allowed in ((load_recipe(), FREE_CONTINUATIONS), (long_run, 2 * needed)):
        make_plan(profile_of(1, 8, 80, max_continuations=allowed), recipe)
        with pytest.raises(UserError) as info:
            make_plan(profile_of(1, 8, 80, max_continuations=allowed + 1), recipe)
        assert info.value.key == "max_continuations" and f"write max_continuations: {allowed}" in str(info.value)
    make_plan(profile_of(1, 1, 80, "local", max_continuations=500), load_recipe("tiny"))  # no time-limit signal


def test_attention_flops_count_the_query_heads_not_the_hidden_size():
    """A width-pruned student keeps the teacher's heads (32 × 128 = 4096) at hidden 3072: its attention costs
    what the teacher's does (issue 22 measured the old count, hidden × seq, 25 % short on that term)."""
    from launcher.planning.memory import Shape, flops_per_token

    teacher = Shape(num_layers=8, hidden_size=4096, ffn_hidden_size=14336, num_attention_heads=32,
                    num_query_groups=8, vocab_size=128256)
    width = Shape(num_layers=8, hidden_size=3072, ffn_hidden_size=9216, num_attention_heads=32,
                  num_query_groups=8, vocab_size=128256, head_dim=128)
    seq = 4096

    def attention(shape):
        return flops_per_token(shape, seq) - flops_per_token(shape, 0)

    assert attention(width) == attention(teacher) == 6 * 8 * 4096 * seq


def test_a_profile_without_gpus_plans_every_model_stage_as_one_fp32_process_on_a_node():
    """gpus_per_node: 0 (nodes without GPUs, the Slurm testbed): TP=PP=CP=DP=1 on one node, the whole global batch
    by accumulation, fp32 and the local spec, no gradient clipping in the stage config; no GPU-hours."""
    from launcher.rendering.stageconfig import build_stage_config
    from jobs.contract import RunLayout

    data = {"executor": "slurm", "nodes": 4, "gpus_per_node": 0, "cpus_per_node": 8, "partition": "gpu",
            "job_dir": "/shared/runs", "container": "none"}
    profile = profile_from_located(Located(data=data, file="cpu.yaml"), "cpu.yaml")
    assert profile.gpu is None and profile.hardware == "4 nodes, CPUs only"
    recipe = load_recipe("tiny", ["stages.finetune.steps=30"])
    plan = make_plan(profile, recipe)
    assert {s.name: set(s.depends_on) for s in plan.stages} == expected_graph(recipe)
    stages = {s.name: s for s in plan.stages}
    for s in plan.stages:
        assert (s.nodes, s.gpus_per_node, s.tp, s.pp, s.cp, s.dp, s.est_gpu_hours) == (1, 0, 1, 1, 1, 1, 0)
        if s.kind != "data":
            assert (s.precision, s.attention, s.cpus_per_task) == ("32", "unfused", 8), s.name
    ft = stages["finetune"]
    assert (ft.micro_batch_size, ft.global_batch_size, ft.grad_accum, ft.steps) == (4, 8, 2, 30)
    assert ft.why.startswith("CPU: 1 process, fp32") and "no gradient clipping" in ft.why
    assert stages["prune_depth"].steps == 0 and stages["prune_width"].steps == 16 // 4
    assert (stages["report"].micro_batch_size, stages["report"].global_batch_size) == (4, 8)
    config = build_stage_config("r", RunLayout("/shared/runs/runs/r"), recipe, ft)
    assert config.engine == {"attention": "unfused", "precision": "32", "device": "cpu"}
    assert config.train["clip_grad"] == 0.0 and config.parallel["gpus_per_node"] == 0
    gpu_config = build_stage_config("r", RunLayout("/shared/runs/runs/r"), recipe,
                                    make_plan(profile_of(1, 8, 80), recipe).stage("finetune"))
    assert gpu_config.engine["device"] == "gpu" and gpu_config.train["clip_grad"] == 1.0
    with pytest.raises(UserError, match="the tutorial's layout runs the finetune stage on 8 GPUs"):
        make_plan(profile, load_recipe("tiny", ["layout=tutorial"]))
