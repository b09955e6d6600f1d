#!/usr/bin/env bash
# GPU smoke check of pretraining (issue #19), for a machine that has torch (CUDA) and numpy but
# perhaps none of this project's other dependencies, and no network.
#
#   make gpu-bundle                      # here (CPU, online): wheels into build/gpu-bundle/
#   bash bench/gpu_check.sh              # there, from a copy of the repo with build/gpu-bundle
#
# It asks the machine's pip which of the bundle's requirements (build/gpu-bundle/
# requirements.txt: deepspeed, pydantic, transformers, ... with pyproject.toml's ranges) its
# Python lacks, installs only those wheels into a temporary directory on PYTHONPATH (nothing goes
# into site-packages), makes synthetic tokens (pretrain.dataset.write_synthetic_tokens, 32,000-
# token vocabulary), trains configs/pretrain/125m.yaml on one GPU in bf16 with
# configs/deepspeed/gpu/zero2.json and --compile for 30 steps (warmup 10, no evaluation until
# the last step, one checkpoint at the end), exports the checkpoint's fp32 master weights
# (pretrain.export) and compares the logits of the export loaded by transformers in bf16 with
# the training model's (pretrain.model.CausalLM, bf16) on a validation batch. Prints one JSON
# line: tokens/s and MFU (steps 2-N: step 1 includes compiling, reported as compile_s), peak
# GPU memory, compile seconds (or why compiling failed), first and last training loss, the
# logits' max |difference|, torch's version and which wheels it installed.
# Before any work it stops (exit 2) with the reason when an argument is bad, the bundle is for
# another Python, or --device cuda finds no CUDA device.
# Everything it writes (wheels, tokens, checkpoint, torch.compile/Triton caches, DeepSpeed
# extensions, bytecode) lies in one temporary directory, removed on exit, also on failure.
# Budget: 8 minutes in all (--budget, default 470 s): each stage runs under `timeout` with what
# is left of it, and a stage that runs out fails the check (exit 124).
#
# Options:
#   --device cuda|cpu  cuda (default) as above; cpu: configs/pretrain/tiny.yaml with
#                      configs/deepspeed/zero2.json, eager, fp32 (the CPU accelerator's "auto"),
#                      a 3,000-token vocabulary, 3 steps: this script's test without a GPU
#   --config YAML      the model and training config (default configs/pretrain/125m.yaml on
#                      cuda, tiny.yaml on cpu); e.g. configs/pretrain/350m.yaml
#   --steps N          training steps (default 30 on cuda, 3 on cpu)
#   --compile, --no-compile
#                      torch.compile or eager (default: compile on cuda, eager on cpu); when
#                      training with compile fails (not for want of time), it trains again
#                      eager in the time left, and the JSON line says why (compile_error)
#   --budget S         seconds for the whole check (default 470)
#   --python PY        the interpreter with torch (default python3)
#   --bundle DIR       the wheel directory (default build/gpu-bundle)
set -euo pipefail

REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
DEVICE=cuda CONFIG="" STEPS="" BUDGET=470 PY=python3 BUNDLE=$REPO/build/gpu-bundle COMPILE=""
usage() { sed -n '2,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d' | sed 's/^# \{0,1\}//'; }
while [ $# -gt 0 ]; do
    case $1 in
        --device) DEVICE=${2:-} ;;
        --config) CONFIG=${2:-} ;;
        --steps) STEPS=${2:-} ;;
        --budget) BUDGET=${2:-} ;;
        --python) PY=${2:-} ;;
        --bundle) BUNDLE=${2:-} ;;
        --compile) COMPILE=1; shift; continue ;;
        --no-compile) COMPILE=0; shift; continue ;;
        -h|--help) usage; exit 0 ;;
        *) echo "gpu_check: unknown argument: $1 (see --help)" >&2; exit 2 ;;
    esac
    [ $# -ge 2 ] || { echo "gpu_check: $1 needs a value (see --help)" >&2; exit 2; }
    shift 2
done
case $DEVICE in
    cuda) CONFIG=${CONFIG:-configs/pretrain/125m.yaml} DS=configs/deepspeed/gpu/zero2.json
          VOCAB=32000 EXTRA=() STEPS=${STEPS:-30} COMPILE=${COMPILE:-1} ;;
    cpu) CONFIG=${CONFIG:-configs/pretrain/tiny.yaml} DS=configs/deepspeed/zero2.json VOCAB=3000
         EXTRA=(--micro_batch_size 4 --grad_accum 2) STEPS=${STEPS:-3} COMPILE=${COMPILE:-0}
         export DS_ACCELERATOR=cpu OMP_NUM_THREADS=${OMP_NUM_THREADS:-2} ;;
    *) echo "gpu_check: --device: '$DEVICE' is not cuda or cpu" >&2; exit 2 ;;
esac
# a path from here or from the repository; shown relative to the repository when inside it
for path in "$CONFIG" "$REPO/$CONFIG" ""; do
    [ -n "$path" ] || { echo "gpu_check: --config: no file $CONFIG" >&2; exit 2; }
    [ -f "$path" ] && { CONFIG=$(realpath --relative-base="$REPO" "$path"); break; }
done
for value in "--steps $STEPS" "--budget $BUDGET"; do
    [[ ${value#* } =~ ^[1-9][0-9]*$ ]] || {
        echo "gpu_check: ${value% *}: '${value#* }' is not a positive whole number" >&2; exit 2; }
done
START=$(date +%s)
DEADLINE=$((START + BUDGET))

# try_stage NAME COMMAND...: COMMAND under the time left; on failure say which stage, and
# return its exit status (124: out of time)
try_stage() {
    local name=$1 left code=0
    shift
    left=$((DEADLINE - $(date +%s)))
    if [ "$left" -le 0 ]; then
        echo "gpu_check: out of time before: $name" >&2
        return 124
    fi
    timeout "$left" "$@" || code=$?
    if [ $code -ne 0 ]; then
        if [[ $name == training* ]] && [ -f "$WORK/train.log" ]; then
            tail -n 40 "$WORK/train.log" >&2
        fi
        [ $code -eq 124 ] && echo "gpu_check: out of time in: $name" >&2
        echo "gpu_check: $name failed (exit $code)" >&2
    fi
    return $code
}
# stage NAME COMMAND...: try_stage, and exit on failure
stage() { try_stage "$@" || exit $?; }

WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu-check.XXXXXX")
cleanup() { rm -rf "$WORK"; }
trap cleanup EXIT
trap 'exit 130' INT TERM

# every cache and scratch file of this run inside WORK
export TORCHINDUCTOR_CACHE_DIR=$WORK/cache/inductor TRITON_CACHE_DIR=$WORK/cache/triton \
    TRITON_HOME=$WORK/cache/triton-home TORCH_EXTENSIONS_DIR=$WORK/cache/torch_extensions \
    HF_HOME=$WORK/cache/hf XDG_CACHE_HOME=$WORK/cache PYTHONPYCACHEPREFIX=$WORK/pycache \
    MPLCONFIGDIR=$WORK/cache/mpl TMPDIR=$WORK/tmp HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PIP_CONFIG_FILE=/dev/null
mkdir -p "$WORK/tmp"

for file in requirements.txt python-version; do
    [ -f "$BUNDLE/$file" ] || {
        echo "gpu_check: no $BUNDLE/$file: run \`make gpu-bundle\` on a machine with internet" >&2
        exit 2; }
done
WANT=$(cat "$BUNDLE/python-version")
read -r HAVE CUDA TORCH < <("$PY" -c 'import sys, torch
print("%d.%d" % sys.version_info[:2], int(torch.cuda.is_available()), torch.__version__)' ||
    echo "none")
[ "$HAVE" != none ] || { echo "gpu_check: $PY cannot import torch" >&2; exit 2; }
[ "$HAVE" = "$WANT" ] || {
    echo "gpu_check: $PY is Python $HAVE, the bundle's wheels are for $WANT:" \
        "make gpu-bundle GPU_PYTHON=$HAVE" >&2
    exit 2; }
[ "$DEVICE" = cpu ] || [ "$CUDA" = 1 ] || {
    echo "gpu_check: $PY's torch $TORCH sees no CUDA device (without one: --device cpu)" >&2
    exit 2; }
# what this environment lacks, or holds outside the ranges: pip's own answer, installing nothing
stage "resolving the requirements" "$PY" -m pip install --dry-run --quiet --no-index \
    --find-links "$BUNDLE" --report "$WORK/plan.json" -r "$BUNDLE/requirements.txt"
mapfile -t WHEELS < <("$PY" - "$WORK/plan.json" <<'PYTHON'
import json
import sys
from urllib.parse import unquote, urlparse

for item in json.load(open(sys.argv[1]))["install"]:
    print(unquote(urlparse(item["download_info"]["url"]).path))
PYTHON
)
if [ ${#WHEELS[@]} -gt 0 ]; then
    echo "gpu_check: installing ${#WHEELS[@]} wheels: ${WHEELS[*]##*/}" >&2
    stage "installing the bundle" "$PY" -m pip install --quiet --no-index --no-deps \
        --target "$WORK/site" "${WHEELS[@]}"
fi
export PYTHONPATH=$WORK/site:$REPO

cd "$REPO"
stage "synthetic tokens" "$PY" -c "from pretrain.dataset import write_synthetic_tokens as w; \
w('$WORK/tokens', vocab_size=$VOCAB, train_tokens=1 << 22, val_tokens=1 << 18)"

# train COMPILE: the trainer, its output in WORK/train.log (whose tail is shown if it fails)
train() {
    local name=training mode=--no-compile
    [ "$1" = 1 ] && name="training (compiled)" mode=--compile
    rm -rf "$WORK/ckpt"
    try_stage "$name" sh -c 'log=$1; shift; exec "$@" > "$log" 2>&1' sh "$WORK/train.log" \
        "$PY" pretrain/train.py --config "$CONFIG" --deepspeed_config "$DS" \
        --data "$WORK/tokens" --output "$WORK/ckpt" --max_steps "$STEPS" \
        --warmup_steps "$((STEPS / 3))" --eval_every "$STEPS" --eval_steps 2 \
        --checkpoint_every "$STEPS" --log_every 10 "$mode" "${EXTRA[@]}"
}
COMPILE_ERROR=""
code=0
train "$COMPILE" || code=$?
if [ $code -ne 0 ] && [ $code -ne 124 ] && [ "$COMPILE" = 1 ]; then
    COMPILE_ERROR=$({ grep -oE '[A-Za-z_.]+(Error|Exception): .*' "$WORK/train.log" || true; } |
                    tail -n 1 | cut -c 1-400)
    COMPILE_ERROR=${COMPILE_ERROR:-exit $code: $(tail -n 1 "$WORK/train.log" | cut -c 1-400)}
    echo "gpu_check: training with torch.compile failed; training again eager" >&2
    COMPILE=0 code=0
    train 0 || code=$?
fi
[ $code -eq 0 ] || exit $code

stage "export and logits comparison" "$PY" - "$WORK" "$CONFIG" "$DS" "$START" "$COMPILE" \
    "$COMPILE_ERROR" "${WHEELS[@]##*/}" <<'PYTHON'
import contextlib
import csv
import json
import re
import sys
import time
from pathlib import Path

import torch

from pretrain.dataset import TokenDataset
from pretrain.export import load_hf_model, save_hf_model
from pretrain.model import ModelConfig
from pretrain.training.engine import consolidated_state_dict

work, config, ds, start = Path(sys.argv[1]), sys.argv[2], sys.argv[3], float(sys.argv[4])
compiled, compile_error = sys.argv[5] == "1", sys.argv[6] or None
installed = sys.argv[7:]  # the bundle's wheels this machine lacked
ckpt = work / "ckpt"
with open(ckpt / "metrics.csv", newline="") as stream:
    rows = [r for r in csv.DictReader(stream) if r["split"] == "train"]
later = rows[1:] or rows  # step 1 includes torch.compile's time (left out, but warm-up)


def mean(key: str) -> float | None:
    values = [float(r[key]) for r in later if r[key]]
    return sum(values) / len(values) if values else None


with contextlib.redirect_stdout(sys.stderr):  # stdout: the JSON line only
    log = (work / "train.log").read_text()
    peak = re.search(r"peak device memory ([\d.]+) GiB", log)
    tag = (ckpt / "latest").read_text().strip()
    state = json.loads((ckpt / tag / "train_state.json").read_text())
    model_config = ModelConfig(**state["model"])
    out = save_hf_model(consolidated_state_dict(ckpt, tag), model_config, work / "hf")

    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    import transformers  # noqa: E402

    hf = transformers.LlamaForCausalLM.from_pretrained(out, dtype=torch.bfloat16).to(device).eval()
    ours = load_hf_model(out).to(device=device, dtype=torch.bfloat16)
    val = TokenDataset(work / "tokens", min(512, state["training"]["seq_len"]), "val")
    batch = torch.from_numpy(val[0][None, :-1]).to(device).repeat(2, 1)
    with torch.no_grad():
        diff = (hf(batch).logits.float() - ours(batch).logits.float()).abs().max().item()
print(json.dumps({
    "device": torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu",
    "config": config, "deepspeed_config": ds, "steps": int(rows[-1]["step"]),
    "tokens_per_s": round(mean("tokens_per_s"), 1),
    "mfu": None if mean("mfu") is None else round(mean("mfu"), 4),
    "peak_memory_gib": float(peak[1]) if peak else None,
    "compiled": compiled, "compile_error": compile_error,
    "compile_s": round(sum(float(r["compile_s"]) for r in rows if r.get("compile_s")), 1),
    "loss_first": float(rows[0]["loss"]), "loss_last": float(rows[-1]["loss"]),
    "export_bf16_logits_max_abs_diff": diff, "torch": torch.__version__,
    "installed_from_bundle": installed,
    "wall_s": round(time.time() - start, 1)}))
PYTHON
