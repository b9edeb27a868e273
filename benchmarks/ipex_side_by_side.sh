#!/usr/bin/env bash
# Issue 17, part 4: FP32 eager vs the IPEX recipes vs fastpipes' native recipes in .venv-ipex
# (torch 2.8 + IPEX 2.8), then the native recipes again in .venv (torch 2.13), on one machine
# on one day. SAM vit_b, SDXL (one denoising step at 512x512), Llama-3.2-1B at three prompt
# lengths (prefill = time to first token, decode = tokens/s after it).
#
#   make setup ipex-env && benchmarks/ipex_side_by_side.sh      # full size: hours; quiet machine
#   SIZE=tiny ITERS=1 EXTRA="--no-limits --no-warm-start" benchmarks/ipex_side_by_side.sh
#                                                               # the wiring, in minutes
#
# Writes $OUT/{ipex,main}/{info.json,sam.*,sdxl.*,llama-p*.*} (JSON + Markdown per run).
set -euo pipefail
cd "$(dirname "$0")/.."

SIZE=${SIZE:-full}
ITERS=${ITERS:-3}
OUT=${OUT:-bench-out/ipex-side-by-side}
EXTRA=${EXTRA:-}
PROMPTS=${PROMPTS:-"128 512 2048"}
NEW_TOKENS=${NEW_TOKENS:-32}

SAM_NATIVE=sam_fp32_fast,sam_bf16
SDXL_NATIVE=sdxl_fp32_fast,sdxl_bf16,sdxl_int8_dynamic
LLAMA_NATIVE=llama_attn_eager,llama_attn_sdpa,llama_bf16,llama_woq_int8,llama_int8_dynamic

run() {  # run ENV_NAME BIN_DIR SAM_RECIPES SDXL_RECIPES LLAMA_RECIPES
    local name=$1 bin=$2 out=$OUT/$1
    mkdir -p "$out"
    "$bin/fastpipes" info --json > "$out/info.json"
    local common=(--device cpu --size "$SIZE" --iters "$ITERS" $EXTRA)
    "$bin/fastpipes" bench sam "${common[@]}" --recipes "$3" --max-time 1800 \
        --json "$out/sam.json" --markdown "$out/sam.md" || true
    "$bin/fastpipes" bench sdxl "${common[@]}" --steps 1 --recipes "$4" --max-time 3600 \
        --json "$out/sdxl.json" --markdown "$out/sdxl.md" || true
    for p in $PROMPTS; do
        "$bin/fastpipes" bench llama "${common[@]}" --prompt-len "$p" --new-tokens "$NEW_TOKENS" \
            --recipes "$5" --max-time 1800 \
            --json "$out/llama-p$p.json" --markdown "$out/llama-p$p.md" || true
    done
    echo "$name: wrote $out"
}

run ipex .venv-ipex/bin "$SAM_NATIVE,sam_ipex_bf16" "$SDXL_NATIVE,sdxl_ipex_bf16" \
    "$LLAMA_NATIVE,llama_ipex,llama_ipex_bf16"
run main .venv/bin "$SAM_NATIVE" "$SDXL_NATIVE" "$LLAMA_NATIVE"
