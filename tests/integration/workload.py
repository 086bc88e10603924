"""A stand-in stage for executor tests (`python -m workload --config STAGE.json`).

It keeps the whole stage contract of docs/stage-config.md — reads the stage config, prints
MINITRON_PROGRESS lines, checkpoints, leaves the continue marker and exits 85 on SIGUSR1, resumes from its checkpoint, writes
its outputs and the complete marker, does nothing when already complete — but sleeps instead of
training, so the executor (the thing under test) can be driven through every path in seconds.

Test knobs: MT_STEP_SECONDS (sleep per step), a file RUN_DIR/fail-<stage> makes that stage
exit 3 (delete it and `minitron resume` recovers), and a file RUN_DIR/hold-<stage> makes it wait
until the file is deleted (each task records its pid in work/<stage>/tasks/<rank>.json).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import sys
import time

CONTINUE = 85


def atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    config = json.load(open(parser.parse_args().config))
    rank = int(os.environ.get("SLURM_PROCID", os.environ.get("RANK", "0")))
    work = os.path.join(config["work_dir"], config["stage"])  # the stage's scratch dir (docs/stage-config.md)
    os.makedirs(os.path.join(work, "tasks"), exist_ok=True)
    task = {k: os.environ.get(k) for k in ("SLURM_NODEID", "SLURM_PROCID", "SLURM_NTASKS", "SLURMD_NODENAME",
                                            "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID", "SLURM_RESTART_COUNT")}
    task["pid"] = os.getpid()
    atomic_write(os.path.join(work, "tasks", f"{rank}.json"), json.dumps(task))
    stage = config["stage"]
    while os.path.exists(os.path.join(config["run_dir"], f"hold-{stage}")):
        time.sleep(0.2)
    complete = os.path.join(config["markers_dir"], f"{stage}.complete")
    outputs = config["outputs"]
    if os.path.exists(complete) and all(os.path.exists(p) for p in outputs.values() if isinstance(p, str)):
        print(f"{stage}: outputs already complete, nothing to do", flush=True)
        return 0
    if os.path.exists(os.path.join(config["run_dir"], f"fail-{stage}")):
        print(f"{stage}: failing on purpose (fail-{stage} exists)", flush=True)
        return 3
    step_seconds = float(os.environ.get("MT_STEP_SECONDS", "0.2"))
    total = (config.get("train") or {}).get("steps") or 3
    checkpoint = os.path.join(work, "checkpoint.json")
    start = json.load(open(checkpoint))["step"] if os.path.exists(checkpoint) else 0
    interrupted = []
    signal.signal(signal.SIGUSR1, lambda *_: interrupted.append(True))
    for step in range(start + 1, total + 1):
        time.sleep(step_seconds)
        if rank == 0:
            loss = 5.0 / step
            line = f"MINITRON_PROGRESS step={step} total={total} train_loss={loss:.4f}"
            if step % 5 == 0:
                line += f" val_loss={loss + 0.1:.4f}"
            print(line, flush=True)
        if interrupted:
            marker = os.path.join(config["markers_dir"], f"{stage}.continue")
            if rank == 0:  # the checkpoint, then the continue marker, as jobs.common does
                atomic_write(checkpoint, json.dumps({"step": step}))
                atomic_write(marker, json.dumps({"time": time.time()}))
                print(f"{stage}: SIGUSR1 → checkpoint at step {step}, exiting {CONTINUE}", flush=True)
            else:  # the other ranks wait for it, as NeMo's collective save and our barrier make them
                deadline = time.time() + 60
                while not os.path.exists(marker) and time.time() < deadline:
                    time.sleep(0.05)
            return CONTINUE
    if rank == 0:
        for path in outputs.values():
            if isinstance(path, str) and not os.path.exists(path):
                os.makedirs(path, exist_ok=True)
        atomic_write(complete, json.dumps({"outputs": outputs, "finished_at": time.time()}))
        print(f"{stage}: done after {total} steps", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
