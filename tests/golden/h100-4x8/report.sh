#!/bin/bash
# minitron-launcher 0.1.0 | run minitron-8b-wikitext-20260101-000000-abcd | stage report (report)
# what: validation loss of every model, loss curves, a plot and a summary
# plan: 1 node(s) x 8 GPU(s), TP=1 PP=1 CP=1 DP=8, MBS=4 GBS=128
# why: TP=1 PP=1 DP=8 MBS=4: validation loss of 6 models on 5 batches of 128, then plots from the trainers' TensorBoard logs; one node: forward passes only; limit: estimate ×1.5 + 10 min
#SBATCH --job-name=report.minitron-8b-wikitext-20260101-000000-abcd
#SBATCH --comment=minitron:minitron-8b-wikitext-20260101-000000-abcd:report,llm-pruning
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=14
#SBATCH --mem=0
#SBATCH --exclusive
#SBATCH --time=00:20:00
#SBATCH --partition=batch
#SBATCH --account=llm_research
#SBATCH --qos=normal
#SBATCH --output=/lustre/fsw/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/logs/report-%j.out
#SBATCH --open-mode=append
#SBATCH --no-requeue

set -uo pipefail

# Values are shell-quoted (in single quotes where they need any): nothing in them is expanded by the shell.
export MINITRON_RUN_DIR=/lustre/fsw/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd
export MINITRON_STAGE=report
export HF_HOME=/hf-cache
export HF_HUB_OFFLINE=0
export NCCL_IB_TIMEOUT=22
export NCCL_NVLS_ENABLE=0
export PYTORCH_CUDA_ALLOC_CONF=expandable_segments:True
export TORCH_NCCL_AVOID_RECORD_STREAMS=1
# From the submitting shell by name (values never written here): HF_TOKEN WANDB_API_KEY
ulimit -l unlimited

markers=/lustre/fsw/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/markers
attempt=${SLURM_RESTART_COUNT:-0}
write_marker() {  # atomic: temp file + rename
    printf '%s\n' "$2" > "$markers/.$1.$$" && mv -f "$markers/.$1.$$" "$markers/$1"
}
# started marker: job_id host time attempt
write_marker report.started "$SLURM_JOB_ID $(hostname) $(date +%s) $attempt"
rm -f "$markers"/report.finished "$markers"/report.continue "$markers"/report.failed

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_ADDR=$(scontrol show node "$head_node" | tr ' ' '\n' | sed -n 's/^NodeAddr=//p' | head -n 1)
export MASTER_ADDR=${MASTER_ADDR:-$head_node}
export MASTER_PORT=$(( 29500 + SLURM_JOB_ID % 1000 ))
echo "minitron: stage report attempt $attempt on $SLURM_JOB_NODELIST (master $MASTER_ADDR:$MASTER_PORT)"

srun --kill-on-bad-exit=1 --wait=60 --mpi=pmix \
    --nodes=1 --ntasks-per-node=8 \
    --container-image='nvcr.io#nvidia/nemo:26.02' \
    --container-mounts=/lustre/fsw/user/minitron-runs:/lustre/fsw/user/minitron-runs,/lustre/fsw/user/hf-cache:/hf-cache,/lustre/fsw/datasets:/datasets:ro \
    --container-workdir=/lustre/fsw/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/code \
    --no-container-mount-home \
    --container-env=HF_HOME,HF_HUB_OFFLINE,HF_TOKEN,MASTER_ADDR,MASTER_PORT,MINITRON_RUN_DIR,MINITRON_STAGE,NCCL_IB_TIMEOUT,NCCL_NVLS_ENABLE,PYTORCH_CUDA_ALLOC_CONF,TORCH_NCCL_AVOID_RECORD_STREAMS,WANDB_API_KEY \
    --container-writable \
    python -m jobs.runtime.task jobs.stages.report --config /lustre/fsw/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/stages/report.json
rc=$?
# Complete during this attempt (its complete marker is newer than this attempt's started marker): the stage
# is done whatever the exit code says. A time-limit signal, the stall watchdog or a rank killed during
# teardown after completion must neither fail it nor cancel its dependents.
if [ "$rc" -ne 0 ] && [ "$markers"/report.complete -nt "$markers"/report.started ]; then
    echo "minitron: stage report complete; exit $rc after completion ignored"
    rc=0
fi

write_marker report.finished "$rc"
exit "$rc"
