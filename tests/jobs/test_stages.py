"""Every NeMo stage for real on the CPU (tiny recipe), plus each stage's NeMo objects checked
against a larger stage config. Depth pruning is only built here: megatron's layer drop all-gathers
a 0-d tensor, which gloo rejects (it ran on the GPU device)."""

from __future__ import annotations

import contextlib
import importlib
import io
import json
import logging
import os
import re
import signal
import struct
from pathlib import Path

import pytest

from jobs.contract import BY_NAME, Marker, StageConfig, StageExit, write_stage_config
from jobs.runtime.frame import is_complete
from tests.rendered import render_run, stage_configs

pytestmark = pytest.mark.nemo

PROGRESS = re.compile(r"^MINITRON_PROGRESS step=(\d+) total=(\d+)(?: train_loss=(\S+))?(?: val_loss=(\S+))? time=\S+$",
                      re.M)
CPU_STAGES = ("data", "import", "finetune", "prune_width", "distill_width", "report", "export")


def module_for(cfg: dict):
    return importlib.import_module(BY_NAME[cfg["kind"]].entrypoint)


class Pipeline:
    """The tiny recipe's CPU stages as the launcher renders them, each run once (in order, on demand) the way
    the launcher calls them."""

    def __init__(self, root: Path):
        self.root = root
        self.run_ = render_run(root)
        self.configs = stage_configs(self.run_)
        self.paths = {name: Path(self.run_.layout.stage_config(name)) for name in self.configs}
        self.stdout: dict[str, str] = {}
        self.cwd = root / "cwd"  # the launcher runs stages from the run's code snapshot: nothing may land there
        self.cwd.mkdir()

    def add(self, name: str, cfg: dict) -> Path:
        """Another stage config beside the rendered ones (a variant of one of them), written through the contract."""
        self.configs[name] = cfg
        self.paths[name] = Path(self.run_.layout.stage_config(name))
        write_stage_config(self.paths[name], StageConfig.from_json(cfg))
        return self.paths[name]

    def run(self, stage: str) -> dict:
        for name in CPU_STAGES[: CPU_STAGES.index(stage) + 1]:
            if name not in self.stdout:
                self.stdout[name] = self.call(name)
        return self.configs[stage]

    def call(self, stage: str) -> str:
        buf = io.StringIO()
        with contextlib.redirect_stdout(buf), contextlib.chdir(self.cwd):
            rc = module_for(self.configs[stage]).main(["--config", str(self.paths[stage])])
        assert rc == 0, f"stage {stage} exited {rc}"
        return buf.getvalue()

    def progress(self, stage: str) -> tuple[dict, dict]:
        train, val = {}, {}
        for step, _total, train_loss, val_loss in PROGRESS.findall(self.stdout[stage]):
            (train if train_loss else val)[int(step)] = float(train_loss or val_loss)
        return train, val


@pytest.fixture(scope="session")
def pipeline(nemo_cpu, tmp_path_factory):
    return Pipeline(tmp_path_factory.mktemp("tiny"))


def saved_sizes(ckpt: str) -> dict:
    """num_layers/hidden/ffn from the saved context, and from the weight shapes."""
    from nemo.lightning import io as nemo_io
    from torch.distributed.checkpoint import FileSystemReader

    config = nemo_io.load_context(Path(ckpt) / "context", subpath="model.config")
    meta = FileSystemReader(str(Path(ckpt) / "weights")).read_metadata().state_dict_metadata
    fc2 = meta["module.decoder.layers.mlp.linear_fc2.weight"].size
    return {"config": (config.num_layers, config.hidden_size, config.ffn_hidden_size),
            "weights": (fc2[0], meta["module.embedding.word_embeddings.weight"].size[1], fc2[2])}


def test_finetune_trains_resumably_and_links_the_final_model(pipeline):
    cfg = pipeline.run("finetune")
    train, val = pipeline.progress("finetune")
    assert sorted(train) == list(range(1, 7)) and sorted(val) == [2, 4, 6]
    assert val[6] < val[2] and train[6] < train[1]
    final = Path(cfg["outputs"]["model"])
    assert final.is_symlink() and final.resolve().name.endswith("-last") and "step=" in final.resolve().name
    assert (final / "weights" / "metadata.json").exists() and (final / "context" / "io.json").exists()
    assert list(Path(cfg["outputs"]["log_dir"], "tb_logs").glob("events.out.tfevents.*"))
    assert is_complete(StageConfig.from_json(cfg))


def test_width_prune_saves_the_planned_sizes(pipeline):
    cfg = pipeline.run("prune_width")
    planned = (4, cfg["prune"]["target_hidden_size"], cfg["prune"]["target_ffn_hidden_size"])
    assert saved_sizes(cfg["outputs"]["model"]) == {"config": planned, "weights": planned}


def test_distill_trains_the_student_and_saves_it_as_itself(pipeline):
    from nemo.collections import llm
    from nemo.lightning import io as nemo_io

    cfg = pipeline.run("distill_width")
    train, val = pipeline.progress("distill_width")
    assert sorted(train) == [1, 2, 3] and sorted(val) == [1, 2, 3]
    student = nemo_io.load_context(Path(cfg["outputs"]["model"]) / "context", subpath="model")
    assert type(student) is llm.LlamaModel and student.config.hidden_size == 192
    assert saved_sizes(cfg["outputs"]["model"])["weights"] == (4, 192, 512)


def test_report_measures_every_model_on_the_same_batches(pipeline):
    cfg = pipeline.run("report")
    summary = json.loads(Path(cfg["outputs"]["summary_json"]).read_text())
    losses = summary["val_loss"]
    assert list(losses) == ["teacher/before_finetune", "teacher/after_finetune", "width/after_prune",
                            "width/after_distill"]
    assert losses["teacher/after_finetune"] < losses["teacher/before_finetune"]
    assert losses["width/after_distill"] < losses["width/after_prune"]
    # Same validation batches as the trainers' last validation: identical numbers.
    assert losses["teacher/after_finetune"] == pytest.approx(pipeline.progress("finetune")[1][6], abs=2e-4)
    assert losses["width/after_distill"] == pytest.approx(pipeline.progress("distill_width")[1][3], abs=2e-4)
    assert [s for s, _ in summary["curves"]["teacher"]["val_loss"]] == [2, 4, 6]
    assert list(summary["curves"]) == ["teacher", "width"]
    assert Path(cfg["outputs"]["plot"]).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert "| width | after distill |" in Path(cfg["outputs"]["summary_md"]).read_text()


def test_export_writes_a_hf_model_with_the_same_loss(pipeline):
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    cfg = pipeline.run("export")
    hf_dir = cfg["outputs"]["width"]
    model = AutoModelForCausalLM.from_pretrained(hf_dir, dtype=torch.float32)
    tok = AutoTokenizer.from_pretrained(hf_dir)
    assert (model.config.hidden_size, model.config.intermediate_size, model.config.num_hidden_layers) == (192, 512, 4)
    prefixes = pipeline.configs["report"]["data"]["prefixes"]
    texts = [json.loads(line)["text"] for line in open(Path(prefixes["validation"]).parent / "validation.jsonl")]
    ids = [i for t in texts for i in tok.encode(t, add_special_tokens=False) + [tok.eos_token_id]]
    batch = torch.tensor(ids[: 128 * 16]).view(16, 128)
    with torch.no_grad():
        hf_loss = model(batch, labels=batch).loss.item()
    nemo_loss = json.loads(Path(pipeline.configs["report"]["outputs"]["summary_json"]).read_text())["val_loss"]
    assert hf_loss == pytest.approx(nemo_loss["width/after_distill"], abs=0.15)


def test_export_of_a_bf16_checkpoint_without_te(pipeline, tmp_path):
    """Regression (GPU device): the local spec's torch RMSNorm loads bf16 weights as fp32."""
    import torch
    from transformers import AutoModelForCausalLM

    pipeline.run("data")
    bf16 = {"attention": "unfused", "precision": "bf16-mixed"}
    stage = dict(pipeline.configs["import"], stage="import_bf16", engine=bf16,
                 outputs={"model": str(tmp_path / "bf16" / "model")})
    export = dict(pipeline.configs["export"], stage="export_bf16", engine=bf16,
                  inputs={"bf16": stage["outputs"]["model"]}, outputs={"bf16": str(tmp_path / "hf")})
    pipeline.add("import_bf16", stage)
    pipeline.add("export_bf16", export)
    pipeline.call("import_bf16")
    pipeline.call("export_bf16")
    model = AutoModelForCausalLM.from_pretrained(export["outputs"]["bf16"], dtype="auto")
    assert {p.dtype for p in model.parameters()} == {torch.bfloat16}


def test_sigusr1_saves_exits_85_and_the_rerun_resumes(pipeline, monkeypatch, tmp_path):
    """...and the W&B (offline) and MLflow (file store) runs the stage logs to, as the profile's `tracking` asks:
    one MLflow run across both attempts, a W&B run per attempt (offline W&B cannot resume), holding the losses; no network (WANDB_MODE=offline) and no API key
    written anywhere."""
    from jobs.stages import nemo_parts

    base = pipeline.run("finetune")
    cfg = json.loads(json.dumps(base))
    work = Path(cfg["work_dir"]) / "finetune_requeue"
    cfg.update(stage="finetune_requeue", outputs={"model": str(work / "model"), "log_dir": str(work / "logs")})
    cfg["train"].update(steps=4, ckpt_every_n_steps=100, val_check_interval=4)
    tracked = render_run(tmp_path / "tracked", tracking={
        "wandb": {"project": "minitron-test", "mode": "offline"},
        "mlflow": {"tracking_uri": f"file://{tmp_path}/mlruns", "experiment": "minitron-test"}})
    cfg["tracking"] = stage_configs(tracked)["finetune"]["tracking"]  # as the launcher renders it
    cfg["tracking"]["run_name"] = f"{cfg['run_id']}/finetune_requeue"
    cfg["tracking"]["wandb"]["id"] = f"{cfg['run_id']}-finetune_requeue"
    path = pipeline.add("finetune_requeue", cfg)
    monkeypatch.setenv("WANDB_MODE", "offline")  # and nothing to reach: no network in CI, none needed
    monkeypatch.setenv("WANDB_API_KEY", SECRET_KEY)

    progress_end = nemo_parts.ProgressCallback.on_train_batch_end

    def signal_at_step_2(self, trainer, *args):
        progress_end(self, trainer, *args)
        if trainer.global_step == 2:
            os.kill(os.getpid(), signal.SIGUSR1)  # what Slurm sends before the time limit

    monkeypatch.setattr(nemo_parts.ProgressCallback, "on_train_batch_end", signal_at_step_2)
    with pytest.raises(SystemExit) as exc:
        pipeline.call("finetune_requeue")
    assert exc.value.code == StageExit.CONTINUE
    saved = [p.name for p in (work / "logs" / "checkpoints").glob("*-last")]
    # A checkpoint after the 2nd optimizer step (2 x GBS 4 samples), though none was due before step 100.
    assert len(saved) == 1 and "consumed_samples=8.0" in saved[0]
    config = StageConfig.from_json(cfg, path=path)
    assert not is_complete(config)
    # the continue marker: the batch script requeues on it even when srun/torchrun report another code
    assert Path(config.layout.marker(config.stage, Marker.CONTINUE)).exists()

    monkeypatch.setattr(nemo_parts.ProgressCallback, "on_train_batch_end", progress_end)
    out = pipeline.call("finetune_requeue")
    steps = sorted({int(s) for s, *_ in PROGRESS.findall(out)})
    assert steps == [3, 4]  # resumed after the saved step, not from scratch
    assert is_complete(config)

    train = dict(PROGRESS_TRAIN.findall(out))  # the second attempt's own progress lines
    mlflow_steps, wandb_steps = mlflow_losses(tmp_path / "mlruns", cfg["tracking"]["run_name"]), wandb_losses(work)
    # Lightning's x-axis counts the optimizer steps before the batch (0-based); the batch the signal came on is in
    # the checkpoint but not logged (NeMo's PreemptionCallback exits before Lightning logs it; TensorBoard too)
    assert sorted(mlflow_steps) == sorted(wandb_steps) == [0, 2, 3], (mlflow_steps, wandb_steps)
    assert mlflow_steps[3] == pytest.approx(wandb_steps[3]) == pytest.approx(float(train["4"]), rel=1e-4)
    leaked = [str(p) for root in (work, tmp_path / "mlruns") for p in root.rglob("*")
              if p.is_file() and SECRET_KEY.encode() in p.read_bytes()]
    assert not leaked


SECRET_KEY = "0123456789abcdef0123456789abcdef01234567"  # the shape of a W&B API key; never a real one
PROGRESS_TRAIN = re.compile(r"^MINITRON_PROGRESS step=(\d+) total=\d+ train_loss=(\S+)", re.M)


def mlflow_losses(store: Path, run_name: str) -> dict[int, float]:
    """The training loss by step of the one MLflow run named `run_name`, read back through MLflow's client."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(f"file://{store}")
    experiment = client.get_experiment_by_name("minitron-test")
    runs = client.search_runs([experiment.experiment_id])
    assert [(r.info.run_name, r.info.status) for r in runs] == [(run_name, "FINISHED")]
    return {m.step: m.value for m in client.get_metric_history(runs[0].info.run_id, "reduced_train_loss")}


def wandb_losses(work: Path) -> dict[int, float]:
    """The training loss by trainer step in the W&B offline runs of the stage, one per attempt. wandb 0.31 keeps an offline run's history only in its `.wandb` transaction log: LevelDB's log
    format (32 KiB blocks of CRC, length, type, data) after a 7-byte W&B header, each record a protobuf Record."""
    from wandb.proto import wandb_internal_pb2

    runs = sorted((work / "logs" / "wandb").glob("offline-run-*/run-*.wandb"))
    first = runs[0].name[len("run-"):-len(".wandb")]  # offline W&B cannot resume: one run per attempt, one group
    assert [p.name for p in runs] == [f"run-{first}.wandb", f"run-{first}-a2.wandb"], runs
    losses = {}
    for path in runs:
        data, pos, pending = path.read_bytes(), 7, b""
        assert data[:4] == b":W&B"
        while pos + 7 <= len(data):
            room = 32768 - pos % 32768
            _crc, length, kind = struct.unpack("<IHB", data[pos:pos + 7]) if room >= 7 else (0, 0, 0)
            if kind == 0 and length == 0:  # the zero padding at a block's end
                pos += room
                continue
            pending += data[pos + 7:pos + 7 + length]
            pos += 7 + length
            if kind in (1, 4):  # FULL, or LAST of a record split over blocks
                record = wandb_internal_pb2.Record.FromString(pending)
                pending = b""
                items = {i.key or "/".join(i.nested_key): json.loads(i.value_json) for i in record.history.item}
                if "reduced_train_loss" in items:
                    losses[int(items["trainer/global_step"])] = items["reduced_train_loss"]
    return losses


def test_stages_write_nothing_into_the_working_directory(pipeline):
    pipeline.run("export")
    assert list(pipeline.cwd.iterdir()) == []


def planned(cfg: dict, **parallel) -> dict:
    cfg = json.loads(json.dumps(cfg))
    cfg["parallel"].update(parallel)
    return cfg


def test_finetune_objects_follow_the_plan(pipeline):
    from nemo.lightning.pytorch.callbacks import PreemptionCallback

    from jobs.stages import finetune, nemo_parts

    pipeline.run("import")
    raw = planned(pipeline.configs["finetune"], nodes=2, gpus_per_node=4, tp=2, pp=2, cp=1, dp=2,
                  sequence_parallel=True)
    raw["batch"].update(micro_batch_size=2, global_batch_size=16)
    raw["train"].update(steps=30, lr=1e-4, min_lr=1e-5, warmup_steps=2, val_check_interval=10,
                        limit_val_batches=5, ckpt_every_n_steps=10, weight_decay=0.1, adam_beta2=0.95, clip_grad=1.0,
                        seq_length=64, recompute="full")
    plan = finetune.build(StageConfig.from_json(raw))
    s = plan.trainer.strategy
    assert (s.tensor_model_parallel_size, s.pipeline_model_parallel_size, s.context_parallel_size,
            s.sequence_parallel) == (2, 2, 1, True)
    assert s.ddp_config.use_distributed_optimizer and s.async_save is False
    t = plan.trainer
    assert (t.max_steps, t.val_check_interval, t.limit_val_batches, t.num_nodes, t.num_devices) == (30, 10, 5, 2, 4)
    assert (plan.data.micro_batch_size, plan.data.global_batch_size, plan.data.seq_length) == (2, 16, 64)
    assert plan.data.__io__.paths == {r: [p] for r, p in raw["data"]["prefixes"].items()}
    assert plan.data.create_attention_mask is True  # the plan's engine is unfused: megatron-core's local spec
    assert plan.model.config.seq_length == 64 and plan.model.config.apply_rope_fusion is False
    assert plan.model.config.transformer_layer_spec is nemo_parts.unfused_overrides()["transformer_layer_spec"]
    assert (plan.model.config.recompute_granularity, plan.model.config.recompute_method) == ("full", "uniform")
    o = plan.optim.config
    assert (o.lr, o.min_lr, o.weight_decay, o.adam_beta2, o.clip_grad, o.use_distributed_optimizer) == \
        (1e-4, 1e-5, 0.1, 0.95, 1.0, True)
    sched = plan.optim.lr_scheduler
    assert (sched.max_steps, sched.warmup_steps, sched.min_lr) == (30, 2, 1e-5)
    assert plan.log.explicit_log_dir == raw["outputs"]["log_dir"] and plan.log.ckpt._every_n_train_steps == 10
    assert plan.resume.restore_config.path == raw["inputs"]["model"] and plan.resume.resume_if_exists
    progress = [c for c in t.callbacks if isinstance(c, nemo_parts.ProgressCallback)]
    assert progress[0].total_steps == 30
    assert [c.sig for c in t.callbacks if isinstance(c, PreemptionCallback)] == [signal.SIGUSR1]


@pytest.mark.parametrize("stage", ["prune_depth", "prune_width"])
def test_prune_objects_follow_the_plan(pipeline, stage):
    from jobs.stages import prune

    pipeline.run("finetune")
    raw = planned(pipeline.configs[stage], gpus_per_node=4, pp=4, dp=1)
    plan = prune.build(StageConfig.from_json(raw))
    s = plan.trainer.strategy
    assert (s.tensor_model_parallel_size, s.pipeline_model_parallel_size, s.sequence_parallel) == (1, 4, False)
    steps = raw["prune"]["num_train_samples"] // raw["batch"]["micro_batch_size"]
    assert (plan.trainer.max_steps, plan.trainer.limit_val_batches, plan.trainer.num_devices) == (steps, steps, 4)
    assert plan.data.global_batch_size == plan.data.micro_batch_size == raw["batch"]["micro_batch_size"]
    if stage == "prune_depth":
        assert plan.pruning_config.drop_layers == [2, 3] and plan.pruning_config.target_hidden_size is None
    else:
        assert (plan.pruning_config.target_hidden_size, plan.pruning_config.target_ffn_hidden_size) == (192, 512)
        assert plan.pruning_config.drop_layers is None


def test_distill_objects_follow_the_plan(pipeline):
    import yaml
    from nemo.collections.llm.modelopt import DistillationGPTModel

    from jobs.stages import distill

    pipeline.run("prune_width")
    raw = planned(pipeline.configs["distill_width"], gpus_per_node=2, tp=2, dp=1, sequence_parallel=True)
    raw["distill"].update(kd_loss_scale=2.0, skip_lm_loss=False)
    assert raw["student_shape"]["hidden_size"] == 192
    raw["student_shape"].update(hidden_size=256)  # the teacher's width: a miswired student
    with pytest.raises(ValueError, match="hidden_size=192, plan says 256"):
        distill.build(StageConfig.from_json(raw))
    raw["student_shape"].update(hidden_size=192)
    plan = distill.build(StageConfig.from_json(raw))
    assert isinstance(plan.model, DistillationGPTModel)
    assert plan.model._teacher_ckpt_path == raw["inputs"]["teacher"]
    assert plan.model.config.hidden_size == 192 and plan.model._teacher_config.hidden_size == 256
    kd = yaml.safe_load(Path(plan.model._distillation_config_path).read_text())
    assert kd == {"logit_layers": ["output_layer", "output_layer"], "intermediate_layer_pairs": [],
                  "skip_lm_loss": False, "kd_loss_scale": 2.0}
    assert plan.resume.restore_config.path == raw["inputs"]["student"]
    s = plan.trainer.strategy
    assert (s.tensor_model_parallel_size, s.sequence_parallel) == (2, True)
    assert not plan.optim.config.use_distributed_optimizer  # one data-parallel rank: nothing to shard


@pytest.fixture
def mcore_logger_silenced():
    """megatron-core's checkpoint-validation logger as other code may leave it: NeMo's logger setup copies its
    level (ERROR) onto megatron.core, and a `logging.config.dictConfig` (import-linter's, in this very suite)
    disables every logger that exists by then."""
    mcore = logging.getLogger("megatron.core")
    validation = logging.getLogger("megatron.core.dist_checkpointing.validation")
    saved = mcore.level, validation.level, validation.disabled
    mcore.setLevel(logging.ERROR)
    validation.setLevel(logging.NOTSET)
    validation.disabled = True
    yield
    mcore.setLevel(saved[0])
    validation.setLevel(saved[1])
    validation.disabled = saved[2]


def test_checkpoint_loads_allow_only_te_extra_state_to_be_absent(mcore_logger_silenced):
    """Every stage loads with NeMo's legacy_ckpt semantics (LOG_ALL): a TE module's `_extra_state` missing
    from a ModelOpt-spec checkpoint is fine (the GPU failure), any other missing tensor still fails."""
    from megatron.core.dist_checkpointing.validation import StrictHandling, maybe_report_missing_and_unexpected_keys

    from jobs.stages import nemo_parts

    assert nemo_parts.ckpt_load_strictness() is StrictHandling.LOG_ALL
    extra = {"module.decoder.final_layernorm._extra_state/shard_0_1",
             "module.decoder.layers.self_attention.linear_qkv._extra_state"}
    maybe_report_missing_and_unexpected_keys({"optimizer.state.exp_avg"}, extra, raise_error=False)
    with pytest.raises(RuntimeError, match=r"lacks 1 tensor.*linear_fc1\.weight"):
        maybe_report_missing_and_unexpected_keys(set(), extra | {"module.decoder.layers.mlp.linear_fc1.weight"},
                                                 raise_error=False)
