"""`fastpipes info`: what this machine can do, and what that means for the recipes.

    fastpipes info              # CPU, tier, ISA, native BF16/FP16, torch, packages
    fastpipes info --measure    # ... and the measured GEMM ceiling per precision, bandwidth
    fastpipes info --json
"""
from __future__ import annotations

import json

from fastpipes.cli import SUBCOMMANDS
from fastpipes.hardware import TIERS, detect


def add_parser(sub) -> None:
    p = sub.add_parser("info", help=SUBCOMMANDS["info"])
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.add_argument("--measure", action="store_true",
                   help="also measure the GEMM ceiling of each native precision and the copy "
                        "bandwidth (about a minute)")
    p.set_defaults(func=run)


def run(args) -> int:
    info = detect(probe_packages=True)
    limits = None
    if args.measure:
        from fastpipes.bench.limits import measure_limits  # not for `info --help`: torch

        limits = measure_limits("cpu")
    if args.json:
        data = info.to_dict()
        if limits is not None:
            data["limits"] = limits.to_dict()
        print(json.dumps(data, indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title="fastpipes info", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("CPU", f"{info.cpu_model or 'unknown'} ({info.machine})")
    meaning = {name: what for name, _, what in TIERS}.get(info.tier, "none of the known tiers")
    t.add_row("tier", f"[bold]{info.tier}[/] ({meaning})")
    t.add_row("threads", f"{info.logical_cpus} logical CPUs, torch uses {info.torch_threads}")
    t.add_row("ISA", " ".join(f"[green]{k}[/]" if v else f"[dim]-{k}[/]" for k, v in info.isa.items()))
    t.add_row("torch", f"{info.torch_version} (CPU capability {info.torch_cpu_capability})")
    t.add_row("bf16 matmul", _native(info, "bf16"))
    t.add_row("fp16 matmul", _native(info, "fp16"))
    t.add_row("CUDA", ", ".join(info.cuda_devices) or "none")
    if limits is not None:
        names = {"exact": "FP32", "bf16": "BF16", "fp16": "FP16", "int8": "int8 (_int_mm)"}
        for klass, rate in limits.ceilings.items():
            unit = "GOP/s" if klass == "int8" else "GFLOP/s"
            t.add_row(f"{names[klass]} GEMM", f"{rate:,.0f} {unit} (n={limits.gemm_n}, best of 10)")
        t.add_row("copy bandwidth", f"{limits.bandwidth_gbps:.1f} GB/s ({limits.copy_mb:g} MB)")
    for p in info.packages:
        if p.version is None:
            state = "[dim]not installed[/]"
        elif p.importable is False:
            state = f"{p.version} [red]does not import[/]: {p.error}"
            if p.name == "segment-anything" and "torchvision" in p.error:
                state += " [green](fastpipes loads its model code without torchvision)[/]"
        else:
            state = p.version
        t.add_row(p.name, state)
    con.print(t)
    if not info.bf16_native:
        con.print(f"[yellow]note:[/] {info.low_precision_note('bf16')}")
    return 0


def _native(info, dtype: str) -> str:
    return "[green]native[/]" if info.native(dtype) else f"[red]not native[/] ({info.low_precision_note(dtype)})"
