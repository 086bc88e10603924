"""Planner invariants over random cluster shapes (hypothesis), plus the tutorial's own numbers."""

import math

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher import memory as mm
from launcher.errors import UserError
from launcher.planner import USABLE_FRACTION, make_plan
from launcher.profile import load_profile, profile_from_located
from launcher.recipe import load_recipe
from launcher.yamlfile import Located


def profile_of(nodes, gpus, memory, executor="slurm"):
    data = {"executor": executor, "nodes": nodes, "gpus_per_node": gpus, "gpu": {"model": "H100", "memory_gib": memory},
            "partition": "gpu", "cpu_partition": "cpu", "job_dir": "/shared/runs", "container": "none"}
    return profile_from_located(Located(data=data, file="generated.yaml"), "generated.yaml")


def check_invariants(plan, profile, recipe):
    names = {s.name for s in plan.stages}
    seen = set()
    for s in plan.stages:
        assert set(s.depends_on) <= seen, f"{s.name} planned before its dependencies"
        seen.add(s.name)
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
            assert s.est_hours > 0 and math.isclose(s.est_gpu_hours, s.est_hours * world, rel_tol=0.02, abs_tol=0.01)
        if s.kind == "prune":
            assert s.tp == 1 and s.nodes == 1
            assert s.global_batch_size == s.micro_batch_size
    assert names == {n for s in plan.stages for n in [s.name]}


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
    try:
        plan = make_plan(profile, recipe)
    except UserError as exc:
        assert exc.key and str(exc)  # infeasible: a reason naming the key
        return
    check_invariants(plan, profile, recipe)


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


def test_smallest_tp_is_chosen():
    profile, recipe = load_profile("h100-1x8"), load_recipe()
    plan = make_plan(profile, recipe)
    for s in (plan.stage("finetune"), plan.stage("distill_depth")):
        for smaller in range(1, s.tp):
            if 8 % smaller:
                continue
            # every layout with a smaller TP must not fit at any PP and MBS
            for pp in (1, 2, 4, 8):
                for mbs in (4, 2, 1):
                    dp = 8 // (smaller * pp)
                    if dp < 1 or 128 % (mbs * dp):
                        continue
                    lay = mm.Layout(smaller, pp, 1, dp, mbs, 8192, 128 // (mbs * dp), smaller > 1, "fused")
                    assert mm.training_memory(mm.Shape(32, 4096, 14336, 32, 8, 128256), lay).total > 72 * mm.GIB


def test_fixed_policy_keeps_gbs_and_linear_scales_it():
    recipe = load_recipe()
    fixed = make_plan(profile_of(4, 8, 80), recipe).stage("finetune")
    assert fixed.global_batch_size == 128 and fixed.nodes == 4
    linear = make_plan(profile_of(4, 8, 80), load_recipe(None, ["scaling.policy=linear", "scaling.lr_rule=sqrt"]))
    ft = linear.stage("finetune")
    assert ft.global_batch_size == 512 and ft.lr == pytest.approx(2e-4)


def test_token_budget_sets_steps():
    plan = make_plan(load_profile("h100-1x8"), load_recipe(None, ["stages.distill.tokens=94e9"]))
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
