"""Where a configuration's time goes: ``fastpipes bench FAMILY --profile``.

After its timed runs, each row profiles one more call (torch.profiler, CPU self time) and
groups the time by kind of work (linear GEMMs, convolutions, batched GEMMs, SDPA,
Inductor's fused kernels, norms, copies). The FP32 baseline also counts the FLOPs of each
group (FlopCounterMode), so each compute group's rate can be read against the GEMM ceiling
of the row's precision class, measured in the same run.

The profiler's CPU time of an op is its wall time on the calling thread (intra-op OpenMP
threads run inside it), so the groups of one call add up to the call's wall time.
Inductor's C++ kernels carry their own names only when
``torch._inductor.config.cpp.enable_kernel_profile`` is on before compiling: a profiling
worker turns it on, which adds a marker per kernel call to its timed runs too.
"""
from __future__ import annotations

from typing import Any, Callable

# (group, substrings of op names, as the profiler ("aten::mm") or the FLOP counter ("aten.mm")
# names them); the first match wins
GROUPS = (
    # before the rest: Inductor names a fused kernel after every op in it (e.g.
    # "cpp_fused__scaled_dot_product_flash_attention_for_cpu_add_..." builds an SDPA mask)
    ("Inductor fused kernels", ("cpp_fused",)),
    ("GEMM: linear layers", ("mkldnn::_linear", "mkl::_mkl_linear", "aten::addmm", "aten::mm",
                             "aten::linear", "aten::_int_mm", "_weight_int8pack_mm",
                             "_weight_int4pack_mm", "onednn::qlinear")),
    ("convolution", ("convolution", "mkldnn_conv", "onednn::qconv")),
    # one group: what eager FP32 computes with batched GEMMs (and the FLOP counter counts),
    # a recipe computes with SDPA; rel-pos einsums are batched GEMMs too
    ("attention: SDPA / batched GEMMs", ("flash_attention", "scaled_dot_product", "aten::bmm",
                                         "aten::einsum", "aten::baddbmm")),
    ("norms", ("group_norm", "layer_norm", "native_batch_norm", "rms_norm")),
    ("copies / layout", ("aten::copy_", "aten::clone", "aten::contiguous", "aten::cat",
                         "aten::empty", "aten::as_strided", "aten::to")),
)
OTHER = "other"


def group_of(op_name: str) -> str:
    name = op_name.replace(".", "::", 1) if op_name.startswith("aten.") else op_name
    return next((g for g, keys in GROUPS if any(k in name for k in keys)), OTHER)


def enable_kernel_names() -> None:
    """Name Inductor's generated kernels in profiles (must precede compilation)."""
    import torch._inductor.config as inductor_config

    inductor_config.cpp.enable_kernel_profile = True


def flops_by_group(call: Callable[[], Any]) -> dict[str, float]:
    """FLOPs of one `call` per group (run it on the FP32 eager pipeline)."""
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    counter = FlopCounterMode(display=False)
    with counter, torch.inference_mode():
        call()
    out: dict[str, float] = {}
    for op, flops in counter.get_flop_counts().get("Global", {}).items():
        g = group_of(str(op))
        out[g] = out.get(g, 0.0) + float(flops)
    return out


def profile_call(call: Callable[[], Any], top: int = 12) -> dict[str, Any]:
    """One profiled `call`: total self time, seconds per group, and the top ops."""
    from torch.profiler import ProfilerActivity, profile

    with profile(activities=[ProfilerActivity.CPU]) as prof:
        call()
    events = prof.key_averages()
    total = sum(e.self_cpu_time_total for e in events) / 1e6
    groups: dict[str, float] = {}
    for e in events:
        g = group_of(e.key)
        groups[g] = groups.get(g, 0.0) + e.self_cpu_time_total / 1e6
    ops = sorted(events, key=lambda e: -e.self_cpu_time_total)[:top]
    return {"total_s": total, "groups": groups,
            "top_ops": [[e.key, e.self_cpu_time_total / 1e6, e.count] for e in ops]}


def markdown(name: str, prof: dict[str, Any], flops: dict[str, float] | None,
             ceiling: tuple[str, float] | None) -> str:
    """One row's profile: seconds, share, FLOPs and rate of each group, vs its ceiling."""
    flops = flops or {}
    unit = "GOP/s" if ceiling and ceiling[0] == "int8" else "GFLOP/s"
    head = f"GEMM ceiling of its class: {ceiling[0]} {ceiling[1]:,.0f} {unit}" if ceiling else ""
    lines = [f"#### where {name}'s time goes ({prof['total_s']:.2f} s of op time in one "
             f"profiled call{'; ' + head if head else ''})", "",
             "| group | s | share | GFLOP (FP32 count) | rate /s | of its ceiling |",
             "|---|---|---|---|---|---|"]
    total = prof["total_s"] or 1.0
    for g, t in sorted(prof["groups"].items(), key=lambda kv: -kv[1]):
        f = flops.get(g, 0.0) / 1e9
        rate = f / t if f and t else None
        share = f"{rate / ceiling[1]:.0%}" if rate and ceiling else "-"
        lines.append(f"| {g} | {t:.3f} | {t / total:.0%} | {f:,.1f} | "
                     f"{f'{rate:,.0f} G' if rate else '-'} | {share} |" if f else
                     f"| {g} | {t:.3f} | {t / total:.0%} | - | - | - |")
    lines += ["", "top ops by self time: " + "; ".join(
        f"{op} {s:.3f} s ({n}x)" for op, s, n in prof["top_ops"][:8])]
    return "\n".join(lines) + "\n"
