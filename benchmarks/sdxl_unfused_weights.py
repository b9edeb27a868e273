"""Count the weights fuse_qkv leaves unused in the full SDXL UNet (no memory: meta device).

    PYTHONPATH=$PWD python benchmarks/sdxl_unfused_weights.py

diffusers' fuse_qkv_projections() adds to_qkv (self-attention) and to_kv (cross-attention)
but keeps to_q/to_k/to_v so that unfuse_qkv_projections() can undo it. FusedAttnProcessor2_0
then reads to_qkv, or to_q + to_kv: the rest stays in memory unread.
"""
import torch
from diffusers import UNet2DConditionModel
from diffusers.models.attention_processor import Attention

from fastpipes.pipelines.sdxl import SdxlShape, unet_config

with torch.device("meta"):
    unet = UNet2DConditionModel(**unet_config(SdxlShape.from_name("full")))
    unet.fuse_qkv_projections()
unused = 0
for m in unet.modules():
    if isinstance(m, Attention) and getattr(m, "fused_projections", False):
        for name in (("to_k", "to_v") if m.is_cross_attention else ("to_q", "to_k", "to_v")):
            unused += sum(p.numel() for p in getattr(m, name).parameters())
print(f"unused unfused q/k/v parameters: {unused / 1e6:.1f} M = {unused * 4 / 2**20:,.0f} MiB in FP32")
