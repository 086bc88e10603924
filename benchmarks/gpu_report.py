"""Turn a gpu_layouts.py results.jsonl (+ peak.json) into the RESULTS.md table for one device run.

    python benchmarks/gpu_report.py DIR --card "NVIDIA H200 x2" >> benchmarks/RESULTS.md
"""

from __future__ import annotations

import argparse
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--card", required=True)
    args = parser.parse_args()
    rows = [json.loads(line) for line in open(os.path.join(args.dir, "results.jsonl"))]
    peak = json.load(open(os.path.join(args.dir, "peak.json")))["bf16_matmul_tflops"]
    print(f"\n### Planner on {args.card} ({time.strftime('%Y-%m-%d')})\n")
    print(f"Stack: {next((r['stack'] for r in rows if 'stack' in r), '?')}. bf16 matmul peak measured in the same "
          f"call: {peak} TFLOP/s per GPU. Random weights, synthetic tokens; GBS "
          f"{next((r['gbs'] for r in rows if 'gbs' in r), '?')}.\n")
    for job in sorted({(r["shape"], r.get("teacher"), r.get("seq")) for r in rows}, key=str):
        group = [r for r in rows if (r["shape"], r.get("teacher"), r.get("seq")) == job]
        best = max((r["tokens_per_s_per_gpu"] for r in group if r.get("ok")), default=None)
        title = (f"{job[0]} fine-tune" if not job[1] else f"distill {job[1]} → {job[0]}") + f", seq {job[2]}"
        print(f"**{title}**\n")
        print("| TP | PP | DP | MBS | planner | step s | tok/s/GPU | model TFLOP/s/GPU | % of bf16 peak | "
              "% of best | peak alloc GiB | peak reserved GiB | estimate GiB | estimate error |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        for r in sorted(group, key=lambda r: (r["tp"], r["pp"], r["mbs"])):
            if not r.get("ok"):
                print(f"| {r['tp']} | {r['pp']} | {r.get('dp', '-')} | {r['mbs']} | {'**yes**' if r['chosen'] else ''} "
                      f"| failed: {r.get('error', '?')[:60]} | | | | | | | {r.get('est_memory_gib', '-')} | |")
                continue
            print(f"| {r['tp']} | {r['pp']} | {r['dp']} | {r['mbs']} | {'**yes**' if r['chosen'] else ''} | "
                  f"{r['step_s']} | {r['tokens_per_s_per_gpu']:.0f} | {r['model_tflops_per_gpu']} | "
                  f"{100 * r['model_tflops_per_gpu'] / peak:.0f}% | {100 * r['tokens_per_s_per_gpu'] / best:.0f}% | "
                  f"{r['peak_allocated_gib']} | {r['peak_reserved_gib']} | {r['est_memory_gib']} | "
                  f"{r['est_error_pct']:+.0f}% |")
        print()


if __name__ == "__main__":
    main()
