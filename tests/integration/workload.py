"""A stand-in stage for executor tests (`python -m workload --config STAGE.json`).

It keeps the whole stage contract (jobs/contract/, which it uses as the real jobs do) — reads
its stage config, prints progress lines, checkpoints, leaves the continue marker and exits
StageExit.CONTINUE on SIGUSR1, resumes from its checkpoint, writes its outputs and the complete
marker, does nothing when already complete — but sleeps instead of training, so the executor (the
thing under test) can be driven through every path in seconds. It runs, like every stage, under
`python -m jobs.runtime.task`, so it sees torch's RANK/WORLD_SIZE/LOCAL_RANK variables.

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

from jobs.contract import (RunLayout, StageExit, note_progress, progress_line, read_markers, read_stage_config,
                           write_complete, write_continue)


def atomic_write(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as handle:
        handle.write(text)
    os.replace(tmp, path)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--config", required=True)
    config = read_stage_config(parser.parse_args().config)
    layout = RunLayout(config.run_dir)
    rank = int(os.environ["RANK"])  # jobs.runtime.task or torchrun set it
    work = str(config.stage_dir)
    os.makedirs(os.path.join(work, "tasks"), exist_ok=True)
    task = {k: os.environ.get(k) for k in ("SLURM_NODEID", "SLURM_PROCID", "SLURM_NTASKS", "SLURM_LOCALID",
                                            "SLURMD_NODENAME", "RANK", "WORLD_SIZE", "LOCAL_RANK", "LOCAL_WORLD_SIZE",
                                            "NODE_RANK", "MASTER_ADDR", "MASTER_PORT", "SLURM_JOB_ID",
                                            "SLURM_RESTART_COUNT")}
    task["pid"] = os.getpid()
    atomic_write(os.path.join(work, "tasks", f"{rank}.json"), json.dumps(task))
    stage = config.stage
    print(f"{stage}: rank {rank} of {os.environ['WORLD_SIZE']} started", flush=True)  # each rank's log has its own
    while os.path.exists(os.path.join(config.run_dir, f"hold-{stage}")):
        time.sleep(0.2)
    outputs = config.outputs
    if read_markers(layout, stage).complete:
        print(f"{stage}: outputs already complete, nothing to do", flush=True)
        return 0
    if os.path.exists(os.path.join(config.run_dir, f"fail-{stage}")):
        print(f"{stage}: failing on purpose (fail-{stage} exists)", flush=True)
        return 3
    if os.path.exists(os.path.join(config.run_dir, f"raise-{stage}")):
        raise RuntimeError(f"{stage}: raising on purpose on rank {rank}")
    step_seconds = float(os.environ.get("MT_STEP_SECONDS", "0.2"))
    total = (config.train or {}).get("steps") or 3
    checkpoint = os.path.join(work, "checkpoint.json")
    start = json.load(open(checkpoint))["step"] if os.path.exists(checkpoint) else 0
    interrupted = []
    signal.signal(signal.SIGUSR1, lambda *_: interrupted.append(True))
    for step in range(start + 1, total + 1):
        time.sleep(step_seconds)
        while os.path.exists(os.path.join(config.run_dir, f"stall-{stage}")):
            time.sleep(0.2)  # a hung collective: no progress until the file goes
        note_progress()
        if rank == 0:
            loss = 5.0 / step
            print(progress_line(step, total, loss, loss + 0.1 if step % 5 == 0 else None), flush=True)
        if interrupted:
            if rank == 0:  # the checkpoint, then the continue marker, as jobs.runtime.frame does
                atomic_write(checkpoint, json.dumps({"step": step}))
                write_continue(layout, stage)
                print(f"{stage}: SIGUSR1 → checkpoint at step {step}, exiting {int(StageExit.CONTINUE)}", flush=True)
            else:  # the other ranks wait for it, as NeMo's collective save and our barrier make them
                deadline = time.time() + 60
                while not read_markers(layout, stage).continue_requested and time.time() < deadline:
                    time.sleep(0.05)
            return StageExit.CONTINUE
    if rank == 0:
        for path in outputs.values():
            if isinstance(path, str) and not os.path.exists(path):
                os.makedirs(path, exist_ok=True)
        write_complete(layout, stage, outputs)
        print(f"{stage}: done after {total} steps", flush=True)
        if os.path.exists(os.path.join(config.run_dir, f"die-after-complete-{stage}")):
            print(f"{stage}: dying after completion (die-after-complete-{stage} exists)", flush=True)
            os._exit(143)  # a rank killed during teardown, after its stage was complete
    return 0


if __name__ == "__main__":
    sys.exit(main())
