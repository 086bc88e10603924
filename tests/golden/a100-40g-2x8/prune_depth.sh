#!/bin/bash
# minitron-launcher 0.1.0 | run minitron-8b-wikitext-20260101-000000-abcd | stage prune_depth (prune)
# what: depth or width pruning of the fine-tuned teacher (ModelOpt Minitron)
# plan: 1 node(s) x 8 GPU(s), TP=1 PP=8 CP=1 DP=1, MBS=4 GBS=4
# why: TP=1 PP=8: pruning needs TP=1; drop layers 16-31; no calibration; one node holds its pipeline; limit: estimate ×1.5 + 10 min
#SBATCH --job-name=pr-depth.minitron-8b-wikitext-20260101-000000-abcd
#SBATCH --comment=minitron:minitron-8b-wikitext-20260101-000000-abcd:prune_depth
#SBATCH --nodes=1
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=16
#SBATCH --mem=480G
#SBATCH --exclusive
#SBATCH --time=00:15:00
#SBATCH --partition=gpu
#SBATCH --account=ml
#SBATCH --output=/home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/logs/prune_depth-%j.out
#SBATCH --open-mode=append
#SBATCH --no-requeue

set -uo pipefail

# Values are shell-quoted (in single quotes where they need any): nothing in them is expanded by the shell.
export MINITRON_RUN_DIR=/home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd
export MINITRON_STAGE=prune_depth
export NCCL_NVLS_ENABLE=0
export TORCH_NCCL_AVOID_RECORD_STREAMS=1
# From the submitting shell by name (values never written here): HF_TOKEN HF_HOME

markers=/home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/markers
attempt=${SLURM_RESTART_COUNT:-0}
write_marker() {  # atomic: temp file + rename
    printf '%s\n' "$2" > "$markers/.$1.$$" && mv -f "$markers/.$1.$$" "$markers/$1"
}
# started marker: job_id host time attempt
write_marker prune_depth.started "$SLURM_JOB_ID $(hostname) $(date +%s) $attempt"
rm -f "$markers"/prune_depth.finished "$markers"/prune_depth.continue "$markers"/prune_depth.failed

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_ADDR=$(scontrol show node "$head_node" | tr ' ' '\n' | sed -n 's/^NodeAddr=//p' | head -n 1)
export MASTER_ADDR=${MASTER_ADDR:-$head_node}
export MASTER_PORT=$(( 29500 + SLURM_JOB_ID % 1000 ))
echo "minitron: stage prune_depth attempt $attempt on $SLURM_JOB_NODELIST (master $MASTER_ADDR:$MASTER_PORT)"

srun --kill-on-bad-exit=1 --wait=60 --mpi=pmi2 \
    --nodes=1 --ntasks-per-node=8 \
    --container-image='nvcr.io#nvidia/nemo:26.02' \
    --container-mounts=/home/user/minitron-runs:/home/user/minitron-runs \
    --container-workdir=/home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/code \
    --no-container-mount-home \
    --container-env=HF_HOME,HF_TOKEN,MASTER_ADDR,MASTER_PORT,MINITRON_RUN_DIR,MINITRON_STAGE,NCCL_NVLS_ENABLE,TORCH_NCCL_AVOID_RECORD_STREAMS \
    python -m jobs.runtime.task jobs.stages.prune --config /home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/stages/prune_depth.json
rc=$?
# Complete during this attempt (its complete marker is newer than this attempt's started marker): the stage
# is done whatever the exit code says. A time-limit signal, the stall watchdog or a rank killed during
# teardown after completion must neither fail it nor cancel its dependents.
if [ "$rc" -ne 0 ] && [ "$markers"/prune_depth.complete -nt "$markers"/prune_depth.started ]; then
    echo "minitron: stage prune_depth complete; exit $rc after completion ignored"
    rc=0
fi

write_marker prune_depth.finished "$rc"
exit "$rc"
