"""fuse_qkv pass: fused projections give the same outputs, apply per component, undo on
failure, and skip visibly where there is nothing to fuse."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import fastpipes  # noqa: E402
from fastpipes.sdxl.pipeline import build_sdxl  # noqa: E402


@pytest.fixture(scope="module")
def pipe_factory():
    return lambda: build_sdxl("tiny", seed=3)


def unet_out(unet) -> torch.Tensor:
    g = torch.Generator().manual_seed(0)
    cfg = unet.config
    pooled = unet.add_embedding.linear_1.in_features - 6 * cfg.addition_time_embed_dim
    with torch.no_grad():
        return unet(torch.randn(2, 4, 8, 8, generator=g), torch.tensor(500.0),
                    encoder_hidden_states=torch.randn(2, 77, cfg.cross_attention_dim, generator=g),
                    added_cond_kwargs={"text_embeds": torch.randn(2, pooled, generator=g),
                                       "time_ids": torch.tensor([[64., 64, 0, 0, 64, 64]] * 2)},
                    return_dict=False)[0]


def test_fused_unet_and_vae_match_unfused(pipe_factory):
    pipe = pipe_factory()
    ref_unet = unet_out(pipe.unet)
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        ref_img = pipe.vae.decode(z).sample
    report = fastpipes.accelerate(pipe, {"fuse_qkv": {}})
    changes = report.record("fuse_qkv").changes
    assert changes[0].startswith("unet: fuse_qkv_projections(): 4 self-attention")
    assert changes[1].startswith("vae: fuse_qkv_projections(): 2 self-attention")
    procs = {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    assert procs == {"FusedAttnProcessor2_0"}
    assert all(hasattr(m, "to_qkv") or hasattr(m, "to_kv") for m in pipe.unet.modules()
               if type(m).__name__ == "Attention")
    torch.testing.assert_close(unet_out(pipe.unet), ref_unet, atol=1e-5, rtol=1e-5)
    with torch.no_grad():
        torch.testing.assert_close(pipe.vae.decode(z).sample, ref_img, atol=1e-5, rtol=1e-5)


def test_submodule_component_uses_per_module_fusion(pipe_factory):
    pipe = pipe_factory()
    z = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(2))
    with torch.no_grad():
        ref = pipe.vae.decode(z).sample
    report = fastpipes.accelerate(pipe, {"fuse_qkv": {"components": ["vae_decoder"]}})
    assert report.record("fuse_qkv").changes[0].startswith(
        "vae_decoder: Attention.fuse_projections(): 1 self-attention")
    assert pipe.vae.decoder.mid_block.attentions[0].fused_projections
    assert not pipe.vae.encoder.mid_block.attentions[0].fused_projections  # encoder untouched
    with torch.no_grad():
        torch.testing.assert_close(pipe.vae.decode(z).sample, ref, atol=1e-5, rtol=1e-5)


def test_nothing_to_fuse_is_a_visible_skip(pipe_factory):
    pipe = pipe_factory()
    report = fastpipes.accelerate(pipe, {"fuse_qkv": {"components": ["text_encoder"]}})
    assert report.applied == []
    assert "no component has fusable diffusers attention" in report.skipped["fuse_qkv"]
    assert report.record("fuse_qkv").changes == [
        "text_encoder: no diffusers Attention modules: left as is"]


def test_snapshot_restore_undoes_fusion(pipe_factory):
    from fastpipes.pipelines.base import find_adapter
    from fastpipes.snapshot import Snapshot

    pipe = pipe_factory()
    ref = unet_out(pipe.unet)
    adapter = find_adapter(pipe)
    snap = Snapshot(adapter.components().values(), adapter.state_objects())
    pipe.unet.fuse_qkv_projections()
    assert "FusedAttnProcessor2_0" in {type(p).__name__ for p in pipe.unet.attn_processors.values()}
    snap.restore()
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}
    assert not any(getattr(m, "fused_projections", False) for m in pipe.unet.modules())
    assert "to_qkv" not in "".join(pipe.unet.state_dict())
    assert torch.equal(unet_out(pipe.unet), ref)


def _bytes(module) -> int:
    return sum(p.numel() * p.element_size() for p in module.parameters())


def test_the_unfused_projections_are_dropped_and_unfuse_brings_them_back(pipe_factory):
    pipe = pipe_factory()
    ref = unet_out(pipe.unet)
    before = _bytes(pipe.unet)
    report = fastpipes.accelerate(pipe, {"fuse_qkv": {"components": ["unet"]}})
    attns = [m for m in pipe.unet.modules() if type(m).__name__ == "Attention"]
    # fusing copies q|k|v (or k|v) into one layer: dropping the originals keeps the size
    assert _bytes(pipe.unet) == before
    assert all(m.to_k is None and m.to_v is None for m in attns)
    assert all((m.to_q is None) != m.is_cross_attention for m in attns)
    assert "the unfused projections dropped" in report.record("fuse_qkv").changes[0]
    torch.testing.assert_close(unet_out(pipe.unet), ref, atol=1e-5, rtol=1e-5)
    pipe.unet.unfuse_qkv_projections()  # diffusers' own API, as a user would call it
    assert {type(p).__name__ for p in pipe.unet.attn_processors.values()} == {"AttnProcessor2_0"}
    assert all(isinstance(m.to_k, torch.nn.Linear) for m in attns)
    torch.testing.assert_close(unet_out(pipe.unet), ref, atol=1e-5, rtol=1e-5)


def test_unfusing_a_quantized_fused_layer_is_a_clear_error(pipe_factory):
    pipe = pipe_factory()
    fastpipes.accelerate(pipe, {"fuse_qkv": {"components": ["unet"]},
                                "quantize": {"mode": "dynamic", "components": ["unet"]}})
    with pytest.raises(fastpipes.InputError, match="cannot unfuse .*Int8DynamicLinear"):
        pipe.unet.unfuse_qkv_projections()


def test_a_failed_accelerate_brings_the_dropped_projections_back(pipe_factory, monkeypatch):
    from fastpipes.passes.base import PASSES

    def boom(ctx, cfg):
        raise RuntimeError("after fusion")

    monkeypatch.setitem(PASSES._items, "memory_format",
                        PASSES.get("memory_format").__class__("memory_format",
                                                              PASSES.get("memory_format").config,
                                                              boom, ""))
    pipe = pipe_factory()
    ref = unet_out(pipe.unet)
    with pytest.raises(fastpipes.PassError):
        fastpipes.accelerate(pipe, {"fuse_qkv": {}, "memory_format": {}})
    attns = [m for m in pipe.unet.modules() if type(m).__name__ == "Attention"]
    assert all(isinstance(m.to_q, torch.nn.Linear) and not hasattr(m, "to_qkv") for m in attns)
    assert "unfuse_qkv_projections" not in pipe.unet.__dict__
    assert torch.equal(unet_out(pipe.unet), ref)
