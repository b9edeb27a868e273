"""SDXL: builders at the real shapes, the diffusers adapter, recipes end to end on a tiny
pipeline vs FP32, and all-or-nothing accelerate()."""
from __future__ import annotations

import pytest
import torch

pytest.importorskip("diffusers")
pytest.importorskip("transformers")

import fastpipes  # noqa: E402
from fastpipes.errors import PassError, RecipeError  # noqa: E402
from fastpipes.passes.base import PASSES, PassSpec  # noqa: E402
from fastpipes.pipelines.base import find_adapter  # noqa: E402
from fastpipes.sdxl.pipeline import psnr  # noqa: E402
from fastpipes.sdxl.build import (SdxlShape, build_sdxl, build_tokenizer,  # noqa: E402
                                            clip_vocab, unet_config, vae_config)
from fastpipes.recipe.load import load_recipe  # noqa: E402

from fastpipes.bench.workloads import WorkloadSpec  # noqa: E402
from fastpipes.sdxl.bench import SdxlWorkload  # noqa: E402

STEPS, SIDE = 2, 64


def generate(pipe) -> torch.Tensor:
    """Two Euler steps at 64x64 with a fixed prompt and fixed initial latents."""
    latents = torch.randn(1, 4, SIDE // 8, SIDE // 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        out = pipe("a red cube on a table", height=SIDE, width=SIDE, num_inference_steps=STEPS,
                   guidance_scale=5.0, latents=latents, output_type="pt")
    return out.images.float()  # [1, 3, 64, 64] in [0, 1]


@pytest.fixture(scope="module")
def reference() -> torch.Tensor:
    return generate(build_sdxl("tiny"))


@pytest.fixture
def pipe():
    return build_sdxl("tiny")


def test_full_unet_has_sdxl_base_shapes():
    from diffusers import AutoencoderKL, UNet2DConditionModel

    full = SdxlShape.from_name("full")
    with torch.device("meta"):  # shapes only: no memory, no init
        unet = UNet2DConditionModel(**unet_config(full))
        vae = AutoencoderKL(**vae_config(full))
    assert sum(p.numel() for p in unet.parameters()) == 2_567_463_684  # SDXL base UNet
    assert sum(p.numel() for p in vae.parameters()) == 83_653_863  # SDXL VAE
    assert unet.config.cross_attention_dim == 2048
    assert unet.add_embedding.linear_1.in_features == 2816
    assert vae.config.force_upcast and vae.config.scaling_factor == 0.13025


def test_local_clip_vocab_is_full_size_and_valid():
    vocab, merges = clip_vocab(49408)
    assert len(vocab) == 49408 and sorted(vocab.values()) == list(range(49408))
    assert vocab["<|startoftext|>"] == 49406 and vocab["<|endoftext|>"] == 49407
    assert all(a + b in vocab for a, b in merges)  # every merge yields a vocab token
    tok = build_tokenizer(49408)
    ids = tok("a photograph of an astronaut", padding="max_length", max_length=77).input_ids
    assert len(ids) == 77 and ids[0] == 49406 and 49407 in ids and max(ids) < 49408


def test_adapter_names_components_of_sdxl_and_variants(pipe):
    from diffusers import StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline

    a = find_adapter(pipe)
    assert a.name == "diffusers"
    assert list(a.components()) == ["unet", "vae", "vae_decoder", "text_encoder",
                                    "text_encoder_2"]
    assert a.default_components("precision") == ["unet"]  # the VAE stays FP32
    assert a.default_components("compile") == ["unet", "vae_decoder"]
    assert {s.component for s in a.attention_sites()} == {"unet", "vae"}
    for cls in (StableDiffusionXLImg2ImgPipeline, StableDiffusionXLInpaintPipeline):
        variant = cls(**pipe.components)
        assert find_adapter(variant).name == "diffusers"
    report = fastpipes.accelerate(pipe, {"attention": {"backend": "sdpa"}})
    assert report.components == list(a.components())


def test_component_the_pipeline_lacks_is_a_recipe_error(pipe):
    with pytest.raises(RecipeError, match="no component 'transformer'"):
        fastpipes.accelerate(pipe, {"fuse_qkv": {"components": ["transformer"]}})


def test_attention_math_and_sdpa_agree(pipe, reference):
    report = fastpipes.accelerate(pipe, {"attention": {"backend": "math"}})
    assert "unet: 8 Attention -> AttnProcessor (math)" in report.record("attention").changes
    assert psnr(reference, generate(pipe), peak=1.0) >= 60.0


def test_fp32_layout_recipe_end_to_end(pipe, reference):
    # the sdxl_fp32_fast passes that need no compile: SDPA + fused QKV + channels-last
    report = fastpipes.accelerate(pipe, {"attention": {}, "fuse_qkv": {}, "memory_format": {}})
    assert report.applied == ["attention", "fuse_qkv", "memory_format"]
    out = generate(pipe)
    assert psnr(reference, out, peak=1.0) >= 60.0  # exact precision: only summation order differs
    torch.testing.assert_close(out, reference, atol=2e-4, rtol=0)


@pytest.mark.parametrize("name,min_db", [("sdxl_fp32_fast", 60.0), ("sdxl_bf16", 25.0),
                                         ("sdxl_int8_dynamic", 30.0)])
def test_builtin_recipes_end_to_end(pipe, reference, name, min_db):
    # compile with the eager backend: checks the wiring without an Inductor compile
    recipe = load_recipe(name, ["compile.backend=eager"])
    report = fastpipes.accelerate(pipe, recipe)
    assert "compile" in report.applied
    out = generate(pipe)
    # FP32 recipes only reorder sums; BF16 keeps 8 mantissa bits and dynamic int8 rounds every
    # Linear input to 8 bits through a random-weight UNet, so the tiny model's image is
    # compared at a looser, stated bound
    assert psnr(reference, out, peak=1.0) >= min_db, report


def test_failed_accelerate_leaves_pipeline_unchanged(pipe, reference, monkeypatch):
    before = {k: v for k, v in pipe.unet.state_dict().items()}
    procs = {k: type(v) for k, v in pipe.unet.attn_processors.items()}

    def boom(ctx, cfg):
        raise RuntimeError("injected failure")

    spec = PASSES.get("memory_format")
    monkeypatch.setitem(PASSES._items, "memory_format",
                        PassSpec("memory_format", spec.config, boom, spec.summary))
    with pytest.raises(PassError, match="memory_format"):
        fastpipes.accelerate(pipe, {"attention": {"backend": "math"}, "fuse_qkv": {},
                                    "memory_format": {}})
    # fuse_qkv ran before the failure: its modules, processors and flags are gone again
    assert {k: type(v) for k, v in pipe.unet.attn_processors.items()} == procs
    assert not any(hasattr(m, "to_qkv") or hasattr(m, "to_kv") for m in pipe.unet.modules())
    after = pipe.unet.state_dict()
    assert after.keys() == before.keys()
    assert all(after[k] is before[k] or torch.equal(after[k], before[k]) for k in before)
    assert torch.equal(generate(pipe), reference)


def test_workload_unet_step_and_fidelity():
    w = SdxlWorkload(WorkloadSpec("sdxl", size="tiny", options={"steps": 2}))
    fp32, fast = w.build(), w.build()
    fastpipes.accelerate(fast, {"attention": {}, "fuse_qkv": {}})
    x = w.inputs(fp32)
    ref = w.run(fp32, x)
    assert ref.shape == (2, 4, 8, 8)
    ref_view = w.view(fp32, x, ref)
    fid = w.compare(fast, ref_view, w.view(fast, x, w.run(fast, x), ref_view), "exact")
    assert fid.ok and fid.metrics["psnr_db"] >= 60.0
    assert "not measured: image PSNR" in fid.note  # no end-to-end image here: said so
    assert w.flops(fp32, x) > 0
    extra = w.extra_metrics(fast, x)
    assert extra["vae_decode_s"] > 0 and extra["end_to_end_s"] > 0


def test_workload_fidelity_includes_the_end_to_end_image_and_class_bars():
    w = SdxlWorkload(WorkloadSpec("sdxl", size="tiny", options={"steps": 2}))
    fp32, other = w.build(), w.build()
    x = w.inputs(fp32)
    w.extra_metrics(fp32, x)  # times generate and keeps its image for view()
    ref = w.view(fp32, x, w.run(fp32, x))
    assert set(ref) == {"noise_pred", "image"} and ref["image"].shape == (1, 3, 64, 64)
    assert set(w.view(fp32, x, ref["noise_pred"])) == {"noise_pred"}  # the image is used once
    w.extra_metrics(other, x)
    same = w.compare(other, ref, w.view(other, x, w.run(other, x), ref), "exact")
    assert same.ok and same.metrics["image_psnr_db"] == float("inf")  # same seed: identical
    noisy = {"noise_pred": ref["noise_pred"] + 0.1 * ref["noise_pred"].std() * torch.randn(
        ref["noise_pred"].shape, generator=torch.Generator().manual_seed(0)),
        "image": ref["image"]}
    fid = w.compare(other, ref, noisy, "exact")
    assert 30.0 < fid.metrics["psnr_db"] < 40.0 and not fid.ok  # exact bar: 40 dB
    int8 = w.compare(other, ref, noisy, "int8")
    assert int8.ok and int8.thresholds == ("noise-prediction PSNR dB >= 30, image PSNR dB >= 30 "
                                           "(int8 bars)")


def test_a_saved_pipeline_loads_back_with_the_same_outputs(tmp_path, reference):
    made = build_sdxl("tiny")
    made.save_pretrained(tmp_path / "sdxl")  # the diffusers directory format, safetensors
    loaded = build_sdxl(model=str(tmp_path / "sdxl"))
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):  # the weights: bit for bit
        want, got = getattr(made, name).state_dict(), getattr(loaded, name).state_dict()
        assert want.keys() == got.keys() and all(torch.equal(want[k], got[k]) for k in want)
    # the image: transformers 5.25 computes the pooled text projection of a loaded
    # CLIPTextModelWithProjection along another path (last hidden states equal, text_embeds
    # 2e-7 apart), which two Euler steps grow to ~3e-6; a wrong weight would move it by > 1e-2
    torch.testing.assert_close(generate(loaded), reference, rtol=0, atol=1e-4)
    assert fastpipes.accelerate(loaded, {"attention": {}}).adapter == "diffusers"


def test_a_directory_that_is_not_a_diffusers_pipeline_is_a_clear_error(tmp_path):
    from fastpipes.errors import InputError

    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="cannot load an SDXL pipeline from .*empty.*model_index.json"):
        build_sdxl(model=str(tmp_path / "empty"))


def test_a_damaged_weight_file_names_the_directory(tmp_path):
    from fastpipes.errors import InputError

    build_sdxl("tiny").save_pretrained(tmp_path / "sdxl")
    weights = next((tmp_path / "sdxl" / "unet").glob("*.safetensors"))
    weights.write_bytes(weights.read_bytes()[:100])  # truncated
    with pytest.raises(InputError, match="cannot load an SDXL pipeline from .*sdxl"):
        build_sdxl(model=str(tmp_path / "sdxl"))


def test_sdxl_bf16_without_text_encoders_on_precomputed_embeddings(pipe):
    """A common memory-saving shape: no text encoders, precomputed prompt embeddings.
    diffusers then makes the latents in the UNet's dtype, so the FP32 VAE receives BF16
    latents; it used to crash at decode (BFloat16 input, float bias)."""
    from diffusers import StableDiffusionXLPipeline

    def bare(p):
        out = StableDiffusionXLPipeline(vae=p.vae, text_encoder=None, text_encoder_2=None,
                                        tokenizer=None, tokenizer_2=None, unet=p.unet,
                                        scheduler=p.scheduler, add_watermarker=False)
        out.set_progress_bar_config(disable=True)
        return out

    g = torch.Generator().manual_seed(0)
    unet = pipe.unet
    pooled = unet.add_embedding.linear_1.in_features - 6 * unet.config.addition_time_embed_dim
    emb = torch.randn(1, 77, unet.config.cross_attention_dim, generator=g)
    pe = torch.randn(1, pooled, generator=g)

    def run(p):
        with torch.no_grad():
            return p(prompt_embeds=emb, pooled_prompt_embeds=pe, negative_prompt_embeds=emb * 0,
                     negative_pooled_prompt_embeds=pe * 0, num_inference_steps=2, height=SIDE,
                     width=SIDE, latents=torch.randn(1, 4, 8, 8, generator=torch.Generator()
                                                     .manual_seed(7)), output_type="pt").images

    reference = run(bare(build_sdxl("tiny")))
    fast = bare(pipe)
    report = fastpipes.accelerate(fast, "sdxl_bf16", overrides=["compile.enabled=false"])
    assert "vae: decode() casts bf16 inputs to float32 (it stays FP32)" in \
        report.record("precision").changes
    image = run(fast)
    assert image.dtype == torch.float32 and psnr(reference, image, peak=1.0) >= 25.0
