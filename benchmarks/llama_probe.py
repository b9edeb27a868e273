"""FP32 eager generate vs Llama recipes, one run, same seeded model and prompt.

    PYTHONPATH=$PWD python benchmarks/llama_probe.py --model llama-3.2-1b \
        --prompt-len 32 --new-tokens 64 --configs fp32,int8,int4,int8_compiled

Reports decode tokens/s, time to first token, weight bytes read per token, achieved GB/s
against this machine's measured copy bandwidth, and teacher-forced fidelity vs FP32.
Recipe sections are given inline (the sections this probe needs), so it runs on its own.
"""
from __future__ import annotations

import argparse
import gc
import json
import time

import torch

import fastpipes
from fastpipes.bench.workload import WorkloadSpec
from fastpipes.pipelines.llama import (LlamaWorkload, compare_logits, decode_weight_bytes,
                                       teacher_forced_logits)

CONFIGS = {
    "fp32": None,
    "int8": {"attention": {"backend": "sdpa"}, "quantize": {"dtype": "int8"}},
    "int8_fp32act": {"attention": {"backend": "sdpa"},
                     "quantize": {"dtype": "int8", "act_dtype": "float32"}},
    "int4": {"attention": {"backend": "sdpa"}, "quantize": {"dtype": "int4", "group_size": 128}},
    "int4_g32": {"attention": {"backend": "sdpa"}, "quantize": {"dtype": "int4", "group_size": 32}},
    "sdpa_static": {"attention": {"backend": "sdpa"}, "kv_cache": {"implementation": "static"}},
    "int8_compiled": {"attention": {"backend": "sdpa"}, "quantize": {"dtype": "int8"},
                      "kv_cache": {"implementation": "static", "compile_decode": True}},
    "int4_compiled": {"attention": {"backend": "sdpa"}, "quantize": {"dtype": "int4"},
                      "kv_cache": {"implementation": "static", "compile_decode": True}},
}


def copy_bandwidth_gbs(nbytes: int = 1 << 30, reps: int = 5) -> float:
    """Best of `reps` large tensor copies: bytes read + written per second."""
    src = torch.ones(nbytes // 4)
    dst = torch.empty_like(src)
    best = float("inf")
    for _ in range(reps):
        t = time.perf_counter()
        dst.copy_(src)
        best = min(best, time.perf_counter() - t)
    return 2 * nbytes / best / 1e9


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default="llama-3.2-1b")
    ap.add_argument("--prompt-len", type=int, default=32)
    ap.add_argument("--new-tokens", type=int, default=64)
    ap.add_argument("--configs", default="fp32,int8,int4")
    ap.add_argument("--json", default="")
    args = ap.parse_args()

    bw = copy_bandwidth_gbs()
    print(f"machine: {fastpipes.hardware.detect().cpu_model}, threads {torch.get_num_threads()}, "
          f"copy bandwidth {bw:.1f} GB/s")
    spec = WorkloadSpec("llama", model=args.model,
                        options={"prompt_len": args.prompt_len, "new_tokens": args.new_tokens})
    wl = LlamaWorkload(spec)
    ref, rows = None, []
    for name in args.configs.split(","):
        t = time.perf_counter()
        model = wl.build()
        build_s = time.perf_counter() - t
        t = time.perf_counter()
        report = fastpipes.accelerate(model, CONFIGS[name]) if CONFIGS[name] else None
        accel_s = time.perf_counter() - t
        inputs = wl.inputs(model)
        # warm-up generate (includes compile for compiled configs), timed apart
        t = time.perf_counter()
        wl.run(model, inputs)
        warm_s = time.perf_counter() - t
        t = time.perf_counter()
        out = wl.run(model, inputs)
        total_s = time.perf_counter() - t
        if ref is None:
            assert name == "fp32", "the first config is the FP32 reference"
            ref = out
            ref.logits = teacher_forced_logits(model, ref.sequences)
        fid = compare_logits(ref.logits, teacher_forced_logits(model, ref.sequences),
                             ref.prompt_len)
        wb = decode_weight_bytes(model)
        row = {"config": name, "build_s": build_s, "accelerate_s": accel_s, "warmup_s": warm_s,
               "generate_s": total_s, "ttft_s": out.ttft_s,
               "decode_tok_s": out.decode_tokens_per_s,
               "e2e_tok_s": args.new_tokens / total_s,
               "weight_gb_per_token": wb / 1e9,
               "achieved_gbs": out.decode_tokens_per_s * wb / 1e9,
               "bandwidth_share": out.decode_tokens_per_s * wb / 1e9 / bw,
               "same_sequence": bool(torch.equal(ref.sequences, out.sequences)), **fid}
        rows.append(row)
        print(json.dumps(row), flush=True)
        del model, out, report
        gc.collect()
    base = rows[0]["decode_tok_s"]
    print(f"\n{'config':16} {'decode tok/s':>12} {'speedup':>8} {'TTFT s':>7} {'GB/tok':>7} "
          f"{'GB/s':>6} {'of BW':>6} {'top1':>6} {'maxerr':>7} {'warmup s':>8}")
    for r in rows:
        print(f"{r['config']:16} {r['decode_tok_s']:12.2f} {r['decode_tok_s'] / base:7.2f}x "
              f"{r['ttft_s']:7.2f} {r['weight_gb_per_token']:7.2f} {r['achieved_gbs']:6.1f} "
              f"{r['bandwidth_share']:6.0%} {r['top1_agreement']:6.3f} {r['max_logit_error']:7.3f} "
              f"{r['warmup_s']:8.1f}")
    if args.json:
        with open(args.json, "w") as f:
            json.dump({"bandwidth_gbs": bw, "args": vars(args), "rows": rows}, f, indent=1)


if __name__ == "__main__":
    main()
