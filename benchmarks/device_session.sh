#!/usr/bin/env bash
# What one call on the GPU device (1 or 2 × H200) runs, from the repo root, with .whl carried:
#  1. the tiny recipe end to end through the launcher itself (`minitron submit` with the local
#     executor, profile cluster_profiles/device-h200.yaml) on GPU 0, in the background;
#  2. benchmarks/gpu_layouts.py on the GPUs: the planner's layouts against the alternatives.
# Everything lands in $OUT.
set -uo pipefail
pip install -q --no-index --no-deps --target /tmp/site .whl/*.whl || exit 1
pip install -q --no-index --no-deps --target /tmp/overlay .whl/overlay/*.whl || exit 1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv > "$OUT/gpus.csv"
mkdir -p "$OUT/tiny"

tiny() {
    export PYTHONPATH=/tmp/overlay:/tmp/site:$PWD CUDA_VISIBLE_DEVICES=0 MINITRON_HOME=/tmp/mthome
    python3 -m launcher.app.cli submit -p cluster_profiles/device-h200.yaml -r tiny --set stages.export.enabled=true \
        --json > "$OUT/tiny/submit.json" || return 1
    for _ in $(seq 1 150); do
        sleep 4
        python3 -m launcher.app.cli status --json > "$OUT/tiny/status.json"
        [ $? -ne 3 ] && break
    done
    COLUMNS=200 python3 -m launcher.app.cli status > "$OUT/tiny/status.txt" 2>&1
    run_dir=$(python3 -c "import json;print(json.load(open('$OUT/tiny/submit.json'))['run_dir'])")
    cp "$run_dir"/work/report/val_loss.png "$run_dir"/work/report/summary.md "$OUT/tiny/" 2>/dev/null
    tar czf "$OUT/tiny/run.tgz" -C "$run_dir" logs markers plan.json stages work/report 2>/dev/null
}
tiny > "$OUT/tiny/driver.log" 2>&1 &
tiny_pid=$!

PYTHONPATH=/tmp/site:$PWD python3 benchmarks/gpu_layouts.py --gpus 1 --memory-gib 139 --finetune-shape 2b \
    --finetune-seqs 2048,4096 --distill-seq 2048 --gbs 32 --steps 3 --timeout 150 --out "$OUT" 2>&1 | tee "$OUT/layouts.log"
wait "$tiny_pid"
echo "tiny driver exit: $?"
