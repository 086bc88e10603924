"""Report stage: validation loss of the teacher before/after fine-tuning and of each student after
pruning/after distillation, all measured here with `llm.validate` on the same validation batches
(`report.limit_val_batches` global batches of the validation role); the val/train loss curves the
trainers logged, read from their TensorBoard event files; a PNG of val-loss curves per trained
model (the tutorial's Figure 1, with the measured starting point at step 0) and a summary in
markdown and JSON at outputs.plot / outputs.summary_md / outputs.summary_json.

Every checkpoint and log directory comes from the stage config's inputs (launcher/rendering/stageconfig.py
fills them from the stages that made them): `teacher`, `finetune`, `finetune_logs`, and per student
`<name>/pruned`, `<name>/distilled`, `<name>/distill_logs`. Curves and plot panels are keyed by the
trained model: `teacher` and each student's name.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path

from jobs.contract import StageConfig, seq_length, write_json_atomic
from jobs.runtime.frame import is_rank_zero, run_stage
from jobs.stages import nemo_parts

log = logging.getLogger("jobs")

EVAL_SEED = 1234
TAGS = {"val_loss": "val_loss", "train_loss": "reduced_train_loss"}


def students(cfg: StageConfig) -> list[str]:
    """The students named by the inputs (`<name>/pruned`, ...), in input order."""
    names = [key.split("/", 1)[0] for key in cfg.inputs if "/" in key]
    return list(dict.fromkeys(names))


def models_to_evaluate(cfg: StageConfig) -> dict[str, str]:
    """Label -> checkpoint, in report order: teacher before/after, then per student pruned/distilled."""
    models = {"teacher/before_finetune": cfg.inputs["teacher"], "teacher/after_finetune": cfg.inputs["finetune"]}
    for name in students(cfg):
        models[f"{name}/after_prune"] = cfg.inputs[f"{name}/pruned"]
        models[f"{name}/after_distill"] = cfg.inputs[f"{name}/distilled"]
    return models


def evaluate(cfg: StageConfig, ckpt: str, label: str) -> float:
    """Mean validation loss of one checkpoint over the report's validation batches."""
    from nemo import lightning as nl
    from nemo.collections import llm

    precision = nemo_parts.stage_precision(cfg)
    n = cfg.report["limit_val_batches"]
    model = nemo_parts.load_model(cfg, ckpt, seq_length=seq_length(cfg))
    strategy = nemo_parts.strategy(cfg, precision, ckpt_load_optimizer=False, setup_optimizers=False, ddp="pytorch")
    trainer = nemo_parts.trainer(cfg, strategy, precision, max_steps=n, val_check_interval=n, limit_val_batches=n,
                                 logger=False, enable_checkpointing=False)
    data = nemo_parts.data_module(cfg, model.tokenizer, cfg.batch["micro_batch_size"],
                                  cfg.batch["global_batch_size"], EVAL_SEED)
    llm.validate(model, data, trainer, tokenizer="model",
                 log=nl.NeMoLogger(explicit_log_dir=str(cfg.stage_dir / "eval" / label.replace("/", "_"))),
                 resume=nl.AutoResume(restore_config=nl.RestoreConfig(path=ckpt, load_optim_state=False)))
    loss = float(trainer.callback_metrics["val_loss"])
    nemo_parts.teardown(trainer)
    log.info("val loss %-28s %.4f  (%s)", label, loss, ckpt)
    return loss


def read_curves(log_dir: str) -> dict[str, list[list[float]]]:
    """Scalars a trainer wrote under log_dir, per tag as sorted [step, value]; a resumed run's later
    event files win for repeated steps. Steps count optimizer steps done, like the progress lines
    (Lightning logs after step k at step k-1: the tutorial's validations "at 9, 19, 29")."""
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    curves: dict[str, dict[int, float]] = {name: {} for name in TAGS}
    event_dirs = sorted({p.parent for p in Path(log_dir).rglob("events.out.tfevents.*")})
    for event_dir in event_dirs:
        acc = EventAccumulator(str(event_dir), size_guidance={"scalars": 0})
        acc.Reload()
        for name, tag in TAGS.items():
            if tag in acc.Tags()["scalars"]:
                curves[name].update({e.step + 1: e.value for e in acc.Scalars(tag)})
    return {name: [[step, value] for step, value in sorted(points.items())] for name, points in curves.items()}


def plot(panels: dict[str, dict], path: str) -> None:
    """One panel per trained model (teacher, each student): logged val loss vs step, the measured start at step 0."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 4), squeeze=False)
    for ax, (model, panel) in zip(axes[0], panels.items()):
        points = [[0, panel["start"]]] + panel["curves"]["val_loss"]
        ax.plot([p[0] for p in points], [p[1] for p in points], marker="o", label="val_loss")
        ax.annotate(f"{panel['start']:.3f}", (0, panel["start"]), textcoords="offset points", xytext=(4, 4))
        ax.set_title(f"{model}: {panel['title']}")
        ax.set_xlabel("step")
        ax.set_ylabel("validation loss")
        ax.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def markdown(summary: dict) -> str:
    v = summary["validation"]
    lines = [f"# Validation loss ({v['batches']} batches x {v['global_batch_size']} sequences of "
             f"{v['seq_length']} tokens, validation role)", "", "| model | stage | val loss |", "|---|---|---|"]
    for label, loss in summary["val_loss"].items():
        model, stage = label.split("/")
        lines.append(f"| {model} | {stage.replace('_', ' ')} | {loss:.4f} |")
    lines += ["", "Curves: " + ", ".join(f"`{s}`" for s in summary["curves"]) + " (val_loss per logged step)."]
    return "\n".join(lines) + "\n"


def run(cfg: StageConfig) -> None:
    losses = {label: evaluate(cfg, ckpt, label) for label, ckpt in models_to_evaluate(cfg).items()}
    trainers = {"teacher": ("teacher correction", losses["teacher/before_finetune"], cfg.inputs["finetune_logs"])}
    for name in students(cfg):
        trainers[name] = (f"{name}-pruned student distillation", losses[f"{name}/after_prune"],
                          cfg.inputs[f"{name}/distill_logs"])
    curves = {model: read_curves(logs) for model, (_, _, logs) in trainers.items()}
    if not is_rank_zero():
        return
    summary = {
        "validation": {"prefix": cfg.data["prefixes"]["validation"], "batches": cfg.report["limit_val_batches"],
                       "global_batch_size": cfg.batch["global_batch_size"], "seq_length": seq_length(cfg)},
        "val_loss": losses,
        "curves": curves,
    }
    for key in ("plot", "summary_md", "summary_json"):
        Path(cfg.outputs[key]).parent.mkdir(parents=True, exist_ok=True)
    plot({m: {"title": t, "start": start, "curves": curves[m]} for m, (t, start, _) in trainers.items()},
         cfg.outputs["plot"])
    Path(cfg.outputs["summary_md"]).write_text(markdown(summary))
    write_json_atomic(Path(cfg.outputs["summary_json"]), summary)


def main(argv=None) -> int:
    return run_stage("report", run, argv)


if __name__ == "__main__":
    sys.exit(main())
