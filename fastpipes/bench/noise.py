"""Was the machine quiet enough for the speedups to mean something?

A benchmark already measures what it needs to tell: the FP32 baseline's spread (the same
work, run several times) and the machine's GEMM ceiling, which on a loaded machine falls
far below what the CPU tier reaches (hardware.expected_ceilings). Either one past its bar
makes the run ``noisy``; the verdict carries its evidence, and the table, Markdown, JSON
and chart show it.

>>> v = noise_verdict({"median": 2.0, "min": 1.8, "max": 10.6}, None, "avx2", 2)
>>> v["noisy"], v["evidence"]
(True, ['FP32 baseline max/min 5.89 (1.80-10.60 s; bar 1.25)'])
"""
from __future__ import annotations

import os
from typing import Any

from fastpipes.hardware import expected_ceilings

SPREAD_BAR = 1.25  # baseline max/min above this: the same work took very different times
CEILING_BAR = 0.6  # FP32 GEMM below this share of the tier's typical: others use the cores
LOAD_BAR = 0.5  # 1-minute load per logical CPU before the run


def load_per_cpu() -> float | None:
    """The 1-minute load average per logical CPU now (None where the OS has none)."""
    try:
        return os.getloadavg()[0] / (os.cpu_count() or 1)
    except (OSError, AttributeError):
        return None


def noise_verdict(baseline: dict | None, limits: dict | None, tier: str, threads: int,
                  load: float | None = None) -> dict[str, Any]:
    """{"noisy": bool, "evidence": [str, ...], "checked": [str, ...], numbers...}.

    `baseline`: the FP32 row's latency_s (median, min, max); `limits`: the measured
    ceilings (CPU only: a GPU's are not held against a CPU tier); `load`: the load per
    logical CPU before the run. What was checked and passed is listed in "checked", so a
    quiet verdict says what it rests on.
    """
    evidence, checked, out = [], [], {}
    if baseline and baseline.get("min"):
        ratio = baseline["max"] / baseline["min"]
        out["baseline_max_over_min"] = ratio
        text = (f"FP32 baseline max/min {ratio:.2f} ({baseline['min']:.2f}-"
                f"{baseline['max']:.2f} s; bar {SPREAD_BAR:g})")
        (evidence if ratio > SPREAD_BAR else checked).append(text)
    expected = expected_ceilings(tier, threads).get("exact")
    if limits and expected and str(limits.get("device", "cpu")).startswith("cpu"):
        share = limits["gemm_gflops"] / expected
        out["ceiling_share_of_tier"] = share
        text = (f"FP32 GEMM {limits['gemm_gflops']:.0f} GFLOP/s = {share:.0%} of the {tier} "
                f"tier's typical {expected:.0f} at {threads} threads (bar {CEILING_BAR:.0%})")
        (evidence if share < CEILING_BAR else checked).append(text)
    if load is not None:
        out["load_per_cpu"] = load
        text = f"load average {load:.2f} per logical CPU before the run (bar {LOAD_BAR:g})"
        (evidence if load > LOAD_BAR else checked).append(text)
    return {"noisy": bool(evidence), "evidence": evidence, "checked": checked, **out}


def verdict_line(noise: dict | None) -> str:
    """One line for a report header: "NOISY machine: ..." or "quiet: ..."."""
    if not noise:
        return "noise: not checked"
    if noise["noisy"]:
        return ("NOISY machine (speedups unreliable; rerun on a quiet machine): "
                + "; ".join(noise["evidence"]))
    return "quiet machine: " + ("; ".join(noise["checked"]) or "nothing to check")
