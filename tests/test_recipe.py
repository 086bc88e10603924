import pytest

from launcher.core.errors import UserError
from launcher.config.recipe import load_recipe, stage_graph


def test_default_recipe_is_the_tutorial():
    recipe = load_recipe()
    assert recipe.pruning["depth"].drop_layers == list(range(16, 32))
    assert recipe.pruning["width"].target_ffn_hidden_size == 9216
    assert recipe.pruning["width"].target_hidden_size == 3072
    ft = recipe.settings("finetune")
    assert (ft.steps, ft.micro_batch_size, ft.global_batch_size, ft.lr, ft.min_lr, ft.warmup_steps) == (
        30, 4, 128, 1e-4, 1e-5, 2)
    assert recipe.data.seq_length == 8192


def test_stage_graph_of_the_tutorial():
    graph = {n.name: n.depends_on for n in stage_graph(load_recipe())}
    assert graph == {
        "data": [], "import": [], "finetune": ["data", "import"], "prune_depth": ["finetune"],
        "prune_width": ["finetune"], "distill_depth": ["prune_depth"], "distill_width": ["prune_width"],
        "report": ["distill_depth", "distill_width"]}


def test_overrides_apply_and_parse_values():
    recipe = load_recipe(None, ["stages.distill.steps=300", "stages.finetune.lr=2e-4",
                                "pruning.depth.drop_layers=[1,2]", "students=[depth]"])
    assert recipe.settings("distill").steps == 300
    assert recipe.settings("finetune").lr == 2e-4
    assert recipe.pruning["depth"].drop_layers == [1, 2]
    assert [n.name for n in stage_graph(recipe)][-2:] == ["distill_depth", "report"]


def test_override_errors_name_the_override():
    with pytest.raises(UserError) as info:
        load_recipe(None, ["stages.distill.stpes=3"])
    assert info.value.file == "--set stages.distill.stpes=3"
    assert "did you mean 'steps'" in str(info.value)


def test_tokens_budget_may_be_written_as_yaml_exponent():
    recipe = load_recipe(None, ["stages.distill.tokens=94e9"])
    assert recipe.settings("distill").tokens == 94e9


def test_after_cycle_is_reported():
    with pytest.raises(UserError, match="cycle"):
        load_recipe(None, ["after={finetune: [distill_depth]}"])


def test_after_adds_an_edge():
    recipe = load_recipe(None, ["after={distill_width: [distill_depth]}"])
    graph = {n.name: n.depends_on for n in stage_graph(recipe)}
    assert graph["distill_width"] == ["prune_width", "distill_depth"]


def test_student_must_name_a_pruning_entry():
    with pytest.raises(UserError) as info:
        load_recipe(None, ["students=[depth, wdth]"])
    assert info.value.key == "students[1]" and "did you mean 'width'" in str(info.value)


def test_duplicate_student_is_a_duplicate_stage():
    with pytest.raises(UserError, match="duplicate stage name"):
        load_recipe(None, ["students=[depth, depth]"])


def test_drop_layers_are_one_indexed_and_in_range():
    with pytest.raises(UserError, match="out of range"):
        load_recipe(None, ["pruning.depth.drop_layers=[0, 1]"])


def test_nemo_checkpoint_source_skips_import():
    recipe = load_recipe(None, ["model.source=nemo:/ckpt/llama"])
    names = [n.name for n in stage_graph(recipe)]
    assert "import" not in names


def test_finetune_uses_the_tutorials_adam_beta2_and_distillation_keeps_095():
    recipe = load_recipe()  # finetune_recipe's optimizer has β2 0.98; distillation_recipe's the helper's 0.95
    assert recipe.settings("finetune").adam_beta2 == 0.98
    assert recipe.settings("distill").adam_beta2 == 0.95
    assert recipe.layout == "planned" and load_recipe(None, ["layout=tutorial"]).layout == "tutorial"
