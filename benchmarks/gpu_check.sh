#!/usr/bin/env bash
# fastpipes on a lent NVIDIA GPU (H200), in one shot: bash benchmarks/gpu_check.sh [--dry-run]
#
# Run from the repository root on the GPU machine, with the carried wheels in .whl/ (below).
# Every step runs under its own `timeout`, goes on when one fails, and is skipped once the
# whole budget (GPU_CHECK_BUDGET seconds, default 420) would be overrun. Steps in order of
# value; ONLY=step,step runs a subset (a rerun), SKIP=step,step leaves some out.
#
# Results ($OUT, default /tmp/gpu_check_out; rewritten after every step, so a run killed at
# its limit still returns what it had):
#   $OUT/summary.md        nvidia-smi, fastpipes info, every step's status and time, each
#                          bench's Markdown table, the probes' JSON
#   $OUT/steps.tsv         step, exit code (124 = its timeout), seconds, what it ran
#   $OUT/results.tar.gz    every bench JSON/Markdown, probe JSON and per-step log
#   $OUT/log.txt           the whole console output
#
# --dry-run: the very same steps on this CPU at tiny sizes (--size tiny, CPU device, the
# CUDA recipes with requires.device=any), with the budget lifted (GPU_CHECK_BUDGET=0 means
# none): proves the script and every code path it calls, except the CUDA kernels.
#
# Steps (GPU) and what they do:
#   info      nvidia-smi; python3 -m fastpipes info
#   ceilings  dense GEMM per precision (FP32/TF32-off, BF16, FP16, int8) and HBM copy GB/s
#   tests     pytest -m cuda (device plumbing, CUDA WOQ kernels vs dequantized weights,
#             SAM masked SDPA on the efficient kernel, tiny Llama with the CUDA recipes)
#   sdpa      which SDPA backends take SAM's rel-pos additive mask, times, kernels launched
#   sam_h16   bench SAM vit_h encoder batch 16: FP32 eager vs sam_cuda_bf16
#   sdxl      bench SDXL UNet step at 1024x1024 (CFG batch 2): FP32 eager vs sdxl_cuda_bf16
#   llama1b   bench Llama-3.2-1B shape decode: FP32 vs llama_cuda_bf16 / woq_int8 / woq_int4
#   llama7b   bench Llama-2-7B shape decode (built in BF16, no FP32 baseline): the same recipes
#   woq       int8 / int4 / BF16 decode GEMV at 7B shapes, GB/s
#   sam_b     bench SAM vit_b batch 1 (with the end-to-end predict) and batch 16
#   click     SAM vit_b per-click latency vs GPU busy time (host share)
#
# Wheels the GPU image lacks (Python 3.12, manylinux x86_64; 6.4 MB), fetched where pip
# reaches PyPI, into the repository root's .whl/ (ignored by git: .git/info/exclude has /.whl/):
#   P="--no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
#      --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 \
#      --platform manylinux2014_x86_64 -d .whl"
#   python3 -m pip download $P omegaconf==2.4.0 diffusers==0.42.1 segment-anything==1.0 \
#       importlib_metadata==8.7.0
# (omegaconf 2.4 needs only PyYAML; diffusers 0.42.1 needs huggingface-hub>=1.32, regex,
# requests, safetensors>=0.8, Pillow, filelock, numpy - all on the image - and
# importlib_metadata; importlib_metadata 8.7 needs zipp, on the image.)
set -u
DRY=0
[ "${1:-}" = "--dry-run" ] && DRY=1
ROOT=$(pwd)
OUT=${OUT:-/tmp/gpu_check_out}
W=${GPU_CHECK_WORK:-/tmp/gpu_check_work}
rm -rf "$W" && mkdir -p "$OUT" "$W/logs"
BUDGET=${GPU_CHECK_BUDGET:-$([ $DRY = 1 ] && echo 0 || echo 420)}
S=${GPU_CHECK_CAP_SCALE:-$([ $DRY = 1 ] && echo 5 || echo 1)}  # caps x S (a loaded CPU compiles slowly)
START=$(date +%s)
exec > >(tee -a "$OUT/log.txt") 2>&1
export PYTHONUNBUFFERED=1 COLUMNS=160 FASTPIPES_CACHE_DIR=${FASTPIPES_CACHE_DIR:-$W/cache}
PY=${PY:-python3}

if [ $DRY = 0 ] && ls .whl/*.whl >/dev/null 2>&1; then
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
    --target /tmp/site .whl/*.whl || echo "wheel install FAILED"
  export PYTHONPATH=$ROOT:/tmp/site
else
  export PYTHONPATH=$ROOT${PYTHONPATH:+:$PYTHONPATH}
fi
FP="$PY -m fastpipes"

if [ $DRY = 1 ]; then
  DEV=cpu
  SAM_H="--size tiny"; SAM_B="--size tiny"; SDXL="--size tiny --option resolution=64"
  L1B="--size tiny"; L7B="--size tiny"; ANY="--set requires.device=any"; ITERS=1
  PROBE="--dry-run"
else
  DEV=cuda
  SAM_H="--model vit_h"; SAM_B="--model vit_b"; SDXL="--option resolution=1024"
  L1B="--model llama-3.2-1b"; L7B="--model llama-2-7b"; ANY=""; ITERS=3
  PROBE=""
fi
B="--device $DEV --no-warm-start --quiet --iters $ITERS --warmup 1 $ANY"

echo -e "step\trc\tseconds\tcommand" > "$OUT/steps.tsv"

wanted() {  # is step $1 selected by ONLY / SKIP?
  [ -n "${ONLY:-}" ] && [[ ",$ONLY," != *",$1,"* ]] && return 1
  [ -n "${SKIP:-}" ] && [[ ",$SKIP," == *",$1,"* ]] && return 1
  return 0
}

collect() {  # rebuild the returned files from the work folder (after every step)
  {
    echo "# fastpipes GPU check ($( [ $DRY = 1 ] && echo 'DRY RUN on the CPU' || echo GPU ))"
    echo; echo "started $(date -u -d @"$START" +%FT%TZ), budget ${BUDGET}s, git $(git rev-parse --short HEAD 2>/dev/null)"
    echo; echo '## steps'; echo; echo '```'; cat "$OUT/steps.tsv"; echo '```'
    for f in "$W"/info.txt; do [ -f "$f" ] && { echo; echo '## machine'; echo; echo '```'; cat "$f"; echo '```'; }; done
    for f in "$W"/*.md; do [ -f "$f" ] && { echo; echo "## $(basename "$f" .md)"; echo; cat "$f"; }; done
    for f in "$W"/probe_*.json; do [ -f "$f" ] && { echo; echo "## $(basename "$f" .json)"; echo; echo '```json'; head -c 20000 "$f"; echo; echo '```'; }; done
    for f in "$W"/logs/tests.log; do [ -f "$f" ] && { echo; echo '## tests (tail)'; echo; echo '```'; tail -n 40 "$f"; echo '```'; }; done
  } > "$OUT/summary.md.tmp" && mv "$OUT/summary.md.tmp" "$OUT/summary.md"
  tar -C "$W" --exclude=./cache -czf "$OUT/results.tar.gz.tmp" . 2>/dev/null \
    && mv "$OUT/results.tar.gz.tmp" "$OUT/results.tar.gz"
}

step() {  # step NAME CAP_SECONDS COMMAND...: run under timeout, within the budget
  local name=$1 cap=$(($2 * S)); shift 2
  wanted "$name" || return 0
  local now left
  now=$(date +%s)
  if [ "$BUDGET" -gt 0 ]; then
    left=$((START + BUDGET - now - 5))
    if [ "$left" -lt 20 ]; then
      echo -e "$name\tskipped\t0\tbudget spent ($((now - START))s of ${BUDGET}s)" >> "$OUT/steps.tsv"
      echo "=== $name: SKIPPED (budget spent)"; return 0
    fi
    [ "$cap" -gt "$left" ] && cap=$left
  fi
  echo "=== $name (cap ${cap}s, at $((now - START))s): $*"
  local t0=$(date +%s)
  # SIGTERM at the cap: a bench then stops its worker and still writes the rows it measured
  timeout --kill-after=15 "$cap" bash -c "$*" > "$W/logs/$name.log" 2>&1
  local rc=$?
  tail -n 25 "$W/logs/$name.log"
  echo -e "$name\t$rc\t$(( $(date +%s) - t0 ))\t$*" >> "$OUT/steps.tsv"
  echo "=== $name: rc=$rc in $(( $(date +%s) - t0 ))s"
  collect
}

step info 60 "{ nvidia-smi || echo 'no nvidia-smi'; $FP info; $PY -c 'import torch, sys; print(\"torch\", torch.__version__, \"cuda\", torch.version.cuda, torch.cuda.is_available() and torch.cuda.get_device_name(0))'; $PY -m pip list 2>/dev/null | grep -i -E '^(torch|transformers|diffusers|omegaconf|segment|triton|safetensors) '; } > $W/info.txt 2>&1; cat $W/info.txt"
step ceilings 90 "$PY benchmarks/gpu_probe.py ceilings $PROBE --out $W/probe_ceilings.json"
step tests 150 "$PY -m pytest -q -x -m cuda -p no:cacheprovider tests/test_cuda_recipes.py tests/test_device_build.py"
step sdpa 60 "$PY benchmarks/gpu_probe.py sdpa $PROBE --out $W/probe_sdpa.json"
step sam_h16 200 "$FP bench sam $SAM_H --batch-size 16 --recipes sam_cuda_bf16 --option e2e=0 $B --max-time $((180 * S)) --json $W/sam_vit_h_b16.json --markdown $W/sam_vit_h_b16.md"
step sdxl 240 "$FP bench sdxl $SDXL --option steps=2 --recipes sdxl_cuda_bf16 $B --max-time $((220 * S)) --json $W/sdxl_1024.json --markdown $W/sdxl_1024.md"
step llama1b 240 "$FP bench llama $L1B --recipes llama_cuda_bf16,llama_cuda_woq_int8,llama_cuda_woq_int4 --option new_tokens=64 $B --max-time $((120 * S)) --json $W/llama_1b.json --markdown $W/llama_1b.md"
step llama7b 200 "$FP bench llama $L7B --option dtype=bfloat16 --no-baseline --recipes llama_cuda_bf16,llama_cuda_woq_int4,llama_cuda_woq_int8 --option new_tokens=64 $B --max-time $((100 * S)) --json $W/llama_7b.json --markdown $W/llama_7b.md"
step woq 90 "$PY benchmarks/gpu_probe.py woq $PROBE --out $W/probe_woq.json"
step sam_b 150 "$FP bench sam $SAM_B --batch-size 1 --recipes sam_cuda_bf16 $B --no-limits --max-time $((70 * S)) --json $W/sam_vit_b_b1.json --markdown $W/sam_vit_b_b1.md && $FP bench sam $SAM_B --batch-size 16 --recipes sam_cuda_bf16 --option e2e=0 $B --no-limits --max-time $((70 * S)) --json $W/sam_vit_b_b16.json --markdown $W/sam_vit_b_b16.md"
step click 60 "$PY benchmarks/gpu_probe.py click $PROBE --out $W/probe_click.json"
collect
echo "=== done in $(( $(date +%s) - START ))s; results in $OUT:"; ls -la "$OUT"
