#!/usr/bin/env bash
# The README's first hour on the GPU device (one H200 or H100, local executor, no Slurm): what a newcomer types
# after the install, as the user sees it at COLUMNS=100: `profiles`, `check --probe`, `plan`, `submit --smoke`,
# `status` until the run ends, `report`, `logs RUN finetune --rank 0`. The jobs are the real stages on the GPU.
#
# Fetch first, here: the NeMo set into .whl/ (tools/device/fetch_device_wheels.sh); for MLflow tracking also
# .whl/track/: `pip download --only-binary=:all: --python-version 3.12 --implementation cp --platform
# manylinux_2_28_x86_64 --platform manylinux2014_x86_64 -d DIR mlflow-skinny==3.18.0`, keeping the wheels .whl/
# lacks (~10 MiB; with .whl's 47 MiB one call's 64 MiB holds them, W&B's 20 MiB wheel does not fit beside).
# Then device calls from the repo root, carrying .whl:
#   1. tools/device/first_hour.sh start && /tmp/mt-code/tools/device/first_hour.sh wait 440
#   2. (if 1 ended with exit 3)   /tmp/mt-code/tools/device/first_hour.sh wait 500   (within 30 s: still warm)
# `start` installs the NeMo set (device_te.sh install) and .whl/track/ (last on the path: the image's own copies
# win), writes the profile (cluster_profiles/device-h200.yaml with its own job_dir and, on an H100, its GPU line;
# PROFILE_EXTRA, YAML lines appended to it, adds keys, e.g. a `tracking:` block whose MLflow file store `wait`
# reads back) and runs the commands up to the submit; the run goes on in the local executor's supervisor.
# `wait` polls `status` and, once the run ended, runs the rest. $OUT/first-hour.txt is each call's part of the
# transcript; $OUT/run.tgz the run's logs, markers, plan and stage configs (no weights); $OUT/device.log the
# install. Exit: 0 the smoke run DONE, 1 it failed or a step broke, 3 still running at the deadline (call `wait`
# again).
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CODE=/tmp/mt-code SITE=/tmp/site OVERLAY=/tmp/overlay TRACK_SITE=/tmp/track-site
WORK=/tmp/mt-first-hour
OUT=${OUT:-/tmp/mt-out}
TRANSCRIPT=$OUT/first-hour.txt
mkdir -p "$OUT" "$WORK"
export MINITRON_HOME=$WORK/home COLUMNS=100 PYTHONPATH=$OVERLAY:$SITE:$CODE:$TRACK_SITE HF_HOME=$WORK/hf HF_HUB_OFFLINE=1
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 PYTHONUNBUFFERED=1

minitron() { (cd "$WORK" && python3 -m launcher.app.cli "$@"); }
shown() {  # `$ minitron ARGS` and its output into the transcript; returns minitron's exit code
    echo "\$ minitron $*" >> "$TRANSCRIPT"
    minitron "$@" >> "$TRANSCRIPT" 2>&1
    local rc=$?
    [ "$rc" = 0 ] || echo "(exit $rc)" >> "$TRANSCRIPT"
    return "$rc"
}

start() {
    OUT=$OUT bash "$REPO"/tools/device/device_te.sh install || return 1
    if [ -d "$REPO"/.whl/track ]; then
        python3 -m pip install -q --no-index --no-deps --no-compile --target "$TRACK_SITE" "$REPO"/.whl/track/*.whl \
            || return 1
    fi
    local gpu='gpu: {model: H200, memory_gib: 139}'  # the profile's; an H100 machine gets its own line
    nvidia-smi --query-gpu=name --format=csv,noheader | grep -q H100 && gpu='gpu: {model: H100-80GB, memory_gib: 80}'
    sed -e "s|^job_dir:.*|job_dir: $WORK/runs|" -e "s|^gpu:.*|$gpu|" "$CODE"/cluster_profiles/device-h200.yaml \
        > "$WORK/profile.yaml"
    [ -z "${PROFILE_EXTRA:-}" ] || printf '%s\n' "$PROFILE_EXTRA" >> "$WORK/profile.yaml"
    : > "$TRANSCRIPT"
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader >> "$TRANSCRIPT"
    shown profiles
    shown check --probe --profile "$WORK/profile.yaml"
    shown plan --profile "$WORK/profile.yaml" --recipe tiny
    shown submit --smoke --profile "$WORK/profile.yaml" || return 1
}

wait_for_run() {  # $1: seconds
    local deadline=$((SECONDS + $1)) rc
    while :; do
        minitron status --json > "$WORK/status.json" 2>/dev/null
        rc=$?
        [ "$rc" = 3 ] || break
        [ "$SECONDS" -lt "$deadline" ] || { echo "still running"; return 3; }
        sleep 10
    done
    shown status
    shown report
    local run_dir
    run_dir=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['run_dir'])" "$WORK/status.json")
    shown logs "$(basename "$run_dir")" finetune --rank 0 -n 5
    mlflow_runs >> "$TRANSCRIPT" 2>&1
    tar -czf "$OUT/run.tgz" -C "$run_dir" --exclude='*.pt' --exclude='*.distcp' --exclude='weights' \
        --exclude='*.bin' --exclude='*.safetensors' . 2>/dev/null
    [ "$rc" = 0 ]
}

mlflow_runs() {  # what the training stages logged to the profile's MLflow store, read back with MLflow's client
    grep -q "tracking_uri" "$WORK/profile.yaml" || return 0
    echo "\$ (MLflow, read back) runs of the profile's tracking store"
    MLFLOW_ALLOW_FILE_STORE=true python3 - "$WORK/profile.yaml" <<'EOF'
import sys, yaml
from mlflow.tracking import MlflowClient
spec = yaml.safe_load(open(sys.argv[1]))["tracking"]["mlflow"]
client = MlflowClient(spec["tracking_uri"])
experiment = client.get_experiment_by_name(spec["experiment"])
for run in client.search_runs([experiment.experiment_id], order_by=["attributes.start_time ASC"]):
    losses = {key: client.get_metric_history(run.info.run_id, key) for key in sorted(run.data.metrics)}
    shown = ", ".join(f"{k} {len(v)} points (last {v[-1].value:.4f} at step {v[-1].step})" for k, v in losses.items()
                      if "loss" in k)
    print(f"{run.info.run_name}: {run.info.status}; {shown}")
EOF
}

case "${1:-}" in
    start) start ;;
    wait) wait_for_run "${2:-480}" ;;
    *) echo "usage: $0 start | wait SECONDS" >&2; exit 2 ;;
esac
