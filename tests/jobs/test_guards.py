"""Guards on the private (underscore) NeMo and ModelOpt functions the stage jobs call (issue 13 item 6):
present in the installed stack, and, when a release drops one, a RuntimeError naming the version the
jobs were tested with, raised before the prune stage builds anything."""

from __future__ import annotations

import importlib
import sys

import pytest

pytestmark = pytest.mark.nemo


@pytest.fixture
def parts(nemo_cpu):
    from jobs.stages import nemo_parts

    return nemo_parts


def test_every_private_function_is_in_the_installed_stack(parts):
    for module, name, _, _ in parts.PRIVATE_NEMO:
        assert parts.private(module, name) is getattr(importlib.import_module(module), name)


@pytest.mark.parametrize("index", [0, 1, 2])
def test_a_missing_private_function_names_the_tested_version(parts, monkeypatch, index):
    module, name, dist, tested = parts.PRIVATE_NEMO[index]
    monkeypatch.delattr(importlib.import_module(module), name)
    with pytest.raises(RuntimeError) as info:
        parts.private(module, name)
    text = str(info.value)
    assert f"{module}.{name} is missing" in text and f"{dist}=={tested}" in text
    assert f"{dist} {parts._installed(dist)}" in text


def test_a_module_that_cannot_be_imported_names_the_tested_version(parts, monkeypatch):
    monkeypatch.setitem(sys.modules, "nemo.collections.llm.inference.base", None)  # import raises ImportError
    with pytest.raises(RuntimeError) as info:
        parts.private("nemo.collections.llm.inference.base", "_setup_trainer_and_restore_model")
    assert "cannot import nemo.collections.llm.inference.base" in str(info.value)
    assert f"nemo_toolkit=={parts.TESTED_NEMO}" in str(info.value)


@pytest.mark.parametrize("te, module, name", [
    (True, "nemo.collections.llm.modelopt.model_utils", "_set_gpt_mamba_modelopt_spec"),
    (False, "modelopt.torch.nas.modules.norm", "_DynamicLayerNorm"),
])
def test_prune_checks_what_its_backend_calls(parts, monkeypatch, te, module, name):
    from jobs.stages import prune

    assert set(prune.check_private_functions(te)) == {"restore", "modelopt_spec" if te else "dynamic_norm"}
    monkeypatch.delattr(importlib.import_module(module), name)
    with pytest.raises(RuntimeError, match=name):
        prune.check_private_functions(te)


def test_prune_fails_on_the_guard_before_building_anything(parts, monkeypatch, tmp_path):
    from jobs.contract import StageConfig
    from jobs.stages import prune
    from tests.rendered import render_run, stage_configs

    monkeypatch.delattr(importlib.import_module("nemo.collections.llm.inference.base"),
                        "_setup_trainer_and_restore_model")

    def must_not_build(cfg):
        raise AssertionError("built the model before checking NeMo's private functions")

    monkeypatch.setattr(prune, "build", must_not_build)
    with pytest.raises(RuntimeError, match=r"_setup_trainer_and_restore_model is missing .*nemo_toolkit==2\.7\.3"):
        prune.run(StageConfig.from_json(stage_configs(render_run(tmp_path))["prune_width"]))


def test_the_optimizer_api_of_the_installed_stack_matches(parts):
    parts.check_optimizer_api()  # NeMo 2.7.3 + megatron-core 0.15.3: NeMo's call fits megatron's signature


def test_megatron_without_no_weight_decay_cond_is_refused_before_training(parts, monkeypatch):
    from megatron.core import optimizer as mcore_optimizer

    def as_in_mcore_016(config, model_chunks, config_overrides=None, use_gloo_process_groups=True,
                        pg_collection=None, dump_param_to_param_group_map=None):
        raise AssertionError("not called")

    monkeypatch.setattr(mcore_optimizer, "get_megatron_optimizer", as_in_mcore_016)
    with pytest.raises(RuntimeError, match=r"no_weight_decay_cond.*megatron-core==0\.15\.3"):
        parts.check_optimizer_api()
    monkeypatch.setattr(mcore_optimizer, "get_megatron_optimizer", lambda *args, **kwargs: None)
    parts.check_optimizer_api()  # a signature that takes **kwargs accepts NeMo's call


def test_training_checks_the_optimizer_api_before_it_starts(parts, monkeypatch):
    def mismatch():
        raise RuntimeError("mismatch")

    monkeypatch.setattr(parts, "check_optimizer_api", mismatch)
    monkeypatch.setattr(parts.llm, "train", lambda *a, **k: pytest.fail("llm.train ran before the check"))
    with pytest.raises(RuntimeError, match="mismatch"):
        parts.run_training(None, None)
