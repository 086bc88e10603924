"""The stage frame of the jobs (jobs.common, over jobs.contract): no torch, no NeMo, fast."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys

import pytest

from jobs import common
from jobs.tools import tiny


@pytest.fixture
def configs(tmp_path):
    return tiny.stage_configs(tmp_path / "run")


def test_tiny_configs_satisfy_the_schema(configs):
    for cfg in configs.values():
        common.validate(cfg)


@pytest.mark.parametrize("mutate, message", [
    (lambda c: c.update(schema_version=1), "schema_version"),
    (lambda c: c.update(surprise=1), "unknown key"),
    (lambda c: c.pop("markers_dir"), "markers_dir"),
    (lambda c: c["outputs"].update(model="relative/model"), "absolute"),
    (lambda c: c["train"].pop("lr"), "lr"),
    (lambda c: c["parallel"].update(tp=2), r"tp\*pp\*cp\*dp"),
    (lambda c: c["batch"].update(global_batch_size=6), "global_batch_size"),
    (lambda c: c["data"]["prefixes"].pop("validation"), "validation"),
    (lambda c: c["inputs"].pop("model"), "model"),
])
def test_finetune_config_errors(configs, mutate, message):
    cfg = configs["finetune"]
    mutate(cfg)
    with pytest.raises(common.ConfigError, match=message):
        common.validate(cfg)


def test_prune_needs_exactly_one_kind_of_target(configs):
    both = configs["prune_depth"]
    both["prune"]["target_ffn_hidden_size"] = 256
    with pytest.raises(common.ConfigError, match="either drop_layers or target"):
        common.validate(both)
    neither = configs["prune_width"]
    for key in ("target_ffn_hidden_size", "target_hidden_size"):
        neither["prune"].pop(key)
    with pytest.raises(common.ConfigError, match="either drop_layers or target"):
        common.validate(neither)


def test_width_prune_refuses_tensor_parallelism(configs):
    cfg = configs["prune_width"]
    cfg["parallel"].update(gpus_per_node=2, tp=2)
    with pytest.raises(common.ConfigError, match="tp=1"):
        common.validate(cfg)
    depth = configs["prune_depth"]
    depth["parallel"].update(gpus_per_node=2, tp=2)
    common.validate(depth)  # dropping layers works at any TP


def test_import_of_a_nemo_checkpoint_is_a_planning_error(configs):
    cfg = configs["import"]
    cfg["model"]["source"] = "nemo:/ckpt/teacher"
    with pytest.raises(common.ConfigError, match="skip the import"):
        common.validate(cfg)


def test_export_needs_an_output_per_student(configs):
    cfg = configs["export"]
    cfg["outputs"].pop("width")
    with pytest.raises(common.ConfigError, match="width"):
        common.validate(cfg)


def _write(tmp_path, cfg):
    path = tmp_path / f"{cfg['stage']}.json"
    path.write_text(json.dumps(cfg))
    return ["--config", str(path)]


def test_run_stage_rejects_bad_config_and_wrong_kind(tmp_path, configs):
    calls = []
    assert common.run_stage("prune", calls.append, _write(tmp_path, configs["finetune"])) == common.EXIT_CONFIG
    bad = tmp_path / "bad.json"
    bad.write_text("{not json")
    assert common.run_stage("finetune", calls.append, ["--config", str(bad)]) == common.EXIT_CONFIG
    assert calls == []


def test_run_stage_marks_complete_once_and_is_idempotent(tmp_path, configs):
    cfg = configs["prune_width"]
    calls = []

    def body(c):
        calls.append(c.stage)
        os.makedirs(c.outputs["model"])

    argv = _write(tmp_path, cfg)
    assert common.run_stage("prune", body, argv) == 0
    marker = json.loads((tmp_path / "run" / "markers" / "prune_width.complete").read_text())
    assert marker["outputs"] == cfg["outputs"] and marker["finished_at"] > 0
    assert common.run_stage("prune", body, argv) == 0
    assert calls == ["prune_width"]


def test_complete_needs_the_same_outputs_and_all_of_them(tmp_path, configs):
    cfg = common.StageConfig.from_json(configs["prune_width"], path=tmp_path / "x.json")
    os.makedirs(cfg.outputs["model"])
    common.write_complete(cfg)
    assert common.is_complete(cfg)
    mode = common.marker_path(cfg, "complete").stat().st_mode
    assert stat.S_IMODE(mode) == 0o644
    os.rmdir(cfg.outputs["model"])
    assert not common.is_complete(cfg)
    os.makedirs(cfg.outputs["model"])
    moved = common.StageConfig.from_json({**cfg.to_json(), "outputs": {"model": str(tmp_path / "elsewhere")}})
    assert not common.is_complete(moved)


def test_write_complete_refuses_missing_outputs(tmp_path, configs):
    cfg = common.StageConfig.from_json(configs["finetune"], path=tmp_path / "x.json")
    with pytest.raises(RuntimeError, match="outputs are missing"):
        common.write_complete(cfg)
    assert not common.marker_path(cfg, "complete").exists()


def test_progress_lines(capsys, monkeypatch):
    assert (common.progress_line(12, 30, train_loss=2.34512, now=5.0)
            == "MINITRON_PROGRESS step=12 total=30 train_loss=2.3451 time=5.0")
    assert (common.progress_line(19, 30, val_loss=2.0312, now=6.0)
            == "MINITRON_PROGRESS step=19 total=30 val_loss=2.0312 time=6.0")
    monkeypatch.setenv("RANK", "1")
    common.report_progress(1, 2, train_loss=1.0)
    monkeypatch.delenv("RANK")
    monkeypatch.setenv("SLURM_PROCID", "0")
    common.report_progress(2, 2, val_loss=0.5)
    assert capsys.readouterr().out.startswith("MINITRON_PROGRESS step=2 total=2 val_loss=0.5000 time=")


def test_rank_helpers_fall_back_to_slurm(monkeypatch):
    for name in ("RANK", "WORLD_SIZE", "LOCAL_RANK"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("SLURM_PROCID", "5")
    monkeypatch.setenv("SLURM_NTASKS", "8")
    monkeypatch.setenv("SLURM_LOCALID", "1")
    assert (common.global_rank(), common.world_size(), common.local_rank()) == (5, 8, 1)
    assert not common.is_rank_zero()


def test_env_defaults(monkeypatch, configs):
    for name in ("TORCH_NCCL_AVOID_RECORD_STREAMS", "NCCL_NVLS_ENABLE", "CUDA_DEVICE_MAX_CONNECTIONS"):
        monkeypatch.delenv(name, raising=False)
    cfg = common.StageConfig.from_json(configs["finetune"])
    common.apply_env_defaults(cfg)
    assert os.environ["TORCH_NCCL_AVOID_RECORD_STREAMS"] == "1" and os.environ["NCCL_NVLS_ENABLE"] == "0"
    assert "CUDA_DEVICE_MAX_CONNECTIONS" not in os.environ
    cfg.parallel["tp"] = 2
    monkeypatch.setenv("NCCL_NVLS_ENABLE", "7")
    common.apply_env_defaults(cfg)
    assert os.environ["CUDA_DEVICE_MAX_CONNECTIONS"] == "1" and os.environ["NCCL_NVLS_ENABLE"] == "7"


def test_sigusr1_before_training_exits_for_requeue():
    previous = signal.getsignal(signal.SIGUSR1)
    try:
        common.install_requeue_handler()
        with pytest.raises(SystemExit) as exc:
            os.kill(os.getpid(), signal.SIGUSR1)
        assert exc.value.code == common.EXIT_REQUEUE
    finally:
        signal.signal(signal.SIGUSR1, previous)


def test_a_stage_may_shorten_its_sequences(configs):
    finetune = common.StageConfig.from_json(configs["finetune"])
    assert common.seq_length(finetune) == 128
    finetune.train["seq_length"] = 64
    prune = common.StageConfig.from_json(configs["prune_width"])
    prune.prune["seq_length"] = 32
    assert (common.seq_length(finetune), common.seq_length(prune)) == (64, 32)


def test_common_imports_without_torch():
    code = "import sys, jobs.common; sys.exit('torch' in sys.modules or 'nemo' in sys.modules)"
    subprocess.run([sys.executable, "-c", code], check=True, cwd=os.path.dirname(os.path.dirname(common.__file__)))
