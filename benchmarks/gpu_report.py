"""Turn a gpu_layouts.py results.jsonl (+ peak.json) into the RESULTS.md section for one device run.

    python benchmarks/gpu_report.py benchmarks/results/h200-x1-20261128 --card "1 × NVIDIA H200" [--write]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import time


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("dir")
    parser.add_argument("--card", required=True)
    parser.add_argument("--write", action="store_true", help="replace the planner_gpu section of RESULTS.md")
    parser.add_argument("--note", default="", help="a closing paragraph: what was and was not run")
    args = parser.parse_args()
    if args.write:
        from _common import write_section

        buffer = io.StringIO()
        with contextlib.redirect_stdout(buffer):
            print_tables(args)
        write_section("planner_gpu", buffer.getvalue())
    else:
        print_tables(args)


def print_tables(args) -> None:
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



    verdicts(rows)
    if args.note:
        print(f"\n{args.note}")


def verdicts(rows: list[dict]) -> None:
    """The issue's two bars, over every group of this run."""
    fractions, errors = [], []
    for job in {(r["shape"], r.get("teacher"), r.get("seq")) for r in rows}:
        group = [r for r in rows if (r["shape"], r.get("teacher"), r.get("seq")) == job and r.get("ok")]
        best = max((r["tokens_per_s_per_gpu"] for r in group), default=None)
        fractions += [r["tokens_per_s_per_gpu"] / best for r in group if r["chosen"]]
        errors += [r["est_error_pct"] for r in group]
    oom_estimates = [r["est_memory_gib"] for r in rows if not r.get("ok") and "OOM" in r.get("error", "")]
    print("| bar | this run | verdict |\n|---|---|---|")
    print(f"| planner's choice ≥ 90% of the best throughput | worst {100 * min(fractions):.0f}% over "
          f"{len(fractions)} groups | {'met' if min(fractions) >= 0.9 else 'MISSED'} |")
    print(f"| memory estimate within ±20% of the measured peak (reserved) | {min(errors):+.0f}% … {max(errors):+.0f}% "
          f"over {len(errors)} layouts | {'met' if max(map(abs, errors)) <= 20 else 'MISSED'} |")
    if oom_estimates:
        print(f"\nLayouts that ran out of memory had estimates of {', '.join(f'{e:g}' for e in oom_estimates)} GiB, "
              f"above the card: the model predicted each failure.")


if __name__ == "__main__":
    main()
