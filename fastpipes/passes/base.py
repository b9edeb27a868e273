"""The contract every pass follows: a frozen config section + an apply function, registered.

A pass module looks like::

    @dataclass(frozen=True)
    class ChannelsLastConfig(Section):
        components: list[str] = field(default_factory=list)   # [] = the adapter's default

    @register_pass("memory_format", ChannelsLastConfig, "channels-last for conv components")
    def apply(ctx: PassContext, cfg: ChannelsLastConfig) -> None:
        for name, module in ctx.components("memory_format", cfg.components).items():
            ...
            ctx.change(name, "weights -> channels_last")

What can be known wrong before the pipeline is touched (unknown component names, a backend
this machine lacks, conflicts) is found by one preflight (``passes/preflight.py``, using the
section's ``preflight`` method); passes then only apply. Passes mutate the pipeline
directly: accelerate() snapshots everything they may touch beforehand and restores it if
any pass raises. A pass that cannot do its work on this pipeline raises :class:`SkipPass`
(reported visibly), never silently does nothing. Passes never import each other; ordering
and conflicts live in ``passes/order.py``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Callable

from fastpipes.recipe.schema import SECTIONS, Section
from fastpipes.registry import Registry

if TYPE_CHECKING:
    import torch
    import torch.nn as nn

    from fastpipes.hardware import MachineInfo
    from fastpipes.passes.structure import PipelineStructure
    from fastpipes.recipe.schema import Recipe
    from fastpipes.report import Report
    from fastpipes.snapshot import Snapshot


class SkipPass(Exception):
    """Raised by a pass that does not apply to this pipeline; recorded as skipped."""


@dataclass(frozen=True)
class PassSpec:
    name: str
    config: type[Section]
    apply: Callable[["PassContext", Any], None]
    summary: str


PASSES: Registry[PassSpec] = Registry("pass", filled_by="fastpipes.passes")


def register_pass(name: str, config: type[Section], summary: str):
    """Register `apply` as pass `name` whose recipe section is typed by `config`."""

    def deco(apply: Callable[["PassContext", Any], None]):
        SECTIONS.add(name, config)
        PASSES.add(name, PassSpec(name, config, apply, summary))
        return apply

    return deco


@dataclass
class PassContext:
    """What a pass sees: the pipeline, its adapter, the machine, the recipe and the report."""

    pipe: Any
    adapter: "PipelineStructure"
    hardware: "MachineInfo"
    recipe: "Recipe"
    report: "Report"
    pass_name: str = ""
    strict: bool = False
    scratch: dict[str, Any] = field(default_factory=dict)  # shared notes between passes
    snapshot: "Snapshot | None" = None  # what undoes this accelerate()
    verbose: bool = True  # progress lines on stderr for long work (accelerate(verbose=...))

    def release(self, original: "torch.Tensor") -> None:
        """A pass no longer needs `original` (a weight it replaced): with the recipe's
        ``low_memory``, the snapshot keeps it on disk instead of in memory."""
        if self.recipe.low_memory and self.snapshot is not None:
            moved = self.snapshot.spill(original)
            if moved:
                self.report.extra["spilled_bytes"] = self.report.extra.get("spilled_bytes", 0) + moved

    def components(self, pass_name: str, names: list[str] | None) -> dict[str, "nn.Module"]:
        """The components a pass works on: `names`, or the adapter's default for the pass.
        (Unknown names were refused by the preflight, before anything was touched.)"""
        available = self.adapter.components()
        names = names or self.adapter.default_components(pass_name)
        return {n: available[n] for n in names}

    def change(self, component: str, what: str) -> None:
        """Record one change this pass made (shown in the Report)."""
        rec = self.report.record(self.pass_name)
        if component and component not in rec.components:
            rec.components.append(component)
        rec.changes.append(f"{component}: {what}" if component else what)

    def warn(self, message: str) -> None:
        self.report.warnings.append(f"{self.pass_name}: {message}")
