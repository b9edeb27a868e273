"""GPU probes that are not `fastpipes bench` rows (benchmarks/gpu_check.sh runs them).

    python3 benchmarks/gpu_probe.py ceilings --out ceilings.json   # dense GEMM per dtype, copy GB/s
    python3 benchmarks/gpu_probe.py sdpa --out sdpa.json           # which SDPA kernels take SAM's mask
    python3 benchmarks/gpu_probe.py woq --out woq.json             # int8/int4 GEMV vs BF16, GB/s
    python3 benchmarks/gpu_probe.py click --out click.json         # SAM per-click time vs GPU busy

``--dry-run`` runs the same code on the CPU at tiny sizes (proves the script, not the
numbers); without it the device is ``cuda`` and a missing GPU is an error.
"""
from __future__ import annotations

import argparse
import copy
import json
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))


def _sync(dev: str) -> None:
    if dev.startswith("cuda"):
        torch.cuda.synchronize()


def _time(fn, dev: str, iters: int = 10, warmup: int = 2) -> float:
    """Median seconds of `fn` over `iters` calls (device synchronised around each)."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(iters):
        _sync(dev)
        t0 = time.perf_counter()
        fn()
        _sync(dev)
        times.append(time.perf_counter() - t0)
    return sorted(times)[len(times) // 2]


def _err(e: BaseException) -> str:
    return f"{type(e).__name__}: {(str(e).strip().splitlines() or [''])[0][:300]}"


def ceilings(dev: str, dry: bool) -> dict:
    """fastpipes' own limits (the ones bench reports shares against), at full size on a GPU."""
    from fastpipes.bench.limits import measure_limits

    t0 = time.perf_counter()
    lim = measure_limits(dev, quick=dry).to_dict()
    lim["seconds"] = time.perf_counter() - t0
    return lim


def _kernel_names(fn, dev: str) -> list[str]:
    """Names of the device kernels one call of `fn` launches (attention-looking ones first)."""
    from torch.profiler import ProfilerActivity, profile

    acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if dev.startswith("cuda") else [])
    with profile(activities=acts) as prof:
        fn()
        _sync(dev)
    names = {e.key for e in prof.key_averages()
             if dev.startswith("cuda") and getattr(e, "device_time_total", 0) > 0}
    if not dev.startswith("cuda"):
        names = {e.key for e in prof.key_averages() if "attention" in e.key}
    keys = ("fmha", "flash", "cudnn", "attention", "softmax", "cutlass", "gemm")
    return sorted(names, key=lambda n: (not any(k in n.lower() for k in keys), n))[:12]


def sdpa(dev: str, dry: bool) -> dict:
    """SAM's rel-pos attention (additive mask) under each SDPA backend: accepted?, time,
    error vs an FP32 math reference; and what the default dispatch launches."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from fastpipes.kernels.sam_attention import rel_pos_terms, sdpa_rel_pos

    dt = torch.bfloat16
    # vit_h: 16 heads of 80; global attention over 64x64 tokens, windows of 14x14 (25 per image)
    shapes = {"global_64x64": (1, 16, 64, 80), "window_14x14": (25, 16, 14, 80)}
    if dry:
        shapes = {"global_8x8": (1, 2, 8, 16), "window_4x4": (3, 2, 4, 16)}
    out: dict = {"device": dev, "dtype": str(dt), "torch": torch.__version__, "shapes": {}}
    g = torch.Generator(device=dev).manual_seed(0)
    for label, (b, n, side, c) in shapes.items():
        q, k, v = (torch.randn(b, n, side * side, c, device=dev, dtype=dt, generator=g)
                   for _ in range(3))
        rel = [torch.randn(2 * side - 1, c, device=dev, dtype=dt, generator=g) * 0.5
               for _ in range(2)]
        rel_h, rel_w = rel_pos_terms(q, rel[0], rel[1], (side, side))
        ref = sdpa_rel_pos(q.float(), k.float(), v.float(), rel_h.float(), rel_w.float(), 0,
                           math=True)
        rows = {}
        for backend in ("FLASH_ATTENTION", "EFFICIENT_ATTENTION", "CUDNN_ATTENTION", "MATH"):
            kind = getattr(SDPBackend, backend, None)
            if kind is None:
                rows[backend] = {"ok": False, "error": "not in this torch"}
                continue

            def call(kind=kind):
                with sdpa_kernel([kind]):
                    return sdpa_rel_pos(q, k, v, rel_h, rel_w, 0)
            try:
                got = call()
                rows[backend] = {"ok": True, "ms": 1e3 * _time(call, dev, 5, 1),
                                 "max_abs_err_vs_fp32": (got.float() - ref).abs().max().item()}
            except Exception as e:  # noqa: BLE001  (this is what we record)
                rows[backend] = {"ok": False, "error": _err(e)}
        default = lambda: sdpa_rel_pos(q, k, v, rel_h, rel_w, 0)  # noqa: E731
        rows["default"] = {"ok": True, "ms": 1e3 * _time(default, dev, 5, 1),
                           "kernels": _kernel_names(default, dev)}
        unmasked = lambda: F.scaled_dot_product_attention(q, k, v)  # noqa: E731
        rows["no_mask_default"] = {"ms": 1e3 * _time(unmasked, dev, 5, 1),
                                   "kernels": _kernel_names(unmasked, dev)}
        out["shapes"][label] = {"q": list(q.shape), "mask": [b, n, side ** 2, side ** 2],
                                "backends": rows}
    return out


def woq(dev: str, dry: bool) -> dict:
    """One decode GEMV (x: 1 row) per Llama-2-7B weight shape: BF16 vs CUDA int8 (eager and
    compiled) vs int4 tinygemm; effective GB/s = weight bytes / time."""
    from fastpipes.kernels.woq_cuda import quantize_linear_cuda, unavailable

    shapes = [(4096, 4096), (4096, 11008), (11008, 4096)] if not dry else [(256, 128)]
    out: dict = {"device": dev, "unavailable": {k: unavailable(k, dev) for k in ("int8", "int4")},
                 "aten_weight_int8pack_mm": _int8pack_on(dev), "rows": []}
    for k, n in shapes:
        lin32 = torch.nn.Linear(k, n, bias=False, device=dev)
        lin = copy.deepcopy(lin32).to(torch.bfloat16)
        x = torch.randn(1, k, device=dev, dtype=torch.bfloat16)
        row = {"k": k, "n": n, "bf16_ms": 1e3 * _time(lambda: lin(x), dev, 20, 3)}
        row["bf16_gbps"] = k * n * 2 / row["bf16_ms"] / 1e6
        for kind in ("int8", "int4"):
            if out["unavailable"][kind] and not (dry and kind == "int8"):
                continue
            q = quantize_linear_cuda(lin32, kind, 128)
            nbytes = sum(t.numel() * t.element_size() for t in q.buffers())
            row[f"{kind}_eager_ms"] = 1e3 * _time(lambda: q(x), dev, 20, 3)
            try:
                qc = torch.compile(q)  # default mode: no autotuning inside a short lease
                row[f"{kind}_compiled_ms"] = 1e3 * _time(lambda: qc(x), dev, 20, 3)
                row[f"{kind}_compiled_gbps"] = nbytes / row[f"{kind}_compiled_ms"] / 1e6
            except Exception as e:  # noqa: BLE001
                row[f"{kind}_compile_error"] = _err(e)
            row[f"{kind}_eager_gbps"] = nbytes / row[f"{kind}_eager_ms"] / 1e6
        out["rows"].append(row)
        if dry:
            break
    return out


def _int8pack_on(dev: str) -> str:
    """Whether aten._weight_int8pack_mm has a kernel for `dev` in this torch."""
    try:
        x = torch.randn(2, 32, device=dev, dtype=torch.bfloat16)
        w = torch.randint(-8, 8, (16, 32), dtype=torch.int8, device=dev)
        torch.ops.aten._weight_int8pack_mm(x, w, torch.ones(16, device=dev, dtype=torch.bfloat16))
        return "ok"
    except Exception as e:  # noqa: BLE001
        return _err(e)


def click(dev: str, dry: bool) -> dict:
    """SAM per-click latency (prompt encoder + mask decoder after set_image): wall time vs
    the device's kernel time in the same call, FP32 eager and the CUDA BF16 recipe
    without its compile (the click path is not what it compiles)."""
    import numpy as np

    import fastpipes
    from fastpipes.sam.inputs import smooth_images
    from fastpipes.sam.pipeline import build_sam
    from fastpipes.sam.predictor import SamPredictor

    model = "tiny" if dry else "vit_b"
    out: dict = {"device": dev, "model": model, "rows": {}}
    recipe = {"base": "sam_cuda_bf16", "compile": {"enabled": False}}
    if dry:
        recipe["requires"] = {"device": "any"}
    for label in ("fp32_eager", "sam_cuda_bf16_no_compile"):
        sam = build_sam(model, device=dev)
        if label != "fp32_eager":
            fastpipes.accelerate(sam, recipe)
        pred = SamPredictor(sam)
        img = smooth_images(1, sam.image_encoder.img_size, 0)[0]
        t0 = time.perf_counter()
        pred.set_image(img)
        _sync(dev)
        set_image_s = time.perf_counter() - t0
        pts, lab = np.array([[300.0, 400.0]]) * (0.1 if dry else 1), np.array([1])
        fn = lambda: pred.predict(point_coords=pts, point_labels=lab)  # noqa: E731
        wall = _time(fn, dev, 20 if not dry else 3, 3)
        out["rows"][label] = {"set_image_s": set_image_s, "click_ms": 1e3 * wall,
                              "device_busy_ms": _busy_ms(fn, dev)}
        busy = out["rows"][label]["device_busy_ms"]
        if busy is not None:
            out["rows"][label]["host_share"] = max(0.0, 1 - busy / (1e3 * wall))
        del pred, sam
    return out


def _busy_ms(fn, dev: str) -> float | None:
    """Sum of device kernel times of one call (None on the CPU)."""
    if not dev.startswith("cuda"):
        return None
    from torch.profiler import ProfilerActivity, profile

    fn()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        _sync(dev)
    return sum(e.self_device_time_total for e in prof.key_averages()) / 1e3


PROBES = {"ceilings": ceilings, "sdpa": sdpa, "woq": woq, "click": click}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("probe", choices=sorted(PROBES))
    p.add_argument("--out", required=True)
    p.add_argument("--dry-run", action="store_true", help="tiny sizes on the CPU")
    a = p.parse_args(argv)
    dev = "cpu" if a.dry_run else "cuda"
    if dev == "cuda" and not torch.cuda.is_available():
        print("gpu_probe: no CUDA device here (use --dry-run on a CPU)", file=sys.stderr)
        return 2
    t0 = time.perf_counter()
    result = PROBES[a.probe](dev, a.dry_run)
    result["probe_seconds"] = time.perf_counter() - t0
    if dev.startswith("cuda"):
        result["gpu"] = torch.cuda.get_device_name(0)
    Path(a.out).write_text(json.dumps(result, indent=1, default=str))
    print(json.dumps(result, default=str)[:1500])
    return 0


if __name__ == "__main__":
    sys.exit(main())
