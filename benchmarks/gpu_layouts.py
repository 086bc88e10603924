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

from launcher.planner import make_plan  # noqa: E402
from launcher.profile import profile_from_located  # noqa: E402
from launcher.recipe import load_recipe  # noqa: E402
from launcher.yamlfile import Located  # noqa: E402


def planner_choice(gpus: int, memory: float, seq: int, gbs: int, mbs: int):
    profile = profile_from_located(Located(data={
        "executor": "local", "nodes": 1, "gpus_per_node": gpus, "gpu": {"model": "H200", "memory_gib": memory},
        "job_dir": "/tmp/bench", "container": "none", "attention": "unfused"}, file="bench"), "bench")
    overrides = [f"data.seq_length={seq}", "students=[depth]"]
    for kind in ("finetune", "distill"):
        overrides += [f"stages.{kind}.global_batch_size={gbs}", f"stages.{kind}.micro_batch_size={mbs}"]
    plan = make_plan(profile, load_recipe(None, overrides))
    return plan.stage("finetune"), plan.stage("distill_depth")


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


def run(args, shape, teacher, tp, pp, mbs, chosen, results):
    cmd = ["torchrun", f"--nproc-per-node={args.gpus}", os.path.join(ROOT, "benchmarks", "planner_gpu.py"),
           "--shape", shape, "--seq", str(args.seq), "--gbs", str(args.gbs), "--mbs", str(mbs), "--tp", str(tp),
           "--pp", str(pp), "--steps", str(args.steps), "--warmup", "1", "--out", results]
    if teacher:
        cmd += ["--teacher", teacher]
    if chosen:
        cmd.append("--chosen")
    start = time.time()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, timeout=args.timeout)
        failed = proc.returncode != 0
        tail = (proc.stdout + proc.stderr)[-1500:]
    except subprocess.TimeoutExpired:
        failed, tail = True, "timeout"
    print(f"{shape}{'+' + teacher if teacher else ''} TP={tp} PP={pp} MBS={mbs}{' (planner)' if chosen else ''}: "
          f"{'FAILED' if failed else 'ok'} in {time.time() - start:.0f}s", flush=True)
    if failed and "OOM" not in tail:
        print(tail, flush=True)
        with open(results, "a") as handle:
            handle.write(json.dumps({"shape": shape, "teacher": teacher, "tp": tp, "pp": pp, "mbs": mbs,
                                     "chosen": chosen, "ok": False, "error": tail[-300:]}) + "\n")


def measure_bf16_peak() -> float:
    """Dense bf16 matmul TFLOP/s of one GPU on random data (8192³, mean of 10 after 3 warm-ups)."""
    code = ("import torch,time;a=torch.randn(8192,8192,device='cuda',dtype=torch.bfloat16);b=torch.randn_like(a)\n"
            "for _ in range(3): a@b\n"
            "torch.cuda.synchronize();t=time.perf_counter()\n"
            "for _ in range(10): a@b\n"
            "torch.cuda.synchronize();print(2*8192**3*10/(time.perf_counter()-t)/1e12)")
    return float(subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--gpus", type=int, required=True)
    parser.add_argument("--memory-gib", type=float, required=True)
    parser.add_argument("--seq", type=int, default=2048)
    parser.add_argument("--gbs", type=int, default=32)
    parser.add_argument("--mbs", type=int, default=4)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--timeout", type=int, default=150)
    parser.add_argument("--only", choices=("finetune", "distill"), default=None)
    parser.add_argument("--out", required=True)
    args = parser.parse_args()
    results = os.path.join(args.out, "results.jsonl")
    peak = measure_bf16_peak()
    with open(os.path.join(args.out, "peak.json"), "w") as handle:
        json.dump({"bf16_matmul_tflops": round(peak, 1), "gpus": args.gpus}, handle)
    print(f"bf16 matmul peak: {peak:.0f} TFLOP/s per GPU", flush=True)
    finetune, distill = planner_choice(args.gpus, args.memory_gib, args.seq, args.gbs, args.mbs)
    print(f"planner: finetune TP={finetune.tp} PP={finetune.pp} MBS={finetune.micro_batch_size} "
          f"({finetune.est_memory_gib} GiB); distill TP={distill.tp} PP={distill.pp} "
          f"MBS={distill.micro_batch_size} ({distill.est_memory_gib} GiB)", flush=True)
    jobs = []
    if args.only in (None, "finetune"):
        m = finetune.micro_batch_size
        for tp, pp in layouts(args.gpus, 32, 32, 8, args.gbs, m, pipeline=True):
            jobs.append(("8b", None, tp, pp, m, (tp, pp) == (finetune.tp, finetune.pp)))
        for other in (1, 2, 4):
            if other != m and args.gbs % (other * args.gpus // (finetune.tp * finetune.pp)) == 0:
                jobs.append(("8b", None, finetune.tp, finetune.pp, other, False))
    if args.only in (None, "distill"):
        m = distill.micro_batch_size
        for tp, pp in layouts(args.gpus, 16, 32, 8, args.gbs, m, pipeline=False):
            jobs.append(("4b-depth", "8b", tp, pp, m, (tp, pp) == (distill.tp, distill.pp)))
    for job in jobs:
        run(args, *job, results=results)
    return 0


if __name__ == "__main__":
    sys.exit(main())
