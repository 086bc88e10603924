"""The stage frame of the jobs (jobs.runtime, over jobs.contract) on the configs the launcher renders for the
tiny recipe: no torch, no NeMo, fast."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from jobs.contract import ConfigError, Marker, StageConfig, StageExit, progress_line, seq_length, validate, write_complete
from jobs.runtime import frame, signals
from jobs.runtime.engine import check_engine
from tests.rendered import render_run, stage_configs


@pytest.fixture
def run(tmp_path):
    return render_run(tmp_path / "r")


@pytest.fixture
def configs(run):
    return stage_configs(run)


def test_rendered_configs_satisfy_the_schema(configs):
    assert {"data", "import", "finetune", "prune_depth", "prune_width", "distill_width", "report",
            "export"} == set(configs)
    for cfg in configs.values():
        validate(cfg)


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.update(schema_version=1), "schema_version"),
    (lambda c: c.update(surprise=1), "unknown key"),
    (lambda c: c.pop("markers_dir"), "markers_dir"),
    (lambda c: c["outputs"].update(model="relative/model"), "absolute"),
    (lambda c: c["train"].pop("lr"), "lr"),
    (lambda c: c["parallel"].update(tp=2), r"tp\*pp\*cp\*dp"),
    (lambda c: c["batch"].update(global_batch_size=5), "global_batch_size"),
    (lambda c: c["data"]["prefixes"].pop("validation"), "validation"),
    (lambda c: c["inputs"].pop("model"), "model"),
])
def test_finetune_config_errors(configs, mutate, message):
    cfg = configs["finetune"]
    mutate(cfg)
    with pytest.raises(ConfigError, match=message):
        validate(cfg)


def test_prune_needs_exactly_one_kind_of_target(configs):
    both = configs["prune_depth"]
    both["prune"]["target_ffn_hidden_size"] = 256
    with pytest.raises(ConfigError, match="either drop_layers or target"):
        validate(both)
    neither = configs["prune_width"]
    for key in ("target_ffn_hidden_size", "target_hidden_size"):
        neither["prune"].pop(key)
    with pytest.raises(ConfigError, match="either drop_layers or target"):
        validate(neither)


def test_width_prune_refuses_tensor_parallelism(configs):
    cfg = configs["prune_width"]
    cfg["parallel"].update(gpus_per_node=2, tp=2)
    with pytest.raises(ConfigError, match="tp=1"):
        validate(cfg)
    depth = configs["prune_depth"]
    depth["parallel"].update(gpus_per_node=2, tp=2)
    validate(depth)  # dropping layers works at any TP


def test_a_plan_for_fused_attention_is_refused_where_te_is_missing(configs):
    cfg = StageConfig.from_json(configs["finetune"])
    check_engine(cfg)  # unfused: megatron-core's local spec, which needs no TE
    fused = StageConfig.from_json({**configs["finetune"], "engine": {"attention": "fused", "precision": "32"}})
    with pytest.raises(ConfigError, match="engine.attention is 'fused'.*attention: unfused"):
        check_engine(fused)
    with pytest.raises(ConfigError, match="engine.attention"):
        validate({**configs["finetune"], "engine": {"attention": "flash", "precision": "32"}})


def _write(tmp_path, cfg):
    path = tmp_path / f"{cfg['stage']}.json"
    path.write_text(json.dumps(cfg))
    return ["--config", str(path)]


def test_run_stage_rejects_bad_config_wrong_kind_and_an_engine_it_lacks(tmp_path, configs):
    calls = []
    assert frame.run_stage("prune", calls.append, _write(tmp_path, configs["finetune"])) == StageExit.CONFIG
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert frame.run_stage("finetune", calls.append, ["--config", str(bad)]) == StageExit.CONFIG
    fused = {**configs["finetune"], "engine": {"attention": "fused", "precision": "32"}}
    assert frame.run_stage("finetune", calls.append, _write(tmp_path, fused)) == StageExit.CONFIG
    assert calls == []


def test_run_stage_marks_complete_once_and_is_idempotent(tmp_path, configs):
    cfg = configs["prune_width"]
    calls = []

    def body(c):
        calls.append(c.stage)
        os.makedirs(c.outputs["model"])

    argv = _write(tmp_path, cfg)
    assert frame.run_stage("prune", body, argv) == 0
    marker = json.loads((Path(cfg["markers_dir"]) / "prune_width.complete").read_text())
    assert marker["outputs"] == cfg["outputs"] and marker["finished_at"] > 0
    assert frame.run_stage("prune", body, argv) == 0
    assert calls == ["prune_width"]


def test_complete_needs_the_same_outputs_and_all_of_them(tmp_path, configs):
    cfg = StageConfig.from_json(configs["prune_width"], path=tmp_path / "x.json")
    os.makedirs(cfg.outputs["model"])
    write_complete(cfg.layout, cfg.stage, cfg.outputs)
    assert frame.is_complete(cfg)
    mode = os.stat(cfg.layout.marker(cfg.stage, Marker.COMPLETE)).st_mode
    assert stat.S_IMODE(mode) == 0o644
    os.rmdir(cfg.outputs["model"])
    assert not frame.is_complete(cfg)
    os.makedirs(cfg.outputs["model"])
    moved = StageConfig.from_json({**cfg.to_json(), "outputs": {"model": str(tmp_path / "elsewhere")}})
    assert not frame.is_complete(moved)


def test_write_complete_refuses_missing_outputs(tmp_path, configs):
    cfg = StageConfig.from_json(configs["finetune"], path=tmp_path / "x.json")
    with pytest.raises(RuntimeError, match="outputs are missing"):
        write_complete(cfg.layout, cfg.stage, cfg.outputs)
    assert not os.path.exists(cfg.layout.marker(cfg.stage, Marker.COMPLETE))


def test_progress_lines(capsys, monkeypatch):
    assert (progress_line(12, 30, train_loss=2.34512, now=5.0)
            == "MINITRON_PROGRESS step=12 total=30 train_loss=2.3451 time=5.0")
    assert (progress_line(19, 30, val_loss=2.0312, now=6.0)
            == "MINITRON_PROGRESS step=19 total=30 val_loss=2.0312 time=6.0")
    monkeypatch.setenv("RANK", "1")
    frame.report_progress(1, 2, train_loss=1.0)
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_PROCID", "0")
    frame.report_progress(2, 2, val_loss=0.5)
    assert capsys.readouterr().out.startswith("MINITRON_PROGRESS step=2 total=2 val_loss=0.5000 time=")


def test_rank_helpers_fall_back_to_slurm(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert (frame.global_rank(), frame.world_size(), frame.local_rank()) == (5, 8, 1)
    assert not frame.is_rank_zero()


def test_env_defaults(monkeypatch, configs):
    for name in ("TORCH_NCCL_AVOID_RECORD_STREAMS", "NCCL_NVLS_ENABLE", "CUDA_DEVICE_MAX_CONNECTIONS"):
        monkeypatch.delenv(name, raising=False)
    cfg = StageConfig.from_json(configs["finetune"])
    frame.apply_env_defaults(cfg)
    assert os.environ["TORCH_NCCL_AVOID_RECORD_STREAMS"] == "1" and os.environ["NCCL_NVLS_ENABLE"] == "0"
    assert "CUDA_DEVICE_MAX_CONNECTIONS" not in os.environ
    cfg.parallel["tp"] = 2
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "7")
    frame.apply_env_defaults(cfg)
    assert os.environ["CUDA_DEVICE_MAX_CONNECTIONS"] == "1" and os.environ["NCCL_NVLS_ENABLE"] == "7"


def test_the_continuation_signal_before_training_exits_for_requeue():
    assert signals.CONTINUE_SIGNUM == signal.SIGUSR1
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        signals.exit_on_signal()
        with pytest.raises(SystemExit) as exc:
            os.kill(os.getpid(), signal.SIGUSR1)
        assert exc.value.code == StageExit.CONTINUE
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_stage_may_shorten_its_sequences(configs):
    finetune = StageConfig.from_json(configs["finetune"])
    assert seq_length(finetune) == 128
    finetune.train["seq_length"] = 64
    prune = StageConfig.from_json(configs["prune_width"])
    prune.prune["seq_length"] = 32
    assert (seq_length(finetune), seq_length(prune)) == (64, 32)


def test_the_runtime_imports_without_torch():
    code = "import sys, jobs.runtime.frame, jobs.runtime.task; sys.exit('torch' in sys.modules or 'nemo' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(frame.__file__)) + "/..")
