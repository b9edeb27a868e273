"""BF16 Linear: PyTorch's ``F.linear`` against the prepack pass's oneDNN-packed weights
(``PackedLinear``), interleaved per shape, medians; shapes of SAM vit_b's encoder, its mask
decoder (a click), and one decode row of a Llama-3.2-1B / 7B projection.

    PYTHONPATH=$PWD python benchmarks/linear_prepack.py
"""
import torch
import torch.nn as nn
import torch.nn.functional as F

from fastpipes.kernels.packed_linear import PackedLinear
from fastpipes.timing import median_time

SHAPES = {  # name: (rows M, in K, out N)
    "vit_b qkv, global block": (4096, 768, 2304),
    "vit_b mlp.lin1": (4096, 768, 3072),
    "vit_b mlp.lin2": (4096, 3072, 768),
    "vit_b qkv, padded windows (upstream)": (4900, 768, 2304),
    "mask decoder token MLP (click)": (64, 256, 2048),
    "Llama-1B q_proj, one decode row": (1, 2048, 2048),
    "Llama-7B q_proj, one decode row": (1, 4096, 4096),
}


def main() -> None:
    torch.set_num_threads(2)
    print(f"load {open('/proc/loadavg').read().split()[:3]}")
    for name, (m, k, n) in SHAPES.items():
        torch.manual_seed(0)
        lin = nn.Linear(k, n)
        packed = PackedLinear(lin)
        x = torch.randn(m, k).bfloat16()
        w, b = lin.weight.bfloat16(), lin.bias.bfloat16()
        iters = 20 if m * k * n > 1e8 else 200
        with torch.no_grad():
            t_ref, want = median_time(lambda: F.linear(x, w, b), iters)
            t_ours, got = median_time(lambda: packed(x), iters)
            t_ref2, _ = median_time(lambda: F.linear(x, w, b), iters)  # again: drift check
        gflop = 2 * m * k * n / 1e9
        base = min(t_ref, t_ref2)
        print(f"{name} ({m}x{k}x{n}): F.linear {base * 1e3:.3f} ms ({gflop / base:.0f} GFLOP/s; "
              f"repeat {max(t_ref, t_ref2) / base:.2f}x), packed {t_ours * 1e3:.3f} ms "
              f"({gflop / t_ours:.0f} GFLOP/s), {base / t_ours:.2f}x, max diff "
              f"{(got.float() - want.float()).abs().max().item():.3g}")


if __name__ == "__main__":
    main()
