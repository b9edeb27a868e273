"""One SAM vit_b global-attention layer's attention ([1, 12, 4096, 64] BF16 q/k/v with the
rel-pos terms), eager, interleaved: PyTorch's CPU flash SDPA with the block-wise mask at
several block sizes, without a mask, with the rel-pos bias folded into a 192-wide q.k, the
explicit math path, and a BF16 GEMM of the encoder's MLP shape for the rate to compare to
(issue 26 part 4). GFLOP/s count 4*L*L*C*heads (the q.k and p.v products).

    PYTHONPATH=$PWD python benchmarks/sam_global_attention_probe.py 7
"""
import time, statistics, torch, torch.nn.functional as F, sys
from fastpipes.kernels.sam_attention import rel_pos_mask
torch.set_num_threads(2); torch.manual_seed(0)
B, N, H, W, C = 1, 12, 64, 64, 64
L = H * W
bf = torch.bfloat16
q, k, v = (torch.randn(B, N, L, C, dtype=bf) for _ in range(3))
rel_h = torch.randn(B, N, L, H, dtype=bf); rel_w = torch.randn(B, N, L, W, dtype=bf)
scale = C ** -0.5
def blocked(bs):
    def f():
        outs = []
        for s in range(0, L, bs):
            m = rel_pos_mask(rel_h[:, :, s:s+bs], rel_w[:, :, s:s+bs])
            outs.append(F.scaled_dot_product_attention(q[:, :, s:s+bs], k, v, attn_mask=m, scale=scale))
        return torch.cat(outs, 2)
    return f
masks = {bs: [rel_pos_mask(rel_h[:, :, s:s+bs], rel_w[:, :, s:s+bs]) for s in range(0, L, bs)] for bs in (1024,)}
def sdpa_only(bs):
    def f():
        return torch.cat([F.scaled_dot_product_attention(q[:, :, s:s+bs], k, v, attn_mask=m, scale=scale) for s, m in zip(range(0, L, bs), masks[bs])], 2)
    return f
# augmented: q' = [q*scale, rel_h, rel_w], k' = [k, onehot(h), onehot(w)]
hk = torch.arange(L) // W; wk = torch.arange(L) % W
kaug = torch.cat([k, F.one_hot(hk, H).to(bf).expand(B, N, L, H), F.one_hot(wk, W).to(bf).expand(B, N, L, W)], -1)
qaug = torch.cat([q * scale, rel_h, rel_w], -1)
def aug(): return F.scaled_dot_product_attention(qaug, kaug, v, scale=1.0)
def nomask(): return F.scaled_dot_product_attention(q, k, v, scale=scale)
def math_(bs):
    def f():
        outs = []
        for s in range(0, L, bs):
            a = torch.matmul(q[:, :, s:s+bs] * scale, k.transpose(-1, -2)).float()
            a = a.view(B, N, -1, H, W) + rel_h[:, :, s:s+bs, :, None] + rel_w[:, :, s:s+bs, None, :]
            outs.append(torch.matmul(a.view(B, N, -1, L).softmax(-1).to(bf), v))
        return torch.cat(outs, 2)
    return f
A = torch.randn(4096, 768, dtype=bf); Wt = torch.randn(768, 3072, dtype=bf)
def gemm(): return A @ Wt
ref = blocked(1024)()
variants = {"blocked1024(mask+sdpa)": blocked(1024), "sdpa_only1024": sdpa_only(1024), "blocked4096": blocked(4096),
            "blocked512": blocked(512), "blocked256": blocked(256), "aug_qk192_nomask": aug, "nomask_lowerbound": nomask,
            "math1024": math_(1024), "gemm4096x768x3072": gemm}
for n, f in variants.items():
    if n.startswith("gemm") or n.startswith("nomask"): continue
    o = f(); print(n, "max err vs blocked1024", (o.float() - ref.float()).abs().max().item(), flush=True)
times = {n: [] for n in variants}
for r in range(int(sys.argv[1])):
    for n, f in variants.items():
        t = time.perf_counter(); f(); times[n].append(time.perf_counter() - t)
print("load", open("/proc/loadavg").read().split()[:3])
fl = 4 * L * L * C * N
for n, ts in times.items():
    m = statistics.median(ts)
    g = (2 * 4096 * 768 * 3072 if n.startswith("gemm") else fl * (192 + 64) / 128 if n.startswith("aug") else fl) / m / 1e9
    print(f"{n:26s} {m*1e3:8.1f} ms  {g:6.0f} GFLOP/s (aug counts its 192-wide q.k)")
