#!/bin/bash
# minitron-launcher 0.1.0 | run minitron-8b-wikitext-20260101-000000-abcd | stage finetune (finetune) | local executor
# what: teacher correction: fine-tune the teacher on the data
# plan: 1 GPU(s), TP=1 PP=1 CP=1 DP=1, MBS=4 GBS=8, 300 steps
# why: TP=1 PP=1 MBS=4: 3.1 of 80 GiB; DP=1, 2 accumulation step(s); limit: stages.finetune.time
# The supervisor runs this in its own process group with stdout/stderr to the stage log and sets
# MINITRON_GPUS to the GPUs it assigned.
set -uo pipefail

# Values are shell-quoted (in single quotes where they need any): nothing in them is expanded by the shell.
export MINITRON_RUN_DIR=/home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd
export MINITRON_STAGE=finetune
export NCCL_NVLS_ENABLE=0
export TORCH_NCCL_AVOID_RECORD_STREAMS=1
# From the submitting shell by name (values never written here): HF_TOKEN HF_HOME

markers=/home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/markers
attempt=${MINITRON_ATTEMPT:-0}
write_marker() {  # atomic: temp file + rename
    printf '%s\n' "$2" > "$markers/.$1.$$" && mv -f "$markers/.$1.$$" "$markers/$1"
}
# started marker: job_id host time attempt
write_marker finetune.started "${MINITRON_JOB_ID:-local-$$} $(hostname) $(date +%s) $attempt"
rm -f "$markers"/finetune.finished "$markers"/finetune.continue "$markers"/finetune.failed
export CUDA_VISIBLE_DEVICES=${MINITRON_GPUS:-}
export MASTER_ADDR=127.0.0.1
export MASTER_PORT=${MINITRON_MASTER_PORT:-29500}
echo "minitron: stage finetune attempt $attempt on $(hostname) GPUs ${CUDA_VISIBLE_DEVICES:-none}"

cd /home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/code || exit 1
python -m torch.distributed.run --standalone --nproc-per-node=1 -m jobs.runtime.task jobs.stages.finetune --config /home/user/minitron-runs/runs/minitron-8b-wikitext-20260101-000000-abcd/stages/finetune.json &
child=$!
trap 'kill -TERM "$child" 2>/dev/null' TERM INT
trap 'kill -USR1 "$child" 2>/dev/null' USR1
wait "$child"
rc=$?
while kill -0 "$child" 2>/dev/null; do wait "$child"; rc=$?; done
# Complete during this attempt (its complete marker is newer than this attempt's started marker): the stage
# is done whatever the exit code says. A time-limit signal, the stall watchdog or a rank killed during
# teardown after completion must neither fail it nor cancel its dependents.
if [ "$rc" -ne 0 ] && [ "$markers"/finetune.complete -nt "$markers"/finetune.started ]; then
    echo "minitron: stage finetune complete; exit $rc after completion ignored"
    rc=0
fi

write_marker finetune.finished "$rc"
exit "$rc"
