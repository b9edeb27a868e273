"""Peak memory of one vit_b global-attention block (64x64 tokens, 12 heads): upstream eager
Attention vs SDPA with the rel-pos mask built whole (block_size=0) or block-wise.

Each variant runs in its own subprocess; peak = ru_maxrss after the forward minus ru_maxrss
after building the inputs (CPU tensors are plain malloc, so maxrss sees them).

    PYTHONPATH=$PWD python benchmarks/sam_attention_memory.py
"""
from __future__ import annotations

import json
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time, torch
from fastpipes.sam.pipeline import sam_modeling
from fastpipes.passes.attention_sites.sam import SamSdpaAttention
variant = sys.argv[1]
torch.manual_seed(0)
attn = sam_modeling().image_encoder.Attention(768, num_heads=12, use_rel_pos=True,
                                              input_size=(64, 64)).eval()
with torch.no_grad():
    attn.rel_pos_h.normal_(0, 0.5); attn.rel_pos_w.normal_(0, 0.5)
x = torch.randn(1, 64, 64, 768)
mod = attn if variant == "upstream" else SamSdpaAttention(attn, int(variant))
with torch.inference_mode():
    mod(torch.randn(1, 8, 8, 768))  # warm up kernels/allocator at a small size
base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
t0 = time.perf_counter()
with torch.inference_mode():
    y = mod(x)
dt = time.perf_counter() - t0
peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
print(json.dumps({"variant": variant, "extra_peak_MiB": (peak - base) / 1024, "seconds": dt}))
"""


def main() -> None:
    rows = []
    for variant in ("upstream", "0", "1024", "256", "64"):
        r = subprocess.run([sys.executable, "-c", CHILD, variant], capture_output=True, text=True)
        if r.returncode:
            print(r.stderr, file=sys.stderr)
            continue
        rows.append(json.loads(r.stdout.strip().splitlines()[-1]))
    print("| variant | extra peak RSS (MiB) | forward s |\n|---|---|---|")
    for row in rows:
        name = {"upstream": "upstream eager Attention", "0": "SDPA, whole mask (block_size=0)"}.get(
            row["variant"], f"SDPA, block_size={row['variant']}")
        print(f"| {name} | {row['extra_peak_MiB']:.0f} | {row['seconds']:.2f} |")


if __name__ == "__main__":
    main()
