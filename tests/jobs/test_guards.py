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


def test_training_fits_nemo_s_optimizer_call_to_the_stack_before_it_starts(parts, monkeypatch):
    def incompatible():
        raise RuntimeError("incompatible")

    monkeypatch.setattr(parts.drift, "adapt_optimizer_call", incompatible)
    monkeypatch.setattr(parts.llm, "train", lambda *a, **k: pytest.fail("llm.train ran before the check"))
    with pytest.raises(RuntimeError, match="incompatible"):
        parts.run_training(None, None)


def test_the_norm_modelopt_prunes_takes_its_hparam_from_either_modelopt(parts):
    """ModelOpt 0.41 hands `num_features` to `_setup` (DMRegistry.convert(norm, num_features=...)); 0.35/0.37
    call `_setup()` and set it afterwards."""
    import inspect

    import torch
    from modelopt.torch.nas.registry import DMRegistry

    parts.register_torch_rmsnorm()
    setup = inspect.signature(DMRegistry[torch.nn.RMSNorm]._setup).parameters
    assert setup["num_features"].kind is inspect.Parameter.KEYWORD_ONLY and setup["num_features"].default is None
