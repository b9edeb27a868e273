"""The real Intel Extension for PyTorch on tiny seeded SAM, SDXL and Llama models.

Marked ``ipex``: deselected by default, run by ``make test-ipex`` in ``.venv-ipex`` (torch
2.8 + IPEX 2.8, transformers 4.51.3). There IPEX must import, so a broken environment fails
here instead of skipping. What IPEX missing looks like is covered in test_pass_ipex.py.

Tolerances against the untouched FP32 model, on the same inputs:
- FP32 IPEX: SAM embeddings relative L2 error <= 1e-5; SDXL image PSNR >= 60 dB; Llama
  teacher-forced max |logit error| <= 1e-4 and the same greedy tokens.
- BF16 IPEX: SAM embeddings relative error <= 2e-2; SDXL PSNR >= 25 dB (the bars
  test_sdxl.py sets for sdxl_bf16); Llama max |logit error| <= 5e-2 and teacher-forced top-1
  agreement >= 0.95 (the Llama class bar).
"""
from __future__ import annotations

import copy

import pytest
import torch
import torch.nn as nn

import fastpipes
from fastpipes.hardware import detect, import_ipex
from fastpipes.recipe.load import load_recipe

pytestmark = pytest.mark.ipex


@pytest.fixture(autouse=True, scope="module")
def ipex():
    module, why = import_ipex()
    if module is None:
        pytest.fail(f"IPEX does not import here ({why}); these tests run in .venv-ipex: "
                    "make test-ipex")
    return module


def ipex_modules(module: nn.Module) -> set[str]:
    return {type(m).__name__ for m in module.modules()
            if type(m).__module__.startswith("intel_extension_for_pytorch")}


def profiled_ops(fn) -> set[str]:
    with torch.autograd.profiler.profile() as prof:
        fn()
    return {e.name for e in prof.function_events}


def rel_err(out: torch.Tensor, ref: torch.Tensor) -> float:
    return ((out.float() - ref.float()).norm() / ref.float().norm()).item()


def bf16_recipe(sections: dict) -> dict:
    # ipex.optimize(dtype=bfloat16) leaves the inputs to autocast, as IPEX documents
    comps = sections["ipex"]["components"]
    return {**sections, "precision": {"mode": "autocast", "dtype": "bfloat16", "components": comps}}


def test_ipex_imports_with_torch_2_8_and_every_probe_agrees():
    import fastpipes.hardware as hw

    assert torch.__version__.startswith("2.8.")
    hw.ipex_unavailable.cache_clear()
    assert hw.ipex_unavailable() == ""
    info = {p.name: p for p in hw.packages(probe=True)}["intel-extension-for-pytorch"]
    assert info.version.startswith("2.8") and info.importable, info.error


# ---- ipex.optimize: SAM's image encoder and the SDXL UNet ------------------------------

@pytest.fixture(scope="module")
def sam_reference():
    from fastpipes.sam.pipeline import build_sam

    sam = build_sam("tiny", seed=0)
    x = torch.randn(1, 3, 128, 128, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        return sam, x, sam.image_encoder(x)


@pytest.mark.parametrize("dtype,bar", [("float32", 1e-5), ("bfloat16", 2e-2)])
def test_ipex_optimize_sam_image_encoder(sam_reference, dtype, bar):
    sam0, x, ref = sam_reference
    sam = copy.deepcopy(sam0)
    sections = {"ipex": {"components": ["image_encoder"], "dtype": dtype}}
    report = fastpipes.accelerate(sam, bf16_recipe(sections) if dtype == "bfloat16" else sections)
    assert report.record("ipex").changes == [
        f"image_encoder: ipex.optimize(dtype={dtype}) in place"]
    assert {"_IPEXLinear", "_IPEXConv2d"} <= ipex_modules(sam.image_encoder)
    with torch.no_grad():
        out = sam.image_encoder(x)
    assert out.dtype == torch.float32 and rel_err(out, ref) <= bar


def test_a_later_failure_undoes_ipex_optimize_in_place(sam_reference):
    from fastpipes.errors import FastpipesError

    sam0, x, ref = sam_reference
    sam = copy.deepcopy(sam0)
    with pytest.raises(FastpipesError, match="no component 'nope'"):
        fastpipes.accelerate(sam, {"ipex": {"components": ["image_encoder"]},
                                   "memory_format": {"components": ["nope"]}})
    assert not ipex_modules(sam.image_encoder)
    with torch.no_grad():
        assert torch.equal(sam.image_encoder(x), ref)


def test_attention_backend_ipex_runs_ipex_flash_kernel_on_sam(sam_reference):
    sam0, x, ref = sam_reference
    sam = copy.deepcopy(sam0)
    # block_size 48 < 64 tokens of the global blocks: the block-wise mask path too
    report = fastpipes.accelerate(sam, {"attention": {"backend": "ipex", "block_size": 48}})
    assert "torch.ops.torch_ipex.flash_attention" in report.record("attention").changes[0]
    with torch.no_grad():
        ops = profiled_ops(lambda: sam.image_encoder(x))
        out = sam.image_encoder(x)
    assert "torch_ipex::flash_attention" in ops
    assert rel_err(out, ref) <= 1e-5


def test_sam_ipex_bf16_recipe_without_its_compile(sam_reference):
    sam0, x, ref = sam_reference
    sam = copy.deepcopy(sam0)
    report = fastpipes.accelerate(sam, load_recipe("sam_ipex_bf16", ["compile.enabled=false"]))
    assert report.applied == ["ipex", "attention", "precision"] and not report.warnings
    with torch.no_grad():
        out = sam.image_encoder(x)
    assert rel_err(out, ref) <= 2e-2


@pytest.fixture(scope="module")
def sdxl_reference():
    from fastpipes.sdxl.pipeline import build_sdxl

    return sdxl_generate(build_sdxl("tiny"))


def sdxl_generate(pipe) -> torch.Tensor:
    latents = torch.randn(1, 4, 8, 8, generator=torch.Generator().manual_seed(7))
    with torch.no_grad():
        out = pipe("a red cube on a table", height=64, width=64, num_inference_steps=2,
                   guidance_scale=5.0, latents=latents, output_type="pt")
    return out.images.float()  # [1, 3, 64, 64] in [0, 1]


@pytest.mark.parametrize("recipe,min_db", [
    ({"ipex": {"components": ["unet"], "dtype": "float32"}}, 60.0),
    (bf16_recipe({"ipex": {"components": ["unet"], "dtype": "bfloat16"}}), 25.0),
], ids=["float32", "bfloat16"])
def test_ipex_optimize_sdxl_unet(sdxl_reference, recipe, min_db):
    from fastpipes.sdxl.pipeline import build_sdxl, psnr

    pipe = build_sdxl("tiny")
    unet = pipe.unet
    fastpipes.accelerate(pipe, recipe)
    assert pipe.unet is unet  # in place: no second copy of the UNet's weights
    assert {"_IPEXConv2d", "_IPEXLinear"} <= ipex_modules(pipe.unet)
    assert psnr(sdxl_reference, sdxl_generate(pipe), peak=1.0) >= min_db


def test_sdxl_ipex_bf16_recipe_without_its_compile(sdxl_reference):
    from fastpipes.sdxl.pipeline import build_sdxl, psnr

    pipe = build_sdxl("tiny")
    report = fastpipes.accelerate(pipe, load_recipe("sdxl_ipex_bf16", ["compile.enabled=false"]))
    assert report.applied == ["ipex", "attention", "precision"] and not report.warnings
    assert psnr(sdxl_reference, sdxl_generate(pipe), peak=1.0) >= 25.0


# ---- ipex.llm.optimize on a tiny transformers Llama ---------------------------------------

@pytest.fixture(scope="module")
def llama_reference():
    from fastpipes.bench.workloads import WorkloadSpec
    from fastpipes.llama.bench import LlamaWorkload

    w = LlamaWorkload(WorkloadSpec("llama", size="tiny",
                                   options={"prompt_len": 40, "new_tokens": 8}))
    model = w.build()
    inputs = w.inputs(model)
    ref = w.view(model, inputs, w.run(model, inputs))  # sequences + teacher-forced logits
    return w, inputs, ref


@pytest.mark.parametrize("recipe,max_err", [("llama_ipex", 1e-4), ("llama_ipex_bf16", 5e-2)])
def test_llm_optimize_keeps_generate_and_uses_ipex_attention(llama_reference, recipe, max_err):
    w, inputs, ref = llama_reference
    model = w.build()
    report = fastpipes.accelerate(model, recipe)
    assert report.applied == ["ipex"]
    assert "_IPEXDecoderLayerCPU" in ipex_modules(model)
    out = w.run(model, inputs)
    assert out.sequences.shape == ref["sequences"].shape == (1, 48)
    fid = w.compare(model, ref, w.view(model, inputs, out, ref), report.precision_class)
    assert fid.ok is not False, fid  # random weights: not judged (None), never a FAIL
    assert fid.metrics["top1_agreement"] >= 0.95, fid.metrics
    assert fid.metrics["max_logit_error"] <= max_err, fid.metrics
    if recipe == "llama_ipex":
        assert torch.equal(out.sequences, ref["sequences"])
    # IPEX's SDPA: its flash kernel for the prompt, its indirect-access KV cache per token
    ids = inputs["input_ids"]
    with torch.no_grad():
        ops = profiled_ops(lambda: model.generate(ids, attention_mask=torch.ones_like(ids),
                                                  max_new_tokens=3, do_sample=False))
    assert {"torch_ipex::flash_attention_kernel", "torch_ipex::masked_multihead_self_attention"} <= ops


def test_ipex_recipes_are_auto_candidates_where_ipex_imports():
    from fastpipes.auto import candidate_recipes

    from fastpipes.recipe import AutoConfig

    candidates = candidate_recipes("llama", detect(), AutoConfig())
    assert "llama_ipex" in candidates
    assert ("llama_ipex_bf16" in candidates) == detect().bf16_native


# ---- torch.compile(backend="ipex") ----------------------------------------------------------

def test_compile_backend_ipex():
    torch._dynamo.reset()
    model = nn.Sequential(nn.Conv2d(3, 8, 3), nn.ReLU(), nn.Flatten(), nn.Linear(8 * 6 * 6, 4))
    x = torch.randn(2, 3, 8, 8)
    with torch.no_grad():
        ref = model(x)
    report = fastpipes.accelerate(model, {"ipex": {}, "compile": {"backend": "ipex"}})
    assert "ipex" in torch._dynamo.list_backends()
    assert any("backend=ipex" in c for c in report.record("compile").changes)
    from torch._dynamo.utils import counters

    counters.clear()
    with torch.no_grad():
        out = model(x)
    assert counters["stats"]["unique_graphs"] >= 1  # dynamo traced it for the ipex backend
    torch.testing.assert_close(out, ref, rtol=1e-5, atol=1e-5)


# ---- the side-by-side benchmark's command, at tiny size ----------------------------------

def test_bench_runs_the_three_llama_attention_options(tmp_path):
    from fastpipes.bench import WorkloadSpec, run_benchmark

    spec = WorkloadSpec("llama", size="tiny", options={"prompt_len": 32, "new_tokens": 8})
    result = run_benchmark(spec, ["llama_attn_eager", "llama_attn_sdpa", "llama_ipex"],
                           iters=1, warmup=0, limits=False, progress=False, command="pytest")
    rows = {c.name: c for c in result.configs}
    assert [rows[n].status for n in ("fp32_eager", "llama_attn_eager", "llama_attn_sdpa",
                                     "llama_ipex")] == ["ok"] * 4, \
        {n: c.reason for n, c in rows.items()}
    for n in ("llama_attn_eager", "llama_attn_sdpa", "llama_ipex"):  # exact: FP32 arithmetic
        fid = rows[n].fidelity  # random weights: measured, not judged
        assert fid["ok"] is None and fid["metrics"]["max_logit_error"] <= 1e-3, (n, fid)
