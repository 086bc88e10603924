#!/usr/bin/env bash
# The tiny recipe through `minitron submit` on the GPU device (one H200, no network, Python 3.12 with the
# image's torch 2.11 + CUDA 13), twice at once: with Transformer Engine importable (the container's path: TE
# layer specs, ModelOpt's spec for pruning) and with TE hidden (megatron-core's local spec). Each run has its
# own MINITRON_HOME, job_dir and master port; both share GPU 0. Results land in $OUT (5 files: a call brings
# back 8 at most):
#   $OUT/{te,nonte}/summary.txt  the human status table, per stage the pruned shapes and val losses, key log
#                                lines, the container probe's problems and the HF round trip's rows
#   $OUT/{te,nonte}/files.tgz    status.json, probe.json (`minitron check --probe --json`), roundtrip.json/.log,
#                                and run.tgz: the run's logs, markers, plan, stage configs (no weights)
#   $OUT/device.log              install, TE build and polling log
#
# Fetch first, here: tools/device/fetch_device_wheels.sh (.whl/, .whl-te/py/, .whl-te/parts/ = the TE core wheel
# in 3 parts: one call carries at most 64 MiB). Then back-to-back device calls (the machine is given back
# 30 s after a call; /tmp and processes started in their own session survive between calls), each from the
# repo root (or a snapshot of it) with the named paths carried:
#   1. carry .whl .whl-te/py      : tools/device/device_te.sh stash .whl-te/py && tools/device/device_te.sh base &&
#                                   /tmp/mt-code/tools/device/device_te.sh probe nonte
#   2. carry .whl-te/parts/*-00   : /tmp/mt-code/tools/device/device_te.sh stash .whl-te/parts
#   3. carry .whl-te/parts/*-01   : /tmp/mt-code/tools/device/device_te.sh stash .whl-te/parts
#   4. carry .whl-te/parts/*-02   : /tmp/mt-code/tools/device/device_te.sh stash .whl-te/parts &&
#                                   /tmp/mt-code/tools/device/device_te.sh te-and-wait 480
#   5. (if 4 ended with exit 3)   : /tmp/mt-code/tools/device/device_te.sh wait 540
# `base` installs the NeMo set, copies the code to /tmp/mt-code and submits the TE-hidden run at once, so it
# runs while the parts travel; `probe MODE` runs `minitron check --probe` on the same profile (the local
# executor: one probe job on the device's own Python); `te` joins the parts (sha256 checked), installs TE and
# builds its torch extension on the device (NVTE_CUDA_ARCHS=90, ~90 s); `te-and-wait` = te + submit te + probe
# te + wait. Where one call can carry everything (a machine with network or shared storage), `all` does base,
# te, both submits, both probes and wait. `install` is base without the run; `tf32` (after te) imports
# hf://$HF_REPO with TE and compares it with HF twice, as the stack sets TF32 and with NVIDIA_TF32_OVERRIDE=0
# ($OUT/tf32-default.json, $OUT/tf32-0.json).
# Exit: 0 every submitted run DONE, 1 a run failed or a step broke, 3 still running at the deadline (call `wait` again).
#
# Another NeMo 2 stack for the TE run (a container row of tools/device/stacks/): carry .whl-stack (its wheels,
# fetched by fetch_device_wheels.sh STACK) with call 1; `base` installs them into $STACK_SITE, which goes first on
# the TE run's path (the TE-hidden run keeps the base set unless STACK_RUNS=both). STACK=<row> in front of every
# call names it in the logs. EXTRA_SET="key=value ..." adds recipe overrides to both submits (a shorter graph).
# One call, TE hidden, on a row's stack (no TE parts to carry): carry .whl .whl-stack and run
#   STACK=26.02 STACK_RUNS=both tools/device/device_te.sh base && /tmp/mt-code/tools/device/device_te.sh probe nonte;
#   /tmp/mt-code/tools/device/device_te.sh wait 420
#
# The HF round trip (issue 13 item 8) is the same sequence with ROUNDTRIP=1 in front of every call: `base`
# first saves a random Llama with `transformers` (python -m tools.hf_roundtrip make: its own BPE, the
# tools/device/hf-roundtrip.yaml shape) at $HF_DIR and as the offline hub cache of hf://$HF_REPO under $HF_HOME;
# the runs use tools/device/hf-roundtrip.yaml: TE imports hf://$HF_REPO (NeMo's llm.import_ckpt), non-TE the
# directory (megatron-core's local spec). Each submit also starts a checker in its own session that waits for
# its run and then runs `hf_roundtrip check` (NeMo forward vs transformers for the import, the other source
# form imported in-process, and every exported student) into $WORK/MODE/roundtrip.json; `wait` waits for the
# checkers too and collects roundtrip.json/roundtrip.log into $OUT/MODE.
set -uo pipefail
REPO=$(cd "$(dirname "$0")/../.." && pwd)
CODE=/tmp/mt-code               # the code both runs use (copied once: later calls may carry another tree)
CARRY=/tmp/minitron-carry       # carried TE files, kept across calls
SITE=/tmp/site OVERLAY=/tmp/overlay TE_SITE=/tmp/te-site STACK_SITE=/tmp/stack-site
STACK=${STACK:-} STACK_RUNS=${STACK_RUNS:-te}
EXTRA_SET=${EXTRA_SET:-}
WORK=/tmp/mt-runs
ROUNDTRIP=${ROUNDTRIP:-0}
HF_DIR=/tmp/mt-hf/tiny-llama HF_REPO=minitron-test/tiny-llama
export HF_HOME=/tmp/mt-hf-home
OUT=${OUT:-/tmp/mt-out}
mkdir -p "$OUT" "$CARRY" "$WORK"
LOG=$OUT/device.log
export NCCL_NVLS_ENABLE=0 TORCH_SYMM_MEM_DISABLE_MULTICAST=1 NVSHMEM_DISABLE_NVLS=1 HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
say() { echo "[$(date +%T)] $*" | tee -a "$LOG" >&2; }
pip_target() { python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target "$@"; }

pythonpath() {  # te: TE importable; nonte: TE absent from the path (the row's stack only with STACK_RUNS=both)
    if [ "$1" = te ]; then echo "$OVERLAY:$STACK_SITE:$TE_SITE:$SITE:$CODE"
    elif [ "$STACK_RUNS" = both ]; then echo "$OVERLAY:$STACK_SITE:$SITE:$CODE"
    else echo "$OVERLAY:$SITE:$CODE"; fi
}

stash() {  # copy carried files (dirs or files) into $CARRY, keeping their last path component's folder
    for src in "$@"; do
        [ -e "$src" ] || { say "stash: $src not carried"; return 1; }
        dest=$CARRY/$(basename "$(dirname "$src/.")")
        mkdir -p "$dest" && cp -r "$src"/. "$dest"/ 2>/dev/null || cp "$src" "$CARRY"/
        say "stashed $src -> $dest ($(du -sh "$dest" | cut -f1))"
    done
}

base_install() {  # NeMo set + overlay, code copy
    [ "$REPO" = "$CODE" ] || { rm -rf "$CODE" && mkdir -p "$CODE" && cp -r "$REPO"/. "$CODE"/ \
        && rm -rf "$CODE"/.whl "$CODE"/.whl-te "$CODE"/.whl-stack; }
    pip_target "$SITE" "$REPO"/.whl/*.whl || return 1
    pip_target "$OVERLAY" "$REPO"/.whl/overlay/*.whl || return 1
    mkdir -p "$STACK_SITE"
    if [ -d "$REPO"/.whl-stack ]; then
        pip_target "$STACK_SITE" "$REPO"/.whl-stack/*.whl || return 1
        say "stack ${STACK:-?} for the TE run: $(ls "$REPO"/.whl-stack | tr '\n' ' ')"
    fi
    say "NeMo set installed ($(ls "$REPO"/.whl/*.whl | wc -l) wheels + overlay); code at $CODE"
    nvidia-smi --query-gpu=index,name,memory.total,driver_version --format=csv,noheader >> "$LOG"
}

base() {  # base_install, then the TE-hidden run starts at once
    base_install || return 1
    if [ "$ROUNDTRIP" = 1 ]; then
        (cd "$CODE" && PYTHONPATH=$(pythonpath nonte) python3 -m tools.hf_roundtrip make "$HF_DIR" \
            --hf-home "$HF_HOME" --repo-id "$HF_REPO") >> "$LOG" 2>&1 || { say "hf_roundtrip make failed"; return 1; }
        say "HF model saved: $HF_DIR and hf://$HF_REPO (HF_HOME=$HF_HOME)"
    fi
    submit nonte
}

te() {  # join the core wheel, install TE, build its torch extension here
    local build=/tmp/te-build core
    mkdir -p "$build"
    core=$(awk '{print $2}' "$CARRY"/py/SHA256SUMS)
    cat "$CARRY"/parts/"$core".part-* > "$build/$core" || return 1
    (cd "$build" && sha256sum -c "$CARRY"/py/SHA256SUMS) >> "$LOG" 2>&1 || { say "core wheel sha256 mismatch"; return 1; }
    pip_target "$TE_SITE" "$build/$core" "$CARRY"/py/transformer_engine-*.whl "$CARRY"/py/nvdlfw_inspect-*.whl || return 1
    tar -xzf "$CARRY"/py/transformer_engine_torch-*.tar.gz -C "$build" || return 1
    local t0=$SECONDS
    (cd "$build"/transformer_engine_torch-*/ && PYTHONPATH=$TE_SITE:$SITE NVTE_CUDA_ARCHS=90 MAX_JOBS=16 \
        python3 -m pip wheel -q --no-deps --no-build-isolation --no-index -w "$build/dist" .) >> "$LOG" 2>&1 \
        || { say "TE torch extension build failed (see device.log)"; return 1; }
    say "TE torch extension built in $((SECONDS - t0)) s: $(ls "$build"/dist)"
    # pip --target skips it (TE_SITE/transformer_engine exists): unpack the wheel (.so + dist-info) by hand
    python3 - "$build"/dist/transformer_engine_torch-*.whl "$TE_SITE" <<'EOF' >> "$LOG" 2>&1 || return 1
import sys, zipfile
z = zipfile.ZipFile(sys.argv[1]); z.extractall(sys.argv[2]); print("unpacked:", *z.namelist(), sep="\n  ")
EOF
    PYTHONPATH=$(pythonpath te) python3 -c "
import torch, transformer_engine, transformer_engine.pytorch as te
from megatron.core.models.gpt.gpt_layer_specs import get_gpt_layer_with_transformer_engine_spec
get_gpt_layer_with_transformer_engine_spec()
x = torch.randn(8, 64, device='cuda', dtype=torch.bfloat16, requires_grad=True)
te.Linear(64, 64, params_dtype=torch.bfloat16)(x).sum().backward()
print('TE', transformer_engine.__version__, 'importable: te.Linear fwd/bwd ran, TE layer spec built')" 2>&1 | tail -1 | tee -a "$LOG"
}

write_profile() {  # $1 = te | nonte: the device profile with its own job_dir, master port and attention
    local mode=$1 dir=$WORK/$1 port
    port=$([ "$mode" = te ] && echo 29500 || echo 29610)
    mkdir -p "$dir"
    sed -e "s|^job_dir:.*|job_dir: $dir/runs|" -e "/^master_port:/d" -e "/^attention:/d" \
        "$CODE"/cluster_profiles/device-h200.yaml > "$dir/profile.yaml"
    printf 'master_port: %s\nattention: %s\n' "$port" "$([ "$mode" = te ] && echo fused || echo unfused)" >> "$dir/profile.yaml"
}

probe() {  # $1 = te | nonte: `minitron check --probe --json` through the local executor, as a user would
    local mode=$1 dir=$WORK/$1 rc
    [ -f "$dir/profile.yaml" ] || write_profile "$mode"
    (cd "$CODE" && PYTHONPATH=$(pythonpath "$mode") MINITRON_HOME=$dir/home CUDA_VISIBLE_DEVICES=0 \
        python3 -m launcher.app.cli check --probe -p "$dir/profile.yaml" --timeout 300 --json > "$dir/probe.json" \
        2> "$dir/probe.log"); rc=$?
    say "probe $mode: exit $rc; $(python3 -c "import json,sys; d=json.load(open(sys.argv[1])); print(len(d.get('problems', [])), 'problem(s):', '; '.join(p['severity'] + ' ' + p['what'][:90] for p in d.get('problems', [])))" "$dir/probe.json" 2>&1)"
}

submit() {  # $1 = te | nonte: the tiny recipe with the device profile (own job_dir, home, master port)
    local mode=$1 dir=$WORK/$1
    write_profile "$mode"
    local have_te
    have_te=$(cd "$CODE" && PYTHONPATH=$(pythonpath "$mode") python3 -c "from jobs.runtime.engine import te_available as t; print(t())")
    say "submit $mode (te_available=$have_te)"
    if [ "$have_te" != "$([ "$mode" = te ] && echo True || echo False)" ]; then
        say "submit $mode: TE importability is not what this run needs"; return 1
    fi
    local recipe=(-r tiny) sets kv
    read -ra sets <<< "$EXTRA_SET"   # split on blanks, no globbing ("students=[width]")
    for kv in "${sets[@]}"; do recipe+=(--set "$kv"); done
    if [ "$ROUNDTRIP" = 1 ]; then
        recipe=(-r "$CODE/tools/device/hf-roundtrip.yaml")
        [ "$mode" = nonte ] && recipe+=(--set "model.source=$HF_DIR" --set "model.tokenizer=$HF_DIR")
    fi
    (cd "$CODE" && PYTHONPATH=$(pythonpath "$mode") MINITRON_HOME=$dir/home CUDA_VISIBLE_DEVICES=0 \
        python3 -m launcher.app.cli submit -p "$dir/profile.yaml" "${recipe[@]}" --set stages.export.enabled=true --json \
        > "$dir/submit.json" 2>> "$LOG") || { say "submit $mode failed"; cat "$dir/submit.json" >> "$LOG"; return 1; }
    say "submitted $mode (${recipe[*]}): $(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['run_dir'])" "$dir/submit.json")"
    if [ "$ROUNDTRIP" = 1 ]; then
        rm -f "$dir/roundtrip.done"
        ROUNDTRIP=1 setsid nohup "$CODE/tools/device/device_te.sh" rt-check "$mode" > "$dir/roundtrip.log" 2>&1 < /dev/null &
        say "round-trip checker for $mode started (pid $!)"
    fi
}

rt_check() {  # $1 = mode, in its own session: wait for the run, then NeMo-vs-transformers logits
    local mode=$1 dir=$WORK/$1 rc run_dir other
    while :; do
        (cd "$CODE" && PYTHONPATH=$(pythonpath "$mode") MINITRON_HOME=$dir/home \
            python3 -m launcher.app.cli status "$(run_id "$mode")" --json > "$dir/rt-status.json" 2>/dev/null); rc=$?
        [ "$rc" = 3 ] || break
        sleep 5
    done
    run_dir=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['run_dir'])" "$dir/submit.json")
    other=$([ "$mode" = te ] && echo "$HF_DIR" || echo "hf://$HF_REPO")
    echo "[$(date +%T)] run ended (status exit $rc); check starts (other source: $other)"
    local t0=$SECONDS
    # bounded: a hang (none seen, but the TE import never ran to the end here before) must not eat the budget
    (cd "$CODE" && PYTHONPATH=$(pythonpath "$mode") CUDA_VISIBLE_DEVICES=0 timeout 420 python3 -m tools.hf_roundtrip check \
        "$run_dir" --hf "$HF_DIR" --other-source "$other" --out "$dir/roundtrip.json"); rc=$?
    echo "[$(date +%T)] check exit $rc in $((SECONDS - t0)) s"
    echo "$rc" > "$dir/roundtrip.done"
}

run_id() {  # $1 = mode: the pipeline run's id (`status` names it: the probe's runs share the MINITRON_HOME)
    python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['run_id'])" "$WORK/$1/submit.json"
}

status() {  # $1 = mode; writes status.json under $WORK/mode; returns the CLI's exit code (3 = running)
    local mode=$1 dir=$WORK/$1 rc
    [ -f "$dir/submit.json" ] || return 9
    (cd "$CODE" && PYTHONPATH=$(pythonpath "$1") MINITRON_HOME=$dir/home \
        python3 -m launcher.app.cli status "$(run_id "$mode")" --json > "$dir/status.json" 2>> "$LOG"); rc=$?
    echo "$rc" > "$dir/status.rc"
    return "$rc"
}

tf32() {  # the TE import compared with HF, TF32 as the stack sets it, then off (NVIDIA_TF32_OVERRIDE=0)
    local w=/tmp/mt-tf32 env_value
    mkdir -p "$w"
    [ -f "$HF_DIR/config.json" ] || (cd "$CODE" && PYTHONPATH=$(pythonpath te) python3 -m tools.hf_roundtrip make \
        "$HF_DIR" --hf-home "$HF_HOME" --repo-id "$HF_REPO") >> "$LOG" 2>&1 || return 1
    for env_value in default 0; do
        (cd "$CODE" && export PYTHONPATH=$(pythonpath te) CUDA_VISIBLE_DEVICES=0 MASTER_ADDR=127.0.0.1 MASTER_PORT=29733 && \
         if [ "$env_value" = 0 ]; then export NVIDIA_TF32_OVERRIDE=0; fi && \
         timeout 300 python3 -m tools.hf_roundtrip import-compare --hf "$HF_DIR" --source "hf://$HF_REPO" \
            --work "$w" --out "$OUT/tf32-$env_value.json") > "$w/$env_value.log" 2>&1
        say "TE import vs HF, NVIDIA_TF32_OVERRIDE=$env_value: exit $?; $(tail -n 3 "$w/$env_value.log" | grep -o '"max_abs_diff": [^,]*' | tail -1)"
    done
}

collect() {  # $1 = mode: summary.txt (status table, shapes, losses, probe, round trip) and files.tgz into $OUT/mode
    local mode=$1 dir=$WORK/$1 run_dir sum
    [ -f "$dir/submit.json" ] || [ -f "$dir/probe.json" ] || return 0
    mkdir -p "$OUT/$mode" "$dir/pack"
    sum=$OUT/$mode/summary.txt
    : > "$sum"
    if [ -f "$dir/submit.json" ]; then
        status "$mode"
        run_dir=$(python3 -c "import json,sys; print(json.load(open(sys.argv[1]))['run_dir'])" "$dir/submit.json")
        (cd "$CODE" && PYTHONPATH=$(pythonpath "$mode") MINITRON_HOME=$dir/home COLUMNS=200 \
            python3 -m launcher.app.cli status "$(run_id "$mode")" > "$sum" 2>&1)
        python3 - "$run_dir" >> "$sum" 2>&1 <<'EOF'
import json, pathlib, re, sys
run = pathlib.Path(sys.argv[1])
print("\n== saved models (context/model.yaml of each stage's outputs.model)")
for marker in sorted((run / "markers").glob("*.complete")):
    outputs = json.loads(marker.read_text()).get("outputs", {})
    model = outputs.get("model")
    ctx = pathlib.Path(model or "", "context", "model.yaml") if model else None
    if ctx and ctx.exists():
        text = ctx.read_text()
        vals = {k: (re.search(rf"^\s+{k}: (\S+)", text, re.M) or [None, "?"])[1]
                for k in ("num_layers", "hidden_size", "ffn_hidden_size", "num_attention_heads", "num_query_groups")}
        spec = (re.search(r"transformer_layer_spec:\s*\n(?:\s+_call_.*\n)?\s+_target_: (\S+)", text) or [None, "?"])[1]
        print(f"{marker.stem:14s} {vals}  spec={spec}")
print("\n== validation losses (report stage)")
for path in (run / "work").rglob("*.json"):
    try:
        data = json.loads(path.read_text())
    except Exception:
        continue
    if isinstance(data, dict) and "val_loss" in data and isinstance(data["val_loss"], dict):
        for label, loss in data["val_loss"].items():
            print(f"{label:28s} {loss:.4f}")
print("\n== key log lines")
pat = re.compile(r"Dropping layers|Missing key|_extra_state|Unexpected keys|lacks|Traceback|Error|"
                 r"modelopt layer spec|val loss|parameters\) saved|Pruned model saved", re.I)
for log in sorted((run / "logs").glob("*")):
    if log.is_file():
        hits = [l.rstrip()[:300] for l in log.read_text(errors="replace").splitlines() if pat.search(l)]
        for line in hits[:12]:
            print(f"{log.name}: {line}")
EOF
        tar -czf "$dir/pack/run.tgz" -C "$run_dir" --exclude='*.distcp' --exclude='*.pt' --exclude='*.bin' \
            --exclude='*.idx' --exclude='checkpoints' --exclude='*.safetensors' . 2>> "$LOG"
    fi
    if [ -f "$dir/probe.json" ]; then
        python3 - "$dir/probe.json" >> "$sum" 2>&1 <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print("\n== minitron check --probe (ok=%s)" % d.get("ok"))
for probe in (d.get("probes") or {}).values():
    if probe:
        print(json.dumps({k: v for k, v in probe.items() if k != "functions"}, indent=1)[:4000])
for p in d.get("problems", []):
    print(f"{p['severity']} {p['probe']}: {p['what']} -> {p['fix']}")
EOF
    fi
    if [ -f "$dir/roundtrip.json" ]; then
        python3 - "$dir/roundtrip.json" >> "$sum" 2>&1 <<'EOF'
import json, sys
d = json.load(open(sys.argv[1]))
print("\n== HF round trip (te_available=%s)" % d.get("te_available"))
for r in d["rows"]:
    print(f"{r['max_abs_diff']:.3g} max abs, {r['mean_abs_diff']:.3g} mean, argmax {r['argmax_agreement']:.1%}: {r['what']}")
EOF
    fi
    for f in status.json probe.json probe.log roundtrip.json roundtrip.log submit.json; do
        [ -f "$dir/$f" ] && cp "$dir/$f" "$dir/pack/$f"
    done
    tar -czf "$OUT/$mode/files.tgz" -C "$dir/pack" . 2>> "$LOG"
    say "collected $mode: $(du -sh "$OUT/$mode/files.tgz" | cut -f1)"
}

checkers_done() {  # every submitted run's round-trip checker has written its exit code
    local m
    for m in te nonte; do
        [ -f "$WORK/$m/submit.json" ] && [ ! -f "$WORK/$m/roundtrip.done" ] && return 1
    done
    return 0
}

wait_runs() {  # poll both runs until neither is running or $1 seconds passed; collect
    local deadline=$((SECONDS + ${1:-540})) te_rc nonte_rc
    while :; do
        status te; te_rc=$?
        status nonte; nonte_rc=$?
        if [ "$te_rc" != 3 ] && [ "$nonte_rc" != 3 ] && { [ "$ROUNDTRIP" != 1 ] || checkers_done; }; then break; fi
        if [ "$SECONDS" -ge "$deadline" ]; then break; fi
        sleep 10
    done
    say "status exit codes: te=$te_rc nonte=$nonte_rc (0 DONE, 3 running, 9 not submitted)"
    collect te; collect nonte
    for m in te nonte; do [ -f "$OUT/$m/summary.txt" ] && sed -n '1,14p' "$OUT/$m/summary.txt"; done
    if [ "$te_rc" = 3 ] || [ "$nonte_rc" = 3 ]; then return 3; fi
    if [ "$ROUNDTRIP" = 1 ] && ! checkers_done; then return 3; fi
    # every submitted run DONE (a run never submitted, 9, is no failure unless neither was)
    { [ "$te_rc" = 0 ] || [ "$te_rc" = 9 ]; } && { [ "$nonte_rc" = 0 ] || [ "$nonte_rc" = 9 ]; } \
        && [ "$te_rc$nonte_rc" != 99 ]
}

cmd=${1:-all}; shift || true
case "$cmd" in
    stash) stash "$@" ;;
    base) base ;;
    te) te ;;
    submit) submit "$1" ;;
    probe) probe "$1" ;;
    install) ROUNDTRIP=0 base_install ;;
    tf32) tf32 ;;
    wait) wait_runs "${1:-540}" ;;
    rt-check) rt_check "$1" ;;
    te-and-wait) { te && submit te && probe te; } || say "TE path not started"; wait_runs "${1:-480}" ;;
    all) stash "$REPO"/.whl-te/py "$REPO"/.whl-te/parts && base && probe nonte && { te && submit te && probe te; }
         wait_runs "${1:-3600}" ;;
    *) echo "usage: $0 stash PATH... | install | base | te | tf32 | submit te|nonte | probe te|nonte | wait [S] | te-and-wait [S] | all [S] | rt-check te|nonte  (ROUNDTRIP=1: the HF round trip)" >&2; exit 2 ;;
esac
