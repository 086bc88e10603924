"""Run the tiny recipe end to end on one GPU, each stage exactly as the launcher runs it:
`python -m jobs.<kind> --config RUN_DIR/stages/<stage>.json`, under `torchrun --nproc-per-node=1`
for the GPU stages. Then read back what the pipeline promised and write it to OUT/facts.json:
the fine-tune loss falls, the depth-pruned checkpoint has the planned layer count and the
width-pruned one the planned hidden/ffn sizes (from the saved context and weight shapes), and
each distilled student ends below its pruned starting point. The report files go to OUT as soon
as the report stage has succeeded.

    python -m jobs.tools.run_tiny_pipeline --run-dir /tmp/tiny --out /tmp/out
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

from jobs.tools import tiny

GPU_KINDS = {"import", "finetune", "prune", "distill", "report"}
PROGRESS = re.compile(r"MINITRON_PROGRESS step=(\d+) total=\d+(?: train_loss=(\S+))?(?: val_loss=(\S+))?")


def run_stage(stage: str, cfg: dict, config_path: Path, log_dir: Path) -> tuple[int, float, str]:
    """One stage as a subprocess; its output is streamed and kept in log_dir/<stage>.log."""
    module = "jobs.import_ckpt" if cfg["kind"] == "import" else f"jobs.{cfg['kind']}"
    cmd = [sys.executable, "-m", module, "--config", str(config_path)]
    if cfg["kind"] in GPU_KINDS:
        cmd = [sys.executable, "-m", "torch.distributed.run", "--nproc-per-node=1", "-m", module,
               "--config", str(config_path)]
    print(f"=== {stage}: {' '.join(cmd)}", flush=True)
    start = time.time()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    lines = []
    for line in proc.stdout:
        lines.append(line)
        sys.stdout.write(line)
    rc = proc.wait()
    text = "".join(lines)
    (log_dir / f"{stage}.log").write_text(text)
    print(f"=== {stage}: rc={rc} in {time.time() - start:.1f} s", flush=True)
    return rc, time.time() - start, text


def progress(text: str) -> dict:
    train, val = [], []
    for step, train_loss, val_loss in PROGRESS.findall(text):
        if train_loss:
            train.append([int(step), float(train_loss)])
        if val_loss:
            val.append([int(step), float(val_loss)])
    return {"train_loss": train, "val_loss": val}


def checkpoint_shape(path: str) -> dict:
    """Model sizes as saved: the context's config and the weight tensors' shapes."""
    from torch.distributed.checkpoint import FileSystemReader

    model_yaml = (Path(path) / "context" / "model.yaml").read_text()
    saved = {k: int(re.search(rf"^\s+{k}: (\d+)$", model_yaml, re.M).group(1))
             for k in ("num_layers", "hidden_size", "ffn_hidden_size")}
    meta = FileSystemReader(str(Path(path) / "weights")).read_metadata().state_dict_metadata
    shapes = {k.removeprefix("module."): list(v.size) for k, v in meta.items() if hasattr(v, "size")}
    return {"config": saved, "weights": {
        "layers": shapes["decoder.layers.mlp.linear_fc2.weight"][0],
        "hidden": shapes["embedding.word_embeddings.weight"][1],
        "ffn": shapes["decoder.layers.mlp.linear_fc2.weight"][2],
    }}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--run-dir", type=Path, required=True)
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--finetune-steps", type=int, default=300)
    parser.add_argument("--distill-steps", type=int, default=90)
    args = parser.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    configs = tiny.stage_configs(args.run_dir, finetune_steps=args.finetune_steps, distill_steps=args.distill_steps)
    paths = tiny.write_stage_configs(args.run_dir, configs)
    log_dir = args.run_dir / "logs"
    log_dir.mkdir(parents=True, exist_ok=True)

    facts: dict = {"stages": {}}
    texts = {}
    for stage in tiny.ORDER:
        rc, seconds, texts[stage] = run_stage(stage, configs[stage], paths[stage], log_dir)
        facts["stages"][stage] = {"rc": rc, "seconds": round(seconds, 1)}
        if rc != 0:
            break
    done = {s for s, r in facts["stages"].items() if r["rc"] == 0}
    checks = facts["checks"] = {}
    if "finetune" in done:
        facts["finetune"] = ft = progress(texts["finetune"])
        checks["finetune_train_loss_falls"] = ft["train_loss"][-1][1] < ft["train_loss"][0][1]
    if {"prune_depth", "prune_width"} <= done:
        facts["pruned"] = {s: checkpoint_shape(configs[s]["outputs"]["model"]) for s in ("prune_depth", "prune_width")}
        depth, width = facts["pruned"]["prune_depth"], facts["pruned"]["prune_width"]
        plan_depth, plan_width = configs["prune_depth"]["prune"], configs["prune_width"]["prune"]
        n_layers = configs["import"]["model"]["num_layers"]
        checks["depth_layers"] = (depth["config"]["num_layers"] == depth["weights"]["layers"]
                                  == n_layers - len(plan_depth["drop_layers"]))
        checks["width_hidden"] = (width["config"]["hidden_size"] == width["weights"]["hidden"]
                                  == plan_width["target_hidden_size"])
        checks["width_ffn"] = (width["config"]["ffn_hidden_size"] == width["weights"]["ffn"]
                               == plan_width["target_ffn_hidden_size"])
    if "report" in done:
        for key in ("plot", "summary_md", "summary_json"):
            shutil.copy(configs["report"]["outputs"][key], args.out)
        summary = Path(configs["report"]["outputs"]["summary_json"])
        losses = facts["val_loss"] = json.loads(summary.read_text())["val_loss"]
        checks["finetune_val_loss_falls"] = losses["teacher/after_finetune"] < losses["teacher/before_finetune"]
        for s in ("depth", "width"):
            checks[f"{s}_distill_below_pruned"] = losses[f"{s}/after_distill"] < losses[f"{s}/after_prune"]
    ok = done == set(tiny.ORDER) and all(checks.values())
    facts["ok"] = ok
    (args.out / "facts.json").write_text(json.dumps(facts, indent=2) + "\n")
    print(json.dumps({k: v for k, v in facts.items() if k != "finetune"}, indent=2))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
