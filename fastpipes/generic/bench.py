"""A tiny seeded conv + MLP workload: for tests, docs and smoke runs of the harness.

It runs in a fraction of a second, so ``fastpipes bench toy`` shows every part of a report
(table, JSON, Markdown, chart) without model libraries. These options exist only to exercise
the harness's failure handling:

- ``raise_in_run: true``: every run raises (a crashing configuration);
- ``sleep_if_channels_last: S``: a run sleeps S seconds when the model's first conv weight
  is channels-last, i.e. after the ``memory_format`` pass (a configuration that hangs);
- ``unportable_output: true``: ``view`` returns the model too, which cannot cross
  processes (no fidelity reference: timings must survive it);
- ``graph_break: true``: the model's forward has a graph break, so a compile with
  ``fullgraph: true`` fails at the first call (a pass that falls back at run time).

>>> spec = WorkloadSpec("toy", size="tiny")                 # doctest: +SKIP
>>> result = run_benchmark(spec, ["my_recipe.yaml"])        # doctest: +SKIP
"""
from __future__ import annotations

import time
from typing import Any

import torch
import torch.nn as nn

from fastpipes.bench.workloads.base import Workload, WorkloadSpec
from fastpipes.errors import BenchmarkError
from fastpipes.generic.toy import SIZES

class ToyWorkload(Workload):
    """Fidelity is the generic adapter's: relative error of the logits, by class bars."""

    unit = "images"
    bound = "compute"
    OPTIONS = {"raise_in_run": (bool, "every run raises (a crashing configuration)"),
               "sleep_if_channels_last": (float, "seconds a run sleeps after the memory_format "
                                                 "pass"),
               "unportable_output": (bool, "the fidelity view includes the model (cannot cross "
                                           "processes)"),
               "graph_break": (bool, "a graph break in the forward (fullgraph compiles fail)")}

    def __init__(self, spec: WorkloadSpec):
        super().__init__(spec)
        if spec.size not in SIZES:
            raise BenchmarkError(f"toy size {spec.size!r} unknown; allowed: {', '.join(SIZES)}")
        self.channels, self.side, self.hidden = SIZES[spec.size]

    def describe(self) -> str:
        return (f"toy conv+MLP ({self.spec.size}: {self.channels} channels, "
                f"{self.side}x{self.side} input, hidden {self.hidden}), batch {self.spec.batch_size}")

    def build(self) -> nn.Module:
        net = super().build()
        net.graph_break = bool(self.spec.options.get("graph_break"))
        return net

    def inputs(self, pipe: Any) -> torch.Tensor:
        g = torch.Generator().manual_seed(self.spec.seed + 1)
        x = torch.randn(self.spec.batch_size, 3, self.side, self.side, generator=g)
        return x.to(self.spec.device)

    @torch.inference_mode()
    def run(self, pipe: nn.Module, inputs: torch.Tensor) -> torch.Tensor:
        opts = self.spec.options
        if opts.get("raise_in_run"):
            raise RuntimeError("toy workload: raise_in_run is set")
        sleep = float(opts.get("sleep_if_channels_last", 0))
        if sleep and pipe.conv1.weight.is_contiguous(memory_format=torch.channels_last):
            time.sleep(sleep)
        return pipe(inputs)

    def view(self, pipe: nn.Module, inputs: torch.Tensor, output: torch.Tensor,
             reference: Any = None) -> Any:
        view = super().view(pipe, inputs, output, reference)
        return (view, pipe) if self.spec.options.get("unportable_output") else view

    def flops(self, pipe: nn.Module, inputs: torch.Tensor) -> float | None:
        # counted by hand (2 per multiply-add; biases ignored, as FlopCounterMode does): the
        # counter's first use costs seconds of imports, too much for a smoke workload
        b, c, s, h = inputs.shape[0], self.channels, self.side, self.hidden
        conv1 = 2 * b * c * s * s * 3 * 9
        conv2 = 2 * b * c * (s // 2) ** 2 * c * 9
        mlp = 2 * b * (c * (s // 2) ** 2 * h + h * 10)
        return float(conv1 + conv2 + mlp)
