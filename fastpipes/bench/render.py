"""Reports people read: a terminal table (rich), Markdown and a PNG chart of speedup over FP32."""
from __future__ import annotations

from pathlib import Path

from fastpipes.bench import profile
from fastpipes.bench.limits import ceiling_for
from fastpipes.bench.noise import noise_verdict, verdict_line
from fastpipes.bench.result import CUT, FAILED, NOT_RUN, OK, BenchResult, ConfigResult
from fastpipes.report import PassStatus

COLUMNS = ("configuration", "class", "status", "latency median (min-max)", "throughput",
           "speedup", "compile", "peak mem", "machine share", "fidelity vs FP32", "notes")
CEILING_NAMES = {"exact": "FP32", "bf16": "BF16", "fp16": "FP16", "int8": "int8"}


def fmt_time(s: float | None) -> str:
    if s is None:
        return "-"
    if s == 0:
        return "0 s"
    if s >= 1:
        return f"{s:.2f} s"
    if s >= 1e-3:
        return f"{s * 1e3:.1f} ms"
    return f"{s * 1e6:.0f} us"


def fmt_num(x: float) -> str:
    """Short significant form for metrics: 0.9987, 1.2e-05, 31.4."""
    if x == 0 or 1e-3 <= abs(x) < 1e4:
        return f"{x:.4g}"
    return f"{x:.2e}"


def verdict(fidelity: dict) -> str:
    """ok / FAIL / not judged, and the class whose bars it was held to."""
    klass = fidelity.get("precision_class") or "exact"
    if fidelity["ok"] is None:
        return "not judged"
    return f"{'ok' if fidelity['ok'] else 'FAIL'} ({klass} bars)"


def fidelity_text(c: ConfigResult) -> str:
    if c.baseline:
        return "reference" if c.ok else "-"
    if c.fidelity is None:
        return "-"
    metrics = ", ".join(f"{k}={fmt_num(v)}" for k, v in c.fidelity["metrics"].items())
    text = f"{verdict(c.fidelity)}: {metrics}; bars: {c.fidelity['thresholds']}"
    return text + (f"; {c.fidelity['note']}" if c.fidelity.get("note") else "")


def share_text(c: ConfigResult, limits: dict | None = None) -> str:
    if c.achieved_gbps is not None:
        share = f" ({c.bandwidth_share:.0%} of bw)" if c.bandwidth_share is not None else ""
        return f"{c.achieved_gbps:.1f} GB/s{share}"
    if c.achieved_gflops is not None:
        unit = "GOP/s" if c.precision_class in ("int8",) else "GFLOP/s"
        found = ceiling_for(limits, c.precision_class)
        share = (f" ({c.gflops_share:.0%} of {CEILING_NAMES[found[0]]} GEMM)"
                 if c.gflops_share is not None and found else "")
        return f"{c.achieved_gflops:.1f} {unit}{share}"
    return "-"


def memory_text(c: ConfigResult) -> str:
    if c.peak_rss_mb is None:
        return "-"
    text = f"{c.peak_rss_mb:,.0f} MB"
    if c.cuda_max_allocated_mb is not None:
        text += f" (cuda {c.cuda_max_allocated_mb:,.0f} MB)"
    return text


def notes_text(c: ConfigResult) -> str:
    notes = []
    if c.reason:
        notes.append(c.reason.splitlines()[0] if c.status != FAILED else " ".join(
            line.strip() for line in c.reason.splitlines()))
    if c.hardware_note and c.status != NOT_RUN:
        notes.append(f"hardware: {c.hardware_note}")
    if c.report:
        skipped = [f"{p['name']} {p['status']} ({p['reason']})" for p in c.report["passes"]
                   if p["status"] != PassStatus.applied.value]
        applied = [p["name"] for p in c.report["passes"]
                   if p["status"] == PassStatus.applied.value]
        if applied:
            notes.append("applied: " + ", ".join(applied))
        notes += skipped
    return "; ".join(notes)


def compile_text(c: ConfigResult) -> str:
    """Cold compile, and the second start's when measured: "41.9 s cold / 7.9 s warm"."""
    if c.compile_warm_s is None:
        return fmt_time(c.compile_s)
    return f"{fmt_time(c.compile_s)} cold / {fmt_time(c.compile_warm_s)} warm"


def row(c: ConfigResult, limits: dict | None = None) -> dict[str, str]:
    lat = c.latency_s
    return {
        "configuration": c.name + (" (baseline)" if c.baseline else ""),
        "class": c.precision_class or "-",
        "status": {OK: "ok", FAILED: "FAILED", CUT: "CUT", NOT_RUN: "not run"}.get(c.status,
                                                                                 c.status),
        "latency median (min-max)": (f"{fmt_time(lat['median'])} ({fmt_time(lat['min'])}-"
                                     f"{fmt_time(lat['max'])})" if lat else "-"),
        "throughput": f"{c.throughput:.3g} {c.unit}/s" if c.throughput else "-",
        "speedup": f"{c.speedup:.2f}x" if c.speedup is not None else "-",
        "compile": compile_text(c),
        "peak mem": memory_text(c),
        "machine share": share_text(c, limits),
        "fidelity vs FP32": fidelity_text(c),
        "notes": notes_text(c),
    }


def noise_of(r: BenchResult) -> dict:
    """The run's noise verdict; for a JSON written before verdicts, judged from its rows."""
    if r.noise is not None:
        return r.noise
    base = next((c for c in r.configs if c.baseline), None)
    return noise_verdict(base.latency_s if base and base.ok else None, r.limits,
                         r.machine.get("tier", "other"), r.settings.get("threads") or 1)


def speedup_range(r: BenchResult, c: ConfigResult) -> tuple[float, float] | None:
    """(worst, best) speedup the timed runs allow: the fastest baseline run over this row's
    slowest, and the slowest baseline run over this row's fastest (None without runs)."""
    base = next((b for b in r.configs if b.baseline), None)
    if not (base and base.ok and c.ok and c.latency_s and c.latency_s.get("min")):
        return None
    b, x = base.latency_s, c.latency_s
    return b["min"] / x["max"], b["max"] / x["min"]


def header_lines(r: BenchResult) -> list[str]:
    m, s, lim = r.machine, r.settings, r.limits
    cpu = (f"{m.get('cpu_model') or m.get('machine')} (tier {m.get('tier', '?')}), "
           f"{m.get('logical_cpus')} logical CPUs, "
           f"bf16 native: {'yes' if m.get('bf16_native') else 'no'}")
    if m.get("cuda_devices"):
        cpu += f"; GPU: {', '.join(m['cuda_devices'])}"
    lines = [f"workload: {r.workload.get('description', '')}",
             f"machine: {cpu}; torch {r.torch_version}; threads {s['threads']}; "
             f"device {s['device']}",
             f"method: each configuration in a fresh process; {s['warmup']} warm-up + "
             f"{s['iters']} timed runs (median, min-max)"
             + (f"; max {s['max_time_s']:g} s per configuration" if s.get("max_time_s") else ""),
             f"date: {r.date}; command: {r.command}"]
    if lim:
        ceilings = lim.get("ceilings") or {"exact": lim["gemm_gflops"]}
        shown = ", ".join(f"{CEILING_NAMES[k]} {v:,.0f} {'GOP/s' if k == 'int8' else 'GFLOP/s'}"
                          for k, v in ceilings.items())
        lines.append(f"ceilings measured in this run: GEMM (n={lim['gemm_n']}) {shown}; "
                     f"copy bandwidth {lim['bandwidth_gbps']:.1f} GB/s")
    if r.workload.get("flops"):
        lines.append(f"workload FLOPs per run: {r.workload['flops'] / 1e9:.4g} GFLOP")
    if s.get("overrides"):
        lines.append(f"overrides applied to every recipe: {' '.join(s['overrides'])}")
    lines.append(verdict_line(noise_of(r)))
    if r.interrupted:
        lines.append("INTERRUPTED: the rows below are those measured before the benchmark "
                     "was stopped")
    return lines


def markdown(r: BenchResult) -> str:
    def cell(text: str) -> str:
        return text.replace("|", "\\|").replace("\n", " ")

    out = [f"### {r.workload.get('family', '')} benchmark", ""]
    out += [f"- {line}" for line in header_lines(r)]
    out += ["", "| " + " | ".join(COLUMNS) + " |", "|" + "---|" * len(COLUMNS)]
    for c in r.configs:
        out.append("| " + " | ".join(cell(v) for v in row(c, r.limits).values()) + " |")
    return "\n".join(out) + "\n" + extras_markdown(r) + profiles(r)


def _extra_value(key: str, value: float, base: float | None) -> str:
    """A timing (``*_ms`` / ``*_s``) or a rate (``*_per_s``) with how many times faster than
    the baseline it is; other metrics plain."""
    if key.endswith("_per_s"):  # a rate: higher is faster, so the ratio is ours over FP32's
        text = f"{fmt_num(value)}/s"
        return text + (f" ({value / base:.2f}x)" if base and base > 0 else "")
    if key.endswith("_ms"):
        text = fmt_time(value / 1e3)
    elif key.endswith("_s"):
        text = fmt_time(value)
    else:
        return fmt_num(value)
    if base and value > 0:
        text += f" ({base / value:.2f}x)"
    return text


def extras_rows(r: BenchResult) -> list[list[str]]:
    """[metric, value per configuration...] for the extra metrics the workload measured
    (e.g. a SAM click's parts, SDXL's VAE decode), each timing or rate with its speedup over
    FP32 eager in brackets (higher is faster); [] when no row has any."""
    shown = [c for c in r.configs if c.ok]
    base = next((c for c in shown if c.baseline), None)
    keys = sorted({k for c in shown for k in c.extra})
    rows = [[k] + [_extra_value(k, c.extra[k], base.extra.get(k) if base else None)
                   if k in c.extra else "-" for c in shown] for k in keys]
    return [["metric"] + [c.name for c in shown]] + rows if rows else []


def extras_markdown(r: BenchResult) -> str:
    rows = extras_rows(r)
    if not rows:
        return ""
    out = ["", "Extra metrics (in brackets: speedup over FP32 eager, higher is faster):", "",
           "| " + " | ".join(rows[0]) + " |", "|" + "---|" * len(rows[0])]
    out += ["| " + " | ".join(row) + " |" for row in rows[1:]]
    return "\n".join(out) + "\n"


def extras_table(r: BenchResult):
    """The extra metrics as a rich Table, or None when there are none."""
    from rich.table import Table

    rows = extras_rows(r)
    if not rows:
        return None
    t = Table(title="extra metrics (in brackets: speedup over FP32 eager, higher is faster)",
              title_justify="left")
    for i, name in enumerate(rows[0]):
        t.add_column(name, justify="left" if i == 0 else "right")
    for row in rows[1:]:
        t.add_row(*row)
    return t


def profiles(r: BenchResult) -> str:
    """The --profile sections: where each row's time goes (empty without --profile)."""
    parts = [profile.markdown(c.name, c.profile, r.workload.get("flops_by_group"),
                              ceiling_for(r.limits, c.precision_class))
             for c in r.configs if c.profile]
    return "".join("\n" + p for p in parts)


def table(r: BenchResult):
    """A rich Table (print it with ``rich.print`` or a Console)."""
    from rich.table import Table

    from rich.markup import escape

    caption = [f"[bold red]{escape(line)}[/]" if line.startswith("NOISY") else escape(line)
               for line in header_lines(r)[1:]]
    t = Table(title=f"{r.workload.get('family', '')} benchmark: "
                    f"{r.workload.get('description', '')}", caption="\n".join(caption),
              caption_justify="left")
    for col in COLUMNS:
        t.add_column(col, overflow="fold", justify="right" if col in (
            "speedup", "throughput", "compile", "peak mem") else "left")
    for c in r.configs:
        values = row(c, r.limits)
        style = {FAILED: "red", CUT: "red", NOT_RUN: "dim"}.get(c.status)
        if c.fidelity is not None and c.fidelity["ok"] is False:
            values["fidelity vs FP32"] = f"[red]{values['fidelity vs FP32']}[/]"
        t.add_row(*values.values(), style=style)
    return t


def _title(ax, r: BenchResult, noise: dict) -> None:
    """Workload and machine; on a noisy run, in red, the verdict and its evidence."""
    import textwrap

    m = r.machine
    lines = [r.workload.get("description", ""), f"{m.get('cpu_model', '')}, "
             f"{r.settings['threads']} threads, torch {r.torch_version}"]
    if noise["noisy"]:
        lines += textwrap.wrap("NOISY machine, speedups unreliable: "
                               + "; ".join(noise["evidence"]), 120)
    ax.set_title("\n".join(lines), fontsize=9, color="#d62728" if noise["noisy"] else "black")


def plot(r: BenchResult, path: str | Path) -> Path:
    """PNG bar chart of speedup over FP32; fidelity failures hatched red, failures labelled."""
    import matplotlib

    matplotlib.use("Agg")  # no display; safe in workers and CI
    import matplotlib.pyplot as plt
    from matplotlib.patches import Patch

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    configs = list(reversed(r.configs))  # baseline at the top
    names = [c.name + (" (baseline)" if c.baseline else f" [{c.precision_class or '?'}]")
             for c in configs]
    speed = [c.speedup if c.ok and c.speedup is not None else 0.0 for c in configs]
    top = max([1.0] + speed)
    # whiskers widen the axis up to twice the longest bar; wider ones are cut at the edge
    highs = [min(s[1], 2 * top) for c in configs if (s := speedup_range(r, c))]
    xmax = max([top] + highs) * 2.0  # room for the labels right of the longest bar
    noise = noise_of(r)
    fig, ax = plt.subplots(figsize=(11, 1.9 + 0.55 * len(configs) + 0.5 * noise["noisy"]))
    for y, c in enumerate(configs):
        if c.ok:
            _bar(ax, r, c, y, speed[y], top, xmax)
        else:
            _why_no_bar(ax, c, y, xmax)
    ax.axvline(1.0, color="black", linestyle="--", linewidth=1)
    ax.set_yticks(range(len(configs)), names, fontsize=9)
    ax.set_xlim(0, xmax)
    ax.set_ylim(-0.6, len(configs) - 0.4)
    ax.set_xlabel("speedup over FP32 eager (median latency; whiskers: the runs' range, "
                  "baseline min/max over this row's max/min; higher is better)")
    _title(ax, r, noise)
    fig.legend(handles=[Patch(color="#7f7f7f", label="FP32 eager baseline"),
                       Patch(color="#2ca02c", label="within its precision class's bars"),
                       Patch(facecolor="#d62728", hatch="//", edgecolor="black",
                             label="outside its precision class's bars"),
                       Patch(color="#1f77b4", label="fidelity not judged")],
              loc="lower center", ncol=4, fontsize=8, frameon=False)
    fig.tight_layout(rect=(0, 0.07, 1, 1))  # room for the legend under the axis
    fig.savefig(path, dpi=120)
    plt.close(fig)
    return path


def _bar_style(c: ConfigResult) -> tuple[str, str | None]:
    """(colour, hatch) of a row's bar: the baseline grey, a fidelity failure hatched red,
    within its bars green, not judged blue."""
    fid = c.fidelity
    if c.baseline:
        return "#7f7f7f", None
    if fid is not None and fid["ok"] is False:
        return "#d62728", "//"
    return ("#2ca02c" if fid is not None else "#1f77b4"), None


def _bar(ax, r: BenchResult, c: ConfigResult, y: int, speed: float, top: float,
         xmax: float) -> None:
    """A measured row: its speedup bar, the runs' range as whiskers, and its label."""
    color, hatch = _bar_style(c)
    fid = c.fidelity
    spread = speedup_range(r, c) if c.speedup is not None else None
    xerr = [[max(speed - spread[0], 0)], [max(spread[1] - speed, 0)]] if spread else None
    ax.barh(y, speed, color=color, hatch=hatch, edgecolor="black", linewidth=0.6,
            xerr=xerr, capsize=3, error_kw={"elinewidth": 0.8})
    label = f"{speed:.2f}x" if c.speedup is not None else "no baseline"
    if fid is not None:
        # every metric (up to 3): which one broke the threshold is not known here
        shown = ", ".join(f"{k}={fmt_num(v)}" for k, v in list(fid["metrics"].items())[:3])
        mark = verdict(fid).replace("FAIL", "FIDELITY FAIL")
        label += f"  {mark}" + (f"\n{shown}" if shown else "")
    if c.hardware_note:
        label += "  [hardware: requires unmet]"
    at = min(spread[1], 2 * top) if spread else speed
    ax.text(at + xmax * 0.01, y, label, va="center", fontsize=7.5)


def _why_no_bar(ax, c: ConfigResult, y: int, xmax: float) -> None:
    """A row without a measurement: why, in red (grey when it was not run)."""
    reason = " ".join(line.strip() for line in c.reason.splitlines()) or c.status
    if c.status == FAILED:
        reason = f"FAILED: {reason}"
    elif c.status == CUT and not reason.startswith("cut"):
        reason = f"CUT: {reason}"
    reason = reason if len(reason) <= 110 else reason[:107] + "..."
    ax.text(xmax * 0.01, y, reason, va="center", fontsize=7,
            color="#d62728" if c.status != NOT_RUN else "#555555",
            bbox={"facecolor": "white", "edgecolor": "none", "pad": 1})
