"""prepack: BF16 Linear layers on oneDNN-packed weights that a compiled graph can cache.

Every ``nn.Linear`` of the named components becomes a
:class:`~fastpipes.kernels.packed_linear.PackedLinear`: the same parameters, plus a BF16
copy of the weight reordered once into oneDNN's blocked layout for this CPU. Inductor's
own ``compile.options.cpp.weight_prepack`` does the same reorder faster to write down, but
its graph holds the packed weights and cannot be cached, so every new process compiles
again; with this pass the graph holds only a call by the plain weight and stays cached.

The layers compute in BF16 (numerics class bf16): use it where the component already runs
under BF16 autocast (the precision pass). CPU only; refused where oneDNN has no BF16.
"""
from __future__ import annotations

from dataclasses import dataclass, field

from fastpipes.kernels.packed_linear import pack_linears, why_unavailable
from fastpipes.passes.base import PassContext, SkipPass, register_pass
from fastpipes.recipe.schema import PrecisionClass, Section


@dataclass(frozen=True)
class PrepackConfig(Section):
    components: list[str] = field(default_factory=list)  # [] = every component
    # layers with fewer weight elements stay nn.Linear: each packed call costs ~15-20 us more
    # in Python than F.linear, which small layers do not win back (benchmarks/RESULTS.md [N5])
    min_size: int = 65536

    def check(self) -> list[tuple[str, str, str]]:
        if self.min_size < 0:
            return [("min_size", f"must be >= 0, got {self.min_size}", "0 or a positive int")]
        return []

    def numerics(self) -> PrecisionClass:
        return PrecisionClass.bf16  # the packed products run in BF16 whatever x's dtype

    def preflight(self, target) -> list:
        device = target.adapter.device()
        if device.type != "cpu":
            return [target.problem(
                "prepack", f"prepack packs weights for oneDNN on the CPU; this pipeline is on "
                           f"{device}", "no prepack section on GPU pipelines")]
        why = why_unavailable()
        return [] if why is None else [target.problem(
            "prepack", f"prepack is unavailable: {why}",
            "no prepack section (Linear layers then run through PyTorch's own kernels)")]


@register_pass("prepack", PrepackConfig,
               "BF16 Linear on oneDNN-packed weights (compiled graphs stay cacheable)")
def apply(ctx: PassContext, cfg: PrepackConfig) -> None:
    total = 0
    for name, module in ctx.components("prepack", cfg.components).items():
        swapped, nbytes, small = pack_linears(module, cfg.min_size)
        smaller = (f"{small} with fewer than min_size={cfg.min_size} weights left as "
                   "nn.Linear") if small else ""
        if not swapped:
            ctx.change(name, smaller or "no nn.Linear layers: left as is")
            continue
        ctx.change(name, f"{swapped} Linear -> fastpipes::linear_packed (BF16 weights packed "
                         f"by oneDNN, {nbytes / 2**20:.1f} MB)" + (f"; {smaller}" if small else ""))
        total += swapped
    if not total:
        raise SkipPass(f"no selected component has nn.Linear layers with at least "
                       f"min_size={cfg.min_size} weights")
