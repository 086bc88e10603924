#!/bin/bash
# minitron-launcher 0.1.0 | run minitron-8b-wikitext-20260101-000000-abcd | stage distill_width (distill)
# what: logits distillation of a pruned student from the teacher
# plan: 4 node(s) x 8 GPU(s), TP=1 PP=2 CP=1 DP=16, MBS=1 GBS=128, 30 steps
# why: TP=1 PP=2 MBS=1: 61.4 of 80 GiB; TP=1 PP=1 MBS=4 needs 245.2 GiB and TP=1 PP=2 MBS=2 needs 97.1 GiB of 72.0 usable; DP=16, 8 accumulation step(s); limit: estimate ×1.5 + 10 min + signal lead
#SBATCH --job-name=kd-width.minitron-8b-wikitext-20260101-000000-abcd
#SBATCH --comment=minitron:minitron-8b-wikitext-20260101-000000-abcd:distill_width,llm-pruning
#SBATCH --nodes=4
#SBATCH --ntasks-per-node=8
#SBATCH --gpus-per-node=8
#SBATCH --cpus-per-task=14
#SBATCH --mem=0
#SBATCH --exclusive
#SBATCH --time=00:25:00
#SBATCH --partition=batch
#SBATCH --account=llm_research
#SBATCH --qos=normal
#SBATCH --output=/lustre/fsw/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/logs/distill_width-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=USR1@300

set -uo pipefail

# Values are shell-quoted (in single quotes where they need any): nothing in them is expanded by the shell.
export MINITRON_RUN_DIR=/lustre/fsw/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd
export MINITRON_STAGE=distill_width
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
write_marker distill_width.started "$SLURM_JOB_ID $(hostname) $(date +%s) $attempt"
rm -f "$markers"/distill_width.finished "$markers"/distill_width.continue "$markers"/distill_width.failed

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_ADDR=$(scontrol show node "$head_node" | tr ' ' '\n' | sed -n 's/^NodeAddr=//p' | head -n 1)
export MASTER_ADDR=${MASTER_ADDR:-$head_node}
export MASTER_PORT=$(( 29500 + SLURM_JOB_ID % 1000 ))
echo "minitron: stage distill_width attempt $attempt on $SLURM_JOB_NODELIST (master $MASTER_ADDR:$MASTER_PORT)"

srun --kill-on-bad-exit=1 --wait=60 --mpi=pmix \
    --nodes=4 --ntasks-per-node=8 \
    --container-image='nvcr.io#nvidia/nemo:26.02' \
    --container-mounts=/lustre/fsw/user/minitron-runs:/lustre/fsw/user/minitron-runs,/lustre/fsw/user/hf-cache:/hf-cache,/lustre/fsw/datasets:/datasets:ro \
    --container-workdir=/lustre/fsw/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/code \
    --no-container-mount-home \
    --container-env=HF_HOME,HF_HUB_OFFLINE,HF_TOKEN,MASTER_ADDR,MASTER_PORT,MINITRON_RUN_DIR,MINITRON_STAGE,NCCL_IB_TIMEOUT,NCCL_NVLS_ENABLE,PYTORCH_CUDA_ALLOC_CONF,TORCH_NCCL_AVOID_RECORD_STREAMS,WANDB_API_KEY \
    --container-writable \
    python -m jobs.runtime.task jobs.stages.distill --config /lustre/fsw/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/stages/distill_width.json
rc=$?
# Complete during this attempt (its complete marker is newer than this attempt's started marker): the stage
# is done whatever the exit code says. A time-limit signal, the stall watchdog or a rank killed during
# teardown after completion must neither fail it nor cancel its dependents.
if [ "$rc" -ne 0 ] && [ "$markers"/distill_width.complete -nt "$markers"/distill_width.started ]; then
    echo "minitron: stage distill_width complete; exit $rc after completion ignored"
    rc=0
fi

write_marker distill_width.finished "$rc"
# Exit 85, or the job's continue marker (srun may report a rank killed after another exited 85):
# a checkpoint was saved before the time limit.
if [ "$rc" -eq 85 ] || [ -e "$markers"/distill_width.continue ]; then
    if [ "$attempt" -lt 10 ]; then
        echo "minitron: checkpoint saved before the time limit; continuing (attempt $((attempt + 1)) of 10)"
        scontrol requeue "$SLURM_JOB_ID" && exit 0
        echo "minitron: scontrol requeue failed; the stage stops here"
    else
        echo "minitron: continuation budget (10) spent; the stage stops here"
    fi
fi
exit "$rc"
