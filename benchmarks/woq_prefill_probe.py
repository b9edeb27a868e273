"""Which GEMM a weight-only layer should run a prompt of M rows on: one Llama decoder
layer's Linear shapes (q, k, v, o, gate, up, down), summed, per M, interleaved in one process.

    PYTHONPATH=$PWD python benchmarks/woq_prefill_probe.py [--shape 1b|tiny] [--rows 8,32,...]

Columns: FP32 nn.Linear; a BF16 GEMM on a BF16 copy of the weight (what no dequantization
can beat); the packed int8/int4 kernels (BF16 activations); the dense prompt
path (kernels/woq_prefill.py) in BF16 and FP32; ratios are over FP32 in the same round.
The FROM_ROWS thresholds of kernels/woq_prefill.py come from this table (docs/llama.md).
"""
from __future__ import annotations

import argparse
import statistics
import time

import torch

from fastpipes.kernels.woq import Int4WeightOnlyLinear, Int8WeightOnlyLinear

SHAPES = {"1b": (2048, 512, 8192), "7b": (4096, 4096, 11008)}  # hidden, kv width, mlp


def layer_shapes(name: str) -> list[tuple[int, int]]:
    h, kv, mlp = SHAPES[name]
    return [(h, h), (kv, h), (kv, h), (h, h), (mlp, h), (mlp, h), (h, mlp)]  # (N, K)


def lin_bf16(lin: torch.nn.Linear) -> torch.nn.Module:
    w = lin.weight.detach().bfloat16()
    return lambda x: torch.nn.functional.linear(x.bfloat16(), w)


def variants(n: int, k: int) -> dict:
    lin = torch.nn.Linear(k, n, bias=False)
    out = {"fp32": lin, "bf16_prebuilt": lin_bf16(lin)}  # the BF16 GEMM alone: the ceiling
    for kind, make in (("int8", lambda d: Int8WeightOnlyLinear.from_linear(lin, act_dtype=d)),
                       ("int4", lambda d: Int4WeightOnlyLinear.from_linear(lin, 128, d))):
        q = make("bfloat16")
        out[f"{kind}_kernel"] = (q, 0)
        out[f"{kind}_dense_bf16"] = (q, torch.bfloat16)
        out[f"{kind}_dense_fp32"] = (make("float32"), torch.float32)
    return out


def call(v, x):
    if not isinstance(v, tuple):
        return v(x)
    q, dtype = v  # force the path: 1 = every row count dense, 0 = never
    q.prompt_rows, q.prompt_dtype = (1, dtype) if dtype else (0, q.act_dtype)
    return q(x)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--shape", default="1b", choices=sorted(SHAPES))
    ap.add_argument("--rows", default="8,16,32,64,128,256,512")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--only", default="", help="comma-separated columns (fp32 is always run)")
    a = ap.parse_args()
    torch.manual_seed(0)
    layers = [variants(n, k) for n, k in layer_shapes(a.shape)]
    names = [v for v in layers[0] if not a.only or v == "fp32" or v in a.only.split(",")]
    print("rows  " + "  ".join(f"{v:>16}" for v in names))
    with torch.no_grad():
        for m in map(int, a.rows.split(",")):
            xs = {k: torch.randn(m, k) for k in {k for _, k in layer_shapes(a.shape)}}
            times = {v: [] for v in names}
            for _ in range(a.repeats + 1):  # the first round warms up
                for v in names:  # interleaved: load changes hit every variant alike
                    t0 = time.perf_counter()
                    for lay, (_, k) in zip(layers, layer_shapes(a.shape)):
                        call(lay[v], xs[k])
                    times[v].append(time.perf_counter() - t0)
            med = {v: statistics.median(t[1:]) for v, t in times.items()}
            print(f"{m:>4}  " + "  ".join(
                f"{med[v] * 1e3:7.1f}ms {med['fp32'] / med[v]:5.2f}x" for v in names), flush=True)


if __name__ == "__main__":
    main()
