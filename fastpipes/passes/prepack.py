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
        swapped, nbytes = pack_linears(module)
        if not swapped:
            ctx.change(name, "no nn.Linear layers: left as is")
            continue
        ctx.change(name, f"{swapped} Linear -> fastpipes::linear_packed (BF16 weights packed "
                         f"by oneDNN, {nbytes / 2**20:.1f} MB)")
        total += swapped
    if not total:
        raise SkipPass("no selected component has nn.Linear layers")
