"""`fastpipes info`: what this machine can do, and what that means for the recipes."""
from __future__ import annotations

import json


def add_parser(sub) -> None:
    p = sub.add_parser("info", help="what this machine can do (ISA, native bf16, threads, packages)")
    p.add_argument("--json", action="store_true", help="print machine-readable JSON")
    p.set_defaults(func=run)


def run(args) -> int:
    from fastpipes.hardware import detect

    info = detect(probe_packages=True)
    if args.json:
        print(json.dumps(info.to_dict(), indent=2))
        return 0
    from rich.console import Console
    from rich.table import Table

    con = Console()
    t = Table(title="fastpipes info", show_header=False, title_justify="left")
    t.add_column(style="bold")
    t.add_column()
    t.add_row("CPU", f"{info.cpu_model or 'unknown'} ({info.machine})")
    t.add_row("threads", f"{info.logical_cpus} logical CPUs, torch uses {info.torch_threads}")
    t.add_row("ISA", " ".join(f"[green]{k}[/]" if v else f"[dim]-{k}[/]" for k, v in info.isa.items()))
    t.add_row("torch", f"{info.torch_version} (CPU capability {info.torch_cpu_capability})")
    t.add_row("bf16 matmul", _native(info, "bf16"))
    t.add_row("fp16 matmul", _native(info, "fp16"))
    t.add_row("CUDA", ", ".join(info.cuda_devices) or "none")
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
