"""Fidelity: how close an accelerated pipeline's output stays to FP32 eager, judged by bars
stated per precision class before any run.

A family's adapter states its ``BARS`` (``{PrecisionClass: (Bar, ...)}``) and its metrics;
:func:`judge` turns measured metrics into a :class:`Fidelity` verdict. Bench, ``auto`` and the
adapters all read the verdict from here (docs/fidelity.md lists every family's bars).

>>> bar = Bar("mask_iou_min", ">=", 0.97, "mask IoU min")
>>> judge({"mask_iou_min": 0.99}, (bar,), PrecisionClass.bf16).ok
True
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from fastpipes.recipe.schema import PrecisionClass


@dataclass(frozen=True)
class Bar:
    """One stated fidelity bar: ``metric >= value`` (op ">=") or ``metric <= value``."""

    metric: str
    op: str
    value: float
    label: str = ""  # how people read the metric, e.g. "mask IoU min"

    def holds(self, x: float) -> bool:
        return x >= self.value if self.op == ">=" else x <= self.value

    def __str__(self) -> str:
        return f"{self.label or self.metric} {self.op} {self.value:g}"


@dataclass
class Fidelity:
    """Closeness to the FP32 eager output, judged by the bars of one precision class.

    ``ok`` is None when the output could not be judged (``note`` says why), e.g. a
    random-weight language model whose flat logits make top-1 agreement meaningless.
    """

    metrics: dict[str, float]
    ok: bool | None
    thresholds: str  # the bars held to, e.g. "mask IoU min >= 0.97, embedding rel. error <= 0.02"
    precision_class: str = PrecisionClass.exact.value
    note: str = ""


def judge(metrics: dict[str, float], bars: tuple[Bar, ...], klass: PrecisionClass,
          note: str = "") -> Fidelity:
    """The verdict of `metrics` against `bars`; a bar whose metric was not measured is listed
    in the note and does not count (a NaN metric fails its bar)."""
    missing = [b for b in bars if b.metric not in metrics]
    judged = [b for b in bars if b.metric in metrics]
    ok = all(b.holds(metrics[b.metric]) and not math.isnan(metrics[b.metric]) for b in judged)
    if missing:
        note = "; ".join(x for x in (note, "not measured: " + ", ".join(str(b) for b in missing))
                         if x)
    return Fidelity(dict(metrics), ok if judged else None,
                    ", ".join(str(b) for b in bars) + f" ({klass.value} bars)", klass.value, note)


def relative_error(reference: torch.Tensor, output: torch.Tensor) -> float:
    """||output - reference|| / ||reference|| over all elements, in FP32."""
    ref, out = reference.detach().float(), output.detach().float()
    return ((out - ref).norm() / ref.norm().clamp_min(1e-12)).item()
