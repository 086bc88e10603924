#!/bin/bash
# minitron-launcher 0.1.0 | run minitron-8b-wikitext-20260101-000000-abcd | stage import (import)
# what: the teacher as a checkpoint (from Hugging Face, or random)
# plan: 1 node(s) x 1 GPU(s), TP=1 PP=1 CP=1 DP=1
# why: convert 15.0 GiB of bf16 weights from hf://meta-llama/Llama-3.1-8B; one GPU: a conversion uses no more; limit: stages.import.time
#SBATCH --job-name=import.minitron-8b-wikitext-20260101-000000-abcd
#SBATCH --comment=minitron:minitron-8b-wikitext-20260101-000000-abcd:import
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=1
#SBATCH --gpus-per-node=1
#SBATCH --cpus-per-task=12
#SBATCH --time=01:00:00
#SBATCH --partition=batch
#SBATCH --account=my_account
#SBATCH --qos=normal
#SBATCH --output=/home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/logs/import-%j.out
#SBATCH --open-mode=append
#SBATCH --no-requeue

set -uo pipefail

# Values are shell-quoted (in single quotes where they need any): nothing in them is expanded by the shell.
export MINITRON_RUN_DIR=/home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd
export MINITRON_STAGE=import
export NCCL_NVLS_ENABLE=0
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export TORCH_NCCL_AVOID_RECORD_STREAMS=1
# From the submitting shell by name (values never written here): HF_TOKEN HF_HOME

markers=/home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/markers
attempt=${SLURM_RESTART_COUNT:-0}
write_marker() {  # atomic: temp file + rename
    printf '%s\n' "$2" > "$markers/.$1.$$" && mv -f "$markers/.$1.$$" "$markers/$1"
}
# started marker: job_id host time attempt
write_marker import.started "$SLURM_JOB_ID $(hostname) $(date +%s) $attempt"
rm -f "$markers"/import.finished "$markers"/import.continue "$markers"/import.failed

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_ADDR=$(scontrol show node "$head_node" | tr ' ' '\n' | sed -n 's/^NodeAddr=//p' | head -n 1)
export MASTER_ADDR=${MASTER_ADDR:-$head_node}
export MASTER_PORT=$(( 29500 + SLURM_JOB_ID % 1000 ))
echo "minitron: stage import attempt $attempt on $SLURM_JOB_NODELIST (master $MASTER_ADDR:$MASTER_PORT)"

srun --kill-on-bad-exit=1 --wait=60 --mpi=pmix \
    --nodes=1 --ntasks-per-node=1 \
    --container-image='nvcr.io#nvidia/nemo:26.02' \
    --container-mounts=/home/user/minitron-runs:/home/user/minitron-runs \
    --container-workdir=/home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/code \
    --no-container-mount-home \
    --container-env=HF_HOME,HF_TOKEN,MASTER_ADDR,MASTER_PORT,MINITRON_RUN_DIR,MINITRON_STAGE,NCCL_NVLS_ENABLE,PYTORCH_CUDA_ALLOC_CONF,TORCH_NCCL_AVOID_RECORD_STREAMS \
    python -m jobs.runtime.task jobs.stages.import_ckpt --config /home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/stages/import.json
rc=$?
# Complete during this attempt (its complete marker is newer than this attempt's started marker): the stage
# is done whatever the exit code says. A time-limit signal, the stall watchdog or a rank killed during
# teardown after completion must neither fail it nor cancel its dependents.
if [ "$rc" -ne 0 ] && [ "$markers"/import.complete -nt "$markers"/import.started ]; then
    echo "minitron: stage import complete; exit $rc after completion ignored"
    rc=0
fi

write_marker import.finished "$rc"
exit "$rc"
