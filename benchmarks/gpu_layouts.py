"""Measure the planner's chosen layout against every other valid one on this host's GPUs.

For fine-tune (8B shape) and distillation (8B teacher → depth-pruned 4B student) it asks the
launcher's planner what it would choose for a 1-node profile of these GPUs (attention: unfused,
since the device has no Transformer Engine), enumerates the other valid TP/PP layouts at that
micro-batch (and the other micro-batches at the chosen TP/PP), runs each as its own torchrun of
benchmarks/planner_gpu.py, and writes results.jsonl plus a markdown table:

    python benchmarks/gpu_layouts.py --gpus 4 --memory-gib 139 --seq 2048 --gbs 32 --out $OUT
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, ROOT)
sys.path.insert(0, os.path.join(ROOT, "benchmarks"))

from launcher.planning.planner import Planner  # noqa: E402
from launcher.config.profile import profile_from_located  # noqa: E402
from launcher.config.recipe import load_recipe  # noqa: E402
from launcher.config.yamlfile import Located  # noqa: E402


SHAPE_OVERRIDES = {  # recipe keys for the finetune shapes the harness knows (8b is the recipe's own)
    "8b": [],
    "2b": ["model.num_layers=16", "model.hidden_size=2048", "model.ffn_hidden_size=8192",
           "model.num_attention_heads=16", "model.num_query_groups=8", "pruning={depth: {drop_layers: [9,10,11,12,13,14,15,16]}}"],
}


def finetune_choice(gpus, memory, seq, gbs, mbs, shape):
    return _planner(gpus, memory, seq, gbs, mbs, shape).plan_stage("finetune")


def distill_choice(gpus, memory, seq, gbs, mbs):
    return _planner(gpus, memory, seq, gbs, mbs, "8b").plan_stage("distill_depth")


def _planner(gpus: int, memory: float, seq: int, gbs: int, mbs: int, shape: str) -> Planner:
    """The planner for a 1-node profile of these GPUs; stages are planned alone (on one GPU the 8B
    fine-tune does not fit, while the 8B → 4B distillation does)."""
    profile = profile_from_located(Located(data={
        "executor": "local", "nodes": 1, "gpus_per_node": gpus, "gpu": {"model": "H200", "memory_gib": memory},
        "job_dir": "/tmp/bench", "container": "none", "attention": "unfused"}, file="bench"), "bench")
    overrides = [f"data.seq_length={seq}", "students=[depth]", *SHAPE_OVERRIDES[shape]]
    for kind in ("finetune", "distill"):
        overrides += [f"stages.{kind}.global_batch_size={gbs}", f"stages.{kind}.micro_batch_size={mbs}"]
    return Planner(profile, load_recipe(None, overrides))


def layouts(gpus: int, layers: int, heads: int, groups: int, gbs: int, mbs: int, pipeline: bool):
    for tp in (1, 2, 4, 8):
        if tp > gpus or gpus % tp or heads % tp or groups % tp:
            continue
        for pp in ((1, 2, 4, 8) if pipeline else (1,)):
            if gpus % (tp * pp) or layers % pp:
                continue
            dp = gpus // (tp * pp)
            if gbs % (mbs * dp) == 0:
                yield tp, pp


def estimate_gib(shape, teacher, tp, pp, mbs, gpus, seq, gbs) -> float:
    from launcher.planning import memory as mm
    from planner_gpu import SHAPES

    dp = gpus // (tp * pp)
    lay = mm.Layout(tp, pp, 1, dp, mbs, seq, gbs // (mbs * dp), tp > 1, "unfused")
    return mm.training_memory(SHAPES[shape], lay, SHAPES[teacher] if teacher else None).total / mm.GIB


def run(args, shape, teacher, tp, pp, mbs, chosen, seq, results):
    estimate = estimate_gib(shape, teacher, tp, pp, mbs, args.gpus, seq, args.gbs)
    if estimate > 1.25 * args.memory_gib:  # certain to run out of memory: say so instead of waiting on it
        print(f"{shape} TP={tp} PP={pp} MBS={mbs}: not run, estimate {estimate:.0f} GiB", flush=True)
        with open(results, "a") as handle:
            handle.write(json.dumps({"shape": shape, "teacher": teacher, "tp": tp, "pp": pp, "mbs": mbs, "seq": seq,
                                     "chosen": chosen, "ok": False, "est_memory_gib": round(estimate, 1),
                                     "error": f"not run: estimate {estimate:.0f} GiB > 1.25 × {args.memory_gib:g}"})
                         + "\n")
        return
    cmd = ["torchrun", "--standalone", f"--nproc-per-node={args.gpus}", os.path.join(ROOT, "benchmarks", "planner_gpu.py"),
           "--shape", shape, "--seq", str(seq), "--gbs", str(args.gbs), "--mbs", str(mbs), "--tp", str(tp),
           "--pp", str(pp), "--steps", str(args.steps), "--warmup", "1", "--out", results]
    if teacher:
        cmd += ["--teacher", teacher]
    if chosen:
        cmd.append("--chosen")
    start = time.time()
    written = _lines(results)
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        failed = proc.returncode != 0
        tail = (proc.stdout + proc.stderr)[-1500:]
    except subprocess.TimeoutExpired:
        failed, tail = True, "timeout"
    print(f"{shape}{'+' + teacher if teacher else ''} TP={tp} PP={pp} MBS={mbs}{' (planner)' if chosen else ''}: "
          f"{'FAILED' if failed else 'ok'} in {time.time() - start:.0f}s", flush=True)
    if failed and _lines(results) == written:  # it died before writing its own record (e.g. a hang)
        print(tail, flush=True)
        with open(results, "a") as handle:
            handle.write(json.dumps({"shape": shape, "teacher": teacher, "tp": tp, "pp": pp, "mbs": mbs, "seq": seq,
                                     "chosen": chosen, "ok": False, "error": tail[-300:]}) + "\n")


def measure_bf16_peak() -> float:
    """Dense bf16 matmul TFLOP/s of one GPU on random data (8192³, mean of 10 after 3 warm-ups)."""
    code = ("import torch,time;a=torch.randn(8192,8192,device='cuda',dtype=torch.bfloat16);b=torch.randn_like(a)\n"
            "for _ in range(3): a@b\n"
            "torch.cuda.synchronize();t=time.perf_counter()\n"
            "for _ in range(10): a@b\n"
            "torch.cuda.synchronize();print(2*8192**3*10/(time.perf_counter()-t)/1e12)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def _lines(path: str) -> int:
    try:
        with open(path) as handle:
            return sum(1 for _ in handle)
    except FileNotFoundError:
        return 0


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("--memory-gib", type=float, required=True)
    parser.add_argument("--finetune-shape", choices=SHAPE_OVERRIDES, default="8b")
    parser.add_argument("--finetune-seqs", default="2048", help="comma-separated sequence lengths")
    parser.add_argument("--distill-seq", type=int, default=2048, help="0: skip distillation")
    parser.add_argument("--gbs", type=int, default=32)
    parser.add_argument("--mbs", type=int, default=4, help="the recipe's micro-batch: the largest tried")
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=150)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results = os.path.join(args.out, "results.jsonl")
    peak = measure_bf16_peak()
    with open(os.path.join(args.out, "peak.json"), "w") as handle:
        json.dump({"bf16_matmul_tflops": round(peak, 1), "gpus": args.gpus}, handle)
    print(f"bf16 matmul peak: {peak:.0f} TFLOP/s per GPU", flush=True)
    micro = [m for m in (1, 2, 4, 8) if m <= args.mbs]
    jobs = []
    for seq in (int(x) for x in args.finetune_seqs.split(",") if x):
        chosen = finetune_choice(args.gpus, args.memory_gib, seq, args.gbs, args.mbs, args.finetune_shape)
        print(f"planner, fine-tune {args.finetune_shape} seq {seq}: TP={chosen.tp} PP={chosen.pp} "
              f"MBS={chosen.micro_batch_size} ({chosen.est_memory_gib} GiB)", flush=True)
        for mbs in micro:
            for tp, pp in layouts(args.gpus, chosen_layers(args.finetune_shape), 32, 8, args.gbs, mbs, True):
                pick = (tp, pp, mbs) == (chosen.tp, chosen.pp, chosen.micro_batch_size)
                jobs.append((args.finetune_shape, None, tp, pp, mbs, pick, seq))
    if args.distill_seq:
        chosen = distill_choice(args.gpus, args.memory_gib, args.distill_seq, args.gbs, args.mbs)
        print(f"planner, distill 8b → 4b-depth seq {args.distill_seq}: TP={chosen.tp} PP={chosen.pp} "
              f"MBS={chosen.micro_batch_size} ({chosen.est_memory_gib} GiB)", flush=True)
        for mbs in micro:
            for tp, pp in layouts(args.gpus, 16, 32, 8, args.gbs, mbs, pipeline=False):
                pick = (tp, pp, mbs) == (chosen.tp, chosen.pp, chosen.micro_batch_size)
                jobs.append(("4b-depth", "8b", tp, pp, mbs, pick, args.distill_seq))
    for job in jobs:
        run(args, *job, results=results)
    return 0


def chosen_layers(shape: str) -> int:
    return 16 if shape == "2b" else 32


if __name__ == "__main__":
    sys.exit(main())
