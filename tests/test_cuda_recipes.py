"""CUDA recipes on a machine without CUDA: refused with the reason, never offered by auto,
listed as needing CUDA; their selection logic (quantize on CUDA) checked without a GPU.
The `cuda`-marked tests run the CUDA paths where a GPU is present (benchmarks/gpu_check.sh)."""
import dataclasses

import pytest
import torch

from fastpipes.recipe import load_recipe

CUDA_RECIPES = ["sam_cuda_bf16", "sdxl_cuda_bf16", "llama_cuda_bf16", "llama_cuda_woq_int8",
                "llama_cuda_woq_int4"]


@pytest.mark.parametrize("name", CUDA_RECIPES)
def test_cuda_recipes_declare_the_device(name):
    assert load_recipe(name).requires.device.value == "cuda"


def _no_cuda():
    from fastpipes.hardware import detect

    return dataclasses.replace(detect(), cuda_devices=[], cuda_bf16=False)


def test_auto_never_offers_cuda_recipes_on_a_cpu():
    from fastpipes.auto import candidate_recipes
    from fastpipes.recipe import AutoConfig

    for family in ("sam", "sdxl", "llama"):
        offered = candidate_recipes(family, _no_cuda(), AutoConfig(), device="cpu")
        assert offered and not set(offered) & set(CUDA_RECIPES), family


def test_auto_offers_them_for_a_cuda_pipeline():
    from fastpipes.auto import candidate_recipes
    from fastpipes.recipe import AutoConfig

    gpu = dataclasses.replace(_no_cuda(), cuda_devices=["NVIDIA H200"], cuda_bf16=True)
    offered = candidate_recipes("llama", gpu, AutoConfig(), device="cuda:0")
    assert {"llama_cuda_bf16", "llama_cuda_woq_int8", "llama_cuda_woq_int4"} <= set(offered)


def test_bench_plan_does_not_run_a_cuda_recipe_on_the_cpu_even_when_named():
    from fastpipes.bench.plan import plan

    rows = plan("sam", ["sam_cuda_bf16", "sam_fp32_fast"], info=_no_cuda(), device="cpu")
    by_name = {r.name: r for r in rows}
    assert not by_name["sam_cuda_bf16"].run
    assert "needs a CUDA device" in by_name["sam_cuda_bf16"].reason
    assert by_name["sam_fp32_fast"].run


def test_bench_plan_runs_it_on_cuda():
    from fastpipes.bench.plan import plan

    gpu = dataclasses.replace(_no_cuda(), cuda_devices=["NVIDIA H200"], cuda_bf16=True)
    row = plan("sam", ["sam_cuda_bf16"], info=gpu, device="cuda")[1]
    assert row.run and not row.hardware_note


def test_accelerate_refuses_a_cuda_recipe_on_a_cpu_pipeline_and_leaves_it_alone():
    import fastpipes
    from fastpipes.errors import PreflightError
    from fastpipes.sam.pipeline import build_sam

    sam = build_sam("tiny")
    before = {k: v.clone() for k, v in sam.state_dict().items()}
    forward = sam.image_encoder.forward
    with pytest.raises(PreflightError, match="needs a CUDA device"):
        fastpipes.accelerate(sam, "sam_cuda_bf16")
    assert sam.image_encoder.forward == forward
    after = sam.state_dict()
    assert all(torch.equal(before[k], after[k]) and before[k].dtype == after[k].dtype
               for k in before)


def test_wrong_device_names_what_to_do():
    from fastpipes.hardware import wrong_device

    req = load_recipe("llama_cuda_bf16").requires
    assert "no CUDA device" in wrong_device(req, "cpu", _no_cuda())
    assert wrong_device(req, "cuda:1") == ""
    assert wrong_device(load_recipe("llama_bf16").requires, "cuda") == ""


def test_quantize_on_cuda_refuses_cpu_only_settings():
    from fastpipes.passes.quantize import QuantizeConfig
    from fastpipes.passes.quantize_cuda import refusal

    assert "CPU recipe feature" in refusal(QuantizeConfig(mode="dynamic"), "cuda")
    assert "BF16 activations" in refusal(QuantizeConfig(act_dtype="float32"), "cuda")
    if not torch.cuda.is_available():  # then the kernel probe says why, never raises
        assert "no CUDA device" in refusal(QuantizeConfig(dtype="int4"), "cuda")


def test_cuda_int4_quantizer_matches_the_cpu_one():
    from fastpipes.kernels.woq import quantize_int4
    from fastpipes.kernels.woq_cuda import quantize_int4_on_device

    w = torch.randn(16, 256)
    a, sa = quantize_int4_on_device(w, 128)
    b, sb = quantize_int4(w, 128)
    assert torch.equal(a, b) and torch.allclose(sa, sb)


def test_cuda_int8_layer_arithmetic_on_cpu():
    """Its forward is plain torch (the CUDA-specific part is only where it runs)."""
    from fastpipes.kernels.woq_cuda import CudaInt8WeightOnlyLinear

    lin = torch.nn.Linear(64, 32)
    q = CudaInt8WeightOnlyLinear.from_linear(lin, act_dtype=torch.float32)
    x = torch.randn(3, 64)
    torch.testing.assert_close(q(x), lin(x), atol=0.03, rtol=0.03)


# ---- on a GPU only ------------------------------------------------------------------------

@pytest.mark.cuda
@pytest.mark.parametrize("kind", ["int8", "int4"])
def test_cuda_woq_layers_match_the_dequantized_weight(kind):
    from fastpipes.kernels.woq import dequantize_int4
    from fastpipes.kernels.woq_cuda import (quantize_int4_on_device, quantize_linear_cuda,
                                            unavailable)

    assert unavailable(kind, "cuda") == ""
    torch.manual_seed(0)
    lin = torch.nn.Linear(384, 200, device="cuda")  # K padded (384 -> 512 for int4)
    q = quantize_linear_cuda(lin, kind, 128)
    x = torch.randn(5, 384, device="cuda")
    if kind == "int4":
        from torch.nn.functional import pad

        w_int, sz = quantize_int4_on_device(pad(lin.weight.detach(), (0, 128)), 128)
        w = dequantize_int4(w_int.cpu(), sz.cpu(), 128)[:, :384].cuda()
    else:
        w = q.weight.float() * q.scales.float()[:, None]
    ref = (x.bfloat16().float() @ w.t() + lin.bias).float()
    torch.testing.assert_close(q(x).float(), ref, atol=0.1, rtol=0.05)


@pytest.mark.cuda
def test_sam_masked_sdpa_does_not_need_the_math_kernel():
    from torch.nn.attention import SDPBackend, sdpa_kernel

    from fastpipes.kernels.sam_attention import rel_pos_terms, sdpa_rel_pos

    q = k = v = torch.randn(2, 4, 64, 64, device="cuda", dtype=torch.bfloat16)
    rel_h, rel_w = rel_pos_terms(q, torch.randn(15, 64, device="cuda", dtype=torch.bfloat16),
                                 torch.randn(15, 64, device="cuda", dtype=torch.bfloat16), (8, 8))
    ref = sdpa_rel_pos(q.float(), k.float(), v.float(), rel_h.float(), rel_w.float(), 0)
    with sdpa_kernel([SDPBackend.EFFICIENT_ATTENTION]):
        out = sdpa_rel_pos(q, k, v, rel_h, rel_w, 0)
    torch.testing.assert_close(out.float(), ref, atol=0.05, rtol=0.05)


@pytest.mark.cuda
def test_tiny_llama_cuda_recipes_apply_and_generate():
    import fastpipes
    from fastpipes.llama.pipeline import build_llama

    for name in ("llama_cuda_woq_int8", "llama_cuda_woq_int4"):
        model = build_llama("tiny", device="cuda")
        fastpipes.accelerate(model, {"base": name, "kv_cache": {"compile_decode": False}})
        ids = torch.tensor([[5, 6, 7, 8]], device="cuda")
        out = model.generate(ids, max_new_tokens=4, min_new_tokens=4, do_sample=False)
        assert out.shape == (1, 8), name


def test_gpu_scripts_parse_and_refuse_without_cuda(tmp_path):
    """benchmarks/gpu_check.sh is valid bash; gpu_probe.py refuses (exit 2) where there is no
    GPU unless --dry-run (the dry run itself is the script's job: it takes minutes)."""
    import importlib.util
    import subprocess
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    assert subprocess.run(["bash", "-n", str(root / "benchmarks" / "gpu_check.sh")]).returncode == 0
    spec = importlib.util.spec_from_file_location("gpu_probe", root / "benchmarks" / "gpu_probe.py")
    probe = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(probe)
    if not torch.cuda.is_available():
        assert probe.main(["ceilings", "--out", str(tmp_path / "c.json")]) == 2
    assert probe.main(["ceilings", "--dry-run", "--out", str(tmp_path / "d.json")]) == 0
    assert (tmp_path / "d.json").read_text().startswith("{")
