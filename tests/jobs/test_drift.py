"""The API drift points between the NeMo 2 stacks (jobs/stages/drift.py), each on the canned signatures of every
release row (read from the released wheels: NeMo 2.5.0-2.7.3, megatron-core 0.14.0-0.16.1), plus the adapter
on the installed stack. No NeMo import: these run anywhere."""

from __future__ import annotations

import sys
import types

import pytest

from jobs.stages import drift


# megatron.core.optimizer.get_megatron_optimizer, as each release defines it
def mcore_014(config, model_chunks, no_weight_decay_cond=None, scale_lr_cond=None, lr_mult=1.0,
              use_gloo_process_groups=True, default_skip_embedding_weight_decay=False, grad_comm_pgs=None,
              model_comm_pgs=None):
    return ("0.14", config, model_chunks)


def mcore_015(config, model_chunks, no_weight_decay_cond=None, scale_lr_cond=None, lr_mult=1.0,
              use_gloo_process_groups=True, default_skip_embedding_weight_decay=False, pg_collection=None):
    return ("0.15", config, model_chunks)


def mcore_016(config, model_chunks, config_overrides=None, use_gloo_process_groups=True, pg_collection=None,
              dump_param_to_param_group_map=None):
    return ("0.16", config, model_chunks, config_overrides, use_gloo_process_groups)


def neither(config, model_chunks, use_gloo_process_groups=True):
    return None


ROWS = {"25.09 (megatron-core 0.14.0)": (mcore_014, drift.NATIVE), "25.11 (0.15.0)": (mcore_015, drift.NATIVE),
        "ours (0.15.3)": (mcore_015, drift.NATIVE), "26.02 (0.16.0)": (mcore_016, drift.ADAPTED),
        "newest pip (0.16.1)": (mcore_016, drift.ADAPTED), "a future one": (neither, drift.INCOMPATIBLE),
        "**kwargs": (lambda config, model_chunks, **kwargs: None, drift.NATIVE)}


@pytest.mark.parametrize("row", ROWS)
def test_the_optimizer_call_of_every_release(row):
    function, expected = ROWS[row]
    assert drift.optimizer_call(function) == expected


@pytest.fixture
def fake_mcore(monkeypatch):
    """megatron.core.optimizer as a module of our own, so the adapter can be installed and undone."""
    module = types.ModuleType("megatron.core.optimizer")
    for name in ("megatron", "megatron.core"):
        monkeypatch.setitem(sys.modules, name, types.ModuleType(name))
    monkeypatch.setitem(sys.modules, "megatron.core.optimizer", module)
    sys.modules["megatron.core"].optimizer = module
    return module


def nemo_s_call(get_megatron_optimizer):
    """How NeMo 2.5.0-2.7.3 call it (nemo/lightning/_strategy_lib.py::setup_megatron_optimizer), with the values
    jobs.stages.nemo_parts.optimizer leaves at their defaults."""
    return get_megatron_optimizer("cfg", ["ddp"], no_weight_decay_cond=None, scale_lr_cond=None, lr_mult=1.0,
                                  use_gloo_process_groups=False)


def test_on_megatron_core_016_nemo_s_call_reaches_config_overrides_defaults(fake_mcore):
    fake_mcore.get_megatron_optimizer = mcore_016
    with pytest.raises(TypeError, match="no_weight_decay_cond"):
        nemo_s_call(fake_mcore.get_megatron_optimizer)  # what the 26.02 stack did before
    assert drift.adapt_optimizer_call() == drift.ADAPTED
    assert nemo_s_call(fake_mcore.get_megatron_optimizer) == ("0.16", "cfg", ["ddp"], None, False)
    assert drift.adapt_optimizer_call() == drift.ADAPTED  # once only
    with pytest.raises(RuntimeError, match="only NeMo's defaults"):
        fake_mcore.get_megatron_optimizer("cfg", ["ddp"], lr_mult=2.0)


def test_on_older_megatron_core_nothing_changes_and_an_unknown_one_is_refused(fake_mcore):
    fake_mcore.get_megatron_optimizer = mcore_015
    assert drift.adapt_optimizer_call() == drift.NATIVE and fake_mcore.get_megatron_optimizer is mcore_015
    fake_mcore.get_megatron_optimizer = neither
    with pytest.raises(RuntimeError, match="neither NeMo's"):
        drift.adapt_optimizer_call()


def test_the_drift_module_imports_only_the_standard_library():
    import subprocess

    code = "import sys, jobs.stages.drift; sys.exit(bool({'torch', 'nemo', 'megatron'} & set(sys.modules)))"
    subprocess.run([sys.executable, "-c", code], check=True)


@pytest.fixture
def fake_strategies(monkeypatch, tmp_path):
    """megatron.core.dist_checkpointing.strategies as a package in tmp_path, as megatron-core 0.16 (without
    tensorstore.py) or 0.15 (with it) lay it out."""
    parts = drift.ZARR_STRATEGY.split(".")[:-1]
    for depth in range(1, len(parts) + 1):
        package = types.ModuleType(".".join(parts[:depth]))
        package.__path__ = [str(tmp_path)] if depth == len(parts) else []
        monkeypatch.setitem(sys.modules, package.__name__, package)
    monkeypatch.delitem(sys.modules, drift.ZARR_STRATEGY, raising=False)
    monkeypatch.setattr(sys, "meta_path", list(sys.meta_path))
    drift.install_stand_ins()
    return tmp_path


def test_a_checkpoint_strategy_megatron_core_removed_is_stood_in_for(fake_strategies):
    from megatron.core.dist_checkpointing.strategies import tensorstore  # what NeMo 2.5-2.7.x's checkpoint IO does

    assert "stand-in" in tensorstore.__doc__
    with pytest.raises(RuntimeError, match="zarr checkpoints need"):
        tensorstore.TensorStoreLoadShardedStrategy(load_directly_on_device=True)


def test_a_checkpoint_strategy_megatron_core_has_is_its_own(fake_strategies):
    (fake_strategies / "tensorstore.py").write_text("TensorStoreLoadShardedStrategy = 'the real one'\n")
    from megatron.core.dist_checkpointing.strategies import tensorstore

    assert tensorstore.TensorStoreLoadShardedStrategy == "the real one"
    drift.install_stand_ins()
    assert sum(isinstance(f, drift._StandInForRemovedModule) for f in sys.meta_path) == 1
