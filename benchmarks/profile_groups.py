"""Group a torch.profiler CPU profile's self time by kind of work (shared by the probes).

The profiler's CPU time of an op is its wall time on the calling thread (intra-op OpenMP
threads run inside it), so the groups of one call add up to the call's wall time. Inductor's
C++ kernels carry their own names only when ``torch._inductor.config.cpp.enable_kernel_profile``
was on before compiling.
"""
from __future__ import annotations

# (group, substrings of profiler op names); the first match wins
GROUPS = (
    ("Inductor fused kernels", ("cpp_fused",)),
    ("GEMM: linear layers", ("mkldnn::_linear", "mkl::_mkl_linear", "aten::addmm", "aten::mm",
                             "aten::linear", "aten::_int_mm", "_weight_int8pack_mm")),
    ("convolution", ("convolution", "mkldnn_conv", "onednn::qconv", "mkldnn::_convolution")),
    ("GEMM: batched", ("aten::bmm", "aten::einsum", "aten::baddbmm")),
    ("SDPA attention", ("flash_attention", "scaled_dot_product")),
    ("norms", ("group_norm", "layer_norm", "native_batch_norm")),
    ("copies / layout", ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat",
                         "aten::empty", "aten::as_strided", "aten::to")),
)


def group_times(prof, groups=GROUPS) -> tuple[float, dict[str, float]]:
    """(total seconds of self time, {group: seconds}); ops matching no group are "other"."""
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    out: dict[str, float] = {}
    for e in events:
        name = next((g for g, keys in groups if any(k in e.key for k in keys)), "other")
        out[name] = out.get(name, 0.0) + e.self_cpu_time_total / 1e6
    return total, out


def table(total: float, groups: dict[str, float], gflop: dict[str, float] | None = None,
          peak: float | None = None) -> str:
    """Markdown rows per group; with `gflop` (group -> GFLOP of that work) and `peak`
    (GFLOP/s), also the rate each compute group reaches and its share of the peak."""
    gflop = gflop or {}
    lines = [f"profiled call: {total:.2f} s of op time", "",
             "| group | s | share | GFLOP | GFLOP/s | of GEMM peak |", "|---|---|---|---|---|---|"]
    for g, t in sorted(groups.items(), key=lambda kv: -kv[1]):
        f = gflop.get(g)
        rate = f / t if f and t else None
        lines.append(f"| {g} | {t:.2f} | {100 * t / total:.0f}% | {f:.0f} | {rate:.0f} | "
                     f"{100 * rate / peak:.0f}% |" if rate and peak else
                     f"| {g} | {t:.2f} | {100 * t / total:.0f}% | - | - | - |")
    return "\n".join(lines)
