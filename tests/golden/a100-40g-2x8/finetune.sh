#!/bin/bash
# minitron-launcher 0.1.0 | run minitron-8b-wikitext-20260101-000000-abcd | stage finetune (finetune)
# what: teacher correction: fine-tune the teacher on the data
# plan: 2 node(s) x 8 GPU(s), TP=2 PP=4 CP=1 DP=2, MBS=1 GBS=128, 30 steps
# why: TP=2 PP=4 MBS=1: 35.2 of 40 GiB; TP=1 PP=1 MBS=4 needs 248.4 GiB and TP=2 PP=4 MBS=2 needs 54.2 GiB of 36.0 usable; DP=2, 64 accumulation step(s); limit: estimate ×1.5 + 10 min + signal lead
#SBATCH --job-name=finetune.minitron-8b-wikitext-20260101-000000-abcd
#SBATCH --comment=minitron:minitron-8b-wikitext-20260101-000000-abcd:finetune
#SBATCH --nodes=2
#SBATCH --ntasks-per-node=8
#SBATCH --gres=gpu:8
#SBATCH --cpus-per-task=16
#SBATCH --mem=480G
#SBATCH --exclusive
#SBATCH --time=00:45:00
#SBATCH --partition=gpu
#SBATCH --account=ml
#SBATCH --output=/home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/logs/finetune-%j.out
#SBATCH --open-mode=append
#SBATCH --requeue
#SBATCH --signal=USR1@300

set -uo pipefail

# Values are shell-quoted (in single quotes where they need any): nothing in them is expanded by the shell.
export MINITRON_RUN_DIR=/home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd
export MINITRON_STAGE=finetune
export NCCL_NVLS_ENABLE=0
export TORCH_NCCL_AVOID_RECORD_STREAMS=1
# From the submitting shell by name (values never written here): HF_TOKEN HF_HOME

markers=/home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/markers
attempt=${SLURM_RESTART_COUNT:-0}
write_marker() {  # atomic: temp file + rename
    printf '%s\n' "$2" > "$markers/.$1.$$" && mv -f "$markers/.$1.$$" "$markers/$1"
}
# started marker: job_id host time attempt
write_marker finetune.started "$SLURM_JOB_ID $(hostname) $(date +%s) $attempt"
rm -f "$markers"/finetune.finished "$markers"/finetune.continue "$markers"/finetune.failed

head_node=$(scontrol show hostnames "$SLURM_JOB_NODELIST" | head -n 1)
MASTER_ADDR=$(scontrol show node "$head_node" | tr ' ' '\n' | sed -n 's/^NodeAddr=//p' | head -n 1)
export MASTER_ADDR=${MASTER_ADDR:-$head_node}
export MASTER_PORT=$(( 29500 + SLURM_JOB_ID % 1000 ))
echo "minitron: stage finetune attempt $attempt on $SLURM_JOB_NODELIST (master $MASTER_ADDR:$MASTER_PORT)"

srun --kill-on-bad-exit=1 --wait=60 --mpi=pmi2 \
    --nodes=2 --ntasks-per-node=8 \
    --container-image='nvcr.io#nvidia/nemo:26.02' \
    --container-mounts=/home/user/minitron-runs:/home/user/minitron-runs \
    --container-workdir=/home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/code \
    --no-container-mount-home \
    --container-env=HF_HOME,HF_TOKEN,MASTER_ADDR,MASTER_PORT,MINITRON_RUN_DIR,MINITRON_STAGE,NCCL_NVLS_ENABLE,TORCH_NCCL_AVOID_RECORD_STREAMS \
    python -m jobs.runtime.task jobs.stages.finetune --config /home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/stages/finetune.json
rc=$?
# Complete during this attempt (its complete marker is newer than this attempt's started marker): the stage
# is done whatever the exit code says. A time-limit signal, the stall watchdog or a rank killed during
# teardown after completion must neither fail it nor cancel its dependents.
if [ "$rc" -ne 0 ] && [ "$markers"/finetune.complete -nt "$markers"/finetune.started ]; then
    echo "minitron: stage finetune complete; exit $rc after completion ignored"
    rc=0
fi

write_marker finetune.finished "$rc"
# Exit 85, or the job's continue marker (srun may report a rank killed after another exited 85):
# a checkpoint was saved before the time limit.
if [ "$rc" -eq 85 ] || [ -e "$markers"/finetune.continue ]; then
    if [ "$attempt" -lt 10 ]; then
        echo "minitron: checkpoint saved before the time limit; continuing (attempt $((attempt + 1)) of 10)"
        scontrol requeue "$SLURM_JOB_ID" && exit 0
        echo "minitron: scontrol requeue failed; the stage stops here"
    else
        echo "minitron: continuation budget (10) spent; the stage stops here"
    fi
fi
exit "$rc"
