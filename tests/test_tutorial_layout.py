"""`layout: tutorial` (issue 13 item 5): the NeMo 2 tutorial's own layouts on one node of 8 GPUs:
fine-tune and both distillations TP=8 PP=1 with sequence parallelism, depth and width pruning TP=1
PP=8; refused, with one line naming the key, where that layout cannot run as planned. And the
fine-tune's Adam β2 0.98 (the tutorial's `finetune_recipe`) against the distillation's 0.95."""

import json
import os

import pytest

from launcher.core.errors import UserError
from launcher.planning.planner import USABLE_FRACTION, make_plan
from launcher.config.profile import load_profile
from launcher.config.recipe import load_recipe
from tests.conftest import run_cli
from tests.test_planner import check_invariants, profile_of

TUTORIAL = ["layout=tutorial"]
TRAINING = ("finetune", "distill_depth", "distill_width")
PRUNING = ("prune_depth", "prune_width")


@pytest.fixture(autouse=True)
def _no_calibration(minitron_home):
    """Plans here come from the model alone, whatever the user's $MINITRON_HOME holds."""


def test_default_is_the_planned_layout():
    recipe = load_recipe()
    assert recipe.layout == "planned"
    assert make_plan(load_profile("h100-1x8"), recipe).stage("finetune").tp == 1  # the planner's smallest TP


@pytest.mark.parametrize("nodes", [1, 4])
def test_tutorial_layout_is_the_notebooks_on_one_node_of_8(nodes):
    profile = load_profile("h100-1x8") if nodes == 1 else profile_of(nodes, 8, 80)
    recipe = load_recipe(None, TUTORIAL)
    plan = make_plan(profile, recipe)
    check_invariants(plan, profile, recipe)
    for name in TRAINING:
        s = plan.stage(name)
        assert (s.nodes, s.gpus_per_node, s.tp, s.pp, s.cp, s.dp, s.sequence_parallel) == (1, 8, 8, 1, 1, 1, True), name
        assert (s.micro_batch_size, s.global_batch_size, s.grad_accum, s.seq_length) == (4, 128, 32, 8192), name
        assert 0 < s.est_memory_gib <= 80 * USABLE_FRACTION and s.why.startswith("tutorial layout TP=8 PP=1 SP MBS=4")
    for name in PRUNING:
        s = plan.stage(name)
        assert (s.nodes, s.gpus_per_node, s.tp, s.pp, s.micro_batch_size) == (1, 8, 1, 8, 4), name
        assert s.why.startswith("tutorial layout TP=1 PP=8")


@pytest.mark.parametrize("gpus", [1, 2, 4, 16])
def test_refused_without_8_gpus_per_node(gpus):
    with pytest.raises(UserError) as info:
        make_plan(profile_of(1, gpus, 80), load_recipe(None, TUTORIAL))
    assert info.value.key == "layout" and f"gpus_per_node={gpus}" in str(info.value)
    assert "\n" not in str(info.value) and "layout: planned" in str(info.value)


def test_refused_when_its_memory_estimate_exceeds_the_card():
    with pytest.raises(UserError) as info:
        make_plan(profile_of(1, 8, 40), load_recipe(None, TUTORIAL))
    assert info.value.key == "layout" and "GiB" in str(info.value) and "\n" not in str(info.value)
    make_plan(profile_of(1, 8, 40), load_recipe())  # the planned layout still finds one (smaller MBS)


@pytest.mark.parametrize("override, key", [
    ("stages.finetune.tp=4", "stages.finetune.tp"), ("stages.distill.pp=2", "stages.distill.pp"),
    ("stages.distill.sequence_parallel=false", "stages.distill.sequence_parallel"),
    ("stages.finetune.nodes=2", "stages.finetune.nodes"), ("stages.prune.pp=4", "stages.prune.pp"),
])
def test_a_contradicting_stage_setting_is_refused_not_overridden(override, key):
    with pytest.raises(UserError) as info:
        make_plan(profile_of(2, 8, 80), load_recipe(None, TUTORIAL + [override]))
    assert info.value.key == key and "conflicts with layout: tutorial" in str(info.value)


def test_agreeing_stage_settings_are_accepted():
    plan = make_plan(load_profile("h100-1x8"), load_recipe(None, TUTORIAL + ["stages.finetune.tp=8",
                                                                          "stages.prune.pp=8"]))
    assert plan.stage("finetune").tp == 8 and plan.stage("prune_width").pp == 8


def test_refused_where_tp8_does_not_divide_the_heads():
    with pytest.raises(UserError) as info:  # the tiny recipe: 8 heads, 4 query groups
        make_plan(profile_of(1, 8, 80), load_recipe("tiny", TUTORIAL))
    assert info.value.key == "layout" and "query groups (4)" in str(info.value)


def test_unknown_layout_is_refused_at_load():
    with pytest.raises(UserError) as info:
        load_recipe(None, ["layout=tutorail"])
    assert info.value.key == "layout"


def test_beta2_reaches_the_finetune_only_and_the_layout_the_stage_configs(tmp_path):
    env = {"MINITRON_HOME": str(tmp_path / "home"), "HOME": str(tmp_path), "USER": "ci"}
    proc = run_cli("submit", "--dry-run", "--json", "--profile", "h100-1x8", "--set", "layout=tutorial", env=env)
    assert proc.returncode == 0, proc.stderr
    stages = os.path.join(json.loads(proc.stdout)["run_dir"], "stages")

    def config(name):
        with open(os.path.join(stages, f"{name}.json")) as handle:
            return json.load(handle)

    assert config("finetune")["train"]["adam_beta2"] == 0.98
    for name in ("distill_depth", "distill_width"):
        assert config(name)["train"]["adam_beta2"] == 0.95
    for name in TRAINING:
        p = config(name)["parallel"]
        assert (p["tp"], p["pp"], p["cp"], p["dp"], p["sequence_parallel"], p["gpus_per_node"]) == (8, 1, 1, 1, True, 8)
    for name in PRUNING:
        p = config(name)["parallel"]
        assert (p["tp"], p["pp"], p["gpus_per_node"]) == (1, 8, 8)
