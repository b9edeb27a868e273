"""One SAM rel-pos attention call: PyTorch SDPA with the block-wise mask (what sam_bf16 runs)
against fastpipes' native kernel (sam_bf16_native), BF16 inputs, median of 5 calls each (200
for small ones) after one warm-up, with a 4096^3 BF16 GEMM's rate in the same run as the
ceiling (issue 26 part 4).

    PYTHONPATH=$PWD python benchmarks/sam_attention_native.py
"""
import torch

from fastpipes.kernels.relpos_flash import relpos_attention
from fastpipes.kernels.sam_attention import sdpa_rel_pos
from fastpipes.timing import median_time

SHAPES = {"vit_b global": (1, 12, 64, 64, 64), "vit_b windows": (25, 12, 14, 14, 64),
          "vit_h global": (1, 16, 64, 64, 80),
          # small calls, where per-call costs show: one window, the tiny test model's blocks
          "one vit_b window": (1, 12, 14, 14, 64), "tiny global": (1, 4, 8, 8, 16),
          "tiny windows": (9, 4, 3, 3, 16)}  # B, heads, H, W, head dim


def median_s(fn, n: int) -> float:
    return median_time(fn, n)[0]


def main() -> None:
    torch.manual_seed(0)
    print("load", open("/proc/loadavg").read().split()[:3])
    a, b = (torch.randn(4096, 4096, dtype=torch.bfloat16) for _ in range(2))
    print(f"bf16 GEMM 4096^3: {2 * 4096 ** 3 / median_s(lambda: a @ b, 3) / 1e9:.1f} GFLOP/s")
    for name, (B, N, H, W, C) in SHAPES.items():
        L = H * W
        q, k, v = (torch.randn(B, N, L, C).to(torch.bfloat16) for _ in range(3))
        rel_h = torch.randn(B, N, L, H).to(torch.bfloat16)
        rel_w = torch.randn(B, N, L, W).to(torch.bfloat16)
        gflop = 4 * B * N * L * L * C / 1e9
        block = 1024 if L > 1000 else 0  # as the recipes: sam_bf16's attention.block_size
        n = 5 if gflop > 1 else 200  # small calls: more of them for a steady median
        t_sdpa = median_s(lambda: sdpa_rel_pos(q, k, v, rel_h, rel_w, block, scale=C ** -0.5), n)
        t_ours = median_s(lambda: relpos_attention(q, k, v, rel_h, rel_w, C ** -0.5, W), n)
        print(f"{name} {(B, N, H, W, C)}: sdpa {t_sdpa * 1e3:.3f} ms ({gflop / t_sdpa:.0f} "
              f"GFLOP/s), native {t_ours * 1e3:.3f} ms ({gflop / t_ours:.0f} GFLOP/s), "
              f"{t_sdpa / t_ours:.2f}x")


if __name__ == "__main__":
    main()
