"""The quantize pass on a model whose Linear layers were quantized while it was loaded
(llama/quantized_load.py): it records them instead of quantizing again."""
from __future__ import annotations

import torch.nn as nn

from fastpipes.passes.base import PassContext

# set on a model whose Linear layers were quantized while it was loaded
# (llama/quantized_load.py): {"dtype", "group_size", "act_dtype", "layers", "how", ...}
QUANTIZED_AT_LOAD = "_fastpipes_quantized_at_load"


def at_load(ctx: PassContext, comp: str, model: nn.Module, dtype: str, group_size: int,
             act: str) -> bool:
    """Record layers quantized while loading, when they are what this section asks for."""
    pre = getattr(model, QUANTIZED_AT_LOAD, None)
    if not pre:
        return False
    want = (dtype, group_size if dtype == "int4" else 0, act)
    got = (pre["dtype"], pre["group_size"] if pre["dtype"] == "int4" else 0, pre["act_dtype"])
    if want != got:
        ctx.warn(f"{comp}: its layers were quantized while loading as {got[0]} (group "
                 f"{got[1]}, {got[2]} activations), not as this recipe asks ({want[0]}, group "
                 f"{want[1]}, {want[2]}): left as loaded; load it with this recipe to change it")
        return False
    layers = [model.get_submodule(n) for n in pre["layers"]]
    after = sum(b.numel() * b.element_size() for q in layers for b in q.buffers())
    ctx.change(comp, f"{len(layers)} Linear already {dtype} weight-only, {act} activations, "
               f"{after / 2**20:.1f} MiB: quantized layer by layer while loading "
               f"{pre['path']} ({pre['how']})")
    ctx.report.extra.setdefault("quantize", {})[comp] = {
        "layers": len(layers), "bytes_after": after, "dtype": dtype, "act_dtype": act,
        "cache": pre.get("cache"), "skipped": dict(pre.get("skipped", {})), "at_load": True}
    return True
