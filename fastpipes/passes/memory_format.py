"""memory_format: channels-last weights and inputs for convolutional components.

oneDNN's CPU convolutions (and cuDNN's with tensor cores) run natively on NHWC; with
NCHW tensors every conv pays a reorder. Components without Conv2d are skipped visibly.
"""
from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn as nn

from fastpipes.passes.base import PassContext, SkipPass, register_pass
from fastpipes.recipe.schema import Section


@dataclass(frozen=True)
class MemoryFormatConfig(Section):
    components: list[str] = field(default_factory=list)  # [] = the adapter's conv components
    convert_inputs: bool = True  # make 4-D tensor inputs channels-last at the boundary


def _to_channels_last(module: nn.Module, args, kwargs):
    # forward pre-hook: only 4-D float tensors that are not already NHWC are copied
    def conv(x):
        if (isinstance(x, torch.Tensor) and x.dim() == 4 and x.is_floating_point()
                and not x.is_contiguous(memory_format=torch.channels_last)):
            return x.contiguous(memory_format=torch.channels_last)
        return x

    return tuple(conv(a) for a in args), {k: conv(v) for k, v in kwargs.items()}


@register_pass("memory_format", MemoryFormatConfig, "channels-last layout for conv components")
def apply(ctx: PassContext, cfg: MemoryFormatConfig) -> None:
    done = 0
    for name, module in ctx.components("memory_format", cfg.components).items():
        convs = sum(isinstance(m, nn.Conv2d) for m in module.modules())
        if not convs:
            ctx.change(name, "no Conv2d layers: left as is")
            continue
        module.to(memory_format=torch.channels_last)
        if cfg.convert_inputs:
            module.register_forward_pre_hook(_to_channels_last, with_kwargs=True)
        ctx.change(name, f"{convs} Conv2d weights -> channels_last"
                   + (", 4-D inputs -> channels_last" if cfg.convert_inputs else ""))
        done += 1
    if not done:
        raise SkipPass("no component has Conv2d layers")
