"""Builders make their modules on the device asked (`meta` stands in for a GPU here: the
same code path makes and draws every weight there, without allocating memory), and the
`cuda` tests run only where a CUDA device is present (marker `cuda`)."""
import pytest
import torch

from fastpipes.pipelines.base import seeded_generator


def _devices(module: torch.nn.Module) -> set[str]:
    return {t.device.type for t in [*module.parameters(), *module.buffers()]}


def test_seeded_generator_is_reproducible_and_fits_the_device():
    a = torch.empty(4).normal_(generator=seeded_generator(3))
    b = torch.empty(4).normal_(generator=seeded_generator(3))
    assert torch.equal(a, b)
    assert seeded_generator(0, "meta").device.type == "cpu"  # meta tensors take any generator


def test_build_sam_on_meta_device():
    from fastpipes.sam.pipeline import build_sam

    assert _devices(build_sam("tiny", device="meta")) == {"meta"}
    assert _devices(build_sam("tiny")) == {"cpu"}


def test_build_llama_on_meta_device():
    pytest.importorskip("transformers")
    from fastpipes.llama.pipeline import build_llama

    model = build_llama("tiny", device="meta")
    assert _devices(model) == {"meta"}
    assert model.lm_head.weight.dtype == torch.float32


def test_build_sdxl_on_meta_device():
    pytest.importorskip("diffusers")
    from fastpipes.sdxl.build import build_sdxl

    pipe = build_sdxl("tiny", device="meta")
    for name in ("unet", "vae", "text_encoder", "text_encoder_2"):
        assert _devices(getattr(pipe, name)) == {"meta"}, name


def test_workloads_build_on_the_spec_device(monkeypatch):
    """bench builds where --device says (it used to build on the CPU and only report CUDA)."""
    from fastpipes.bench.workloads.base import WorkloadSpec, get_workload

    for family in ("sam", "llama", "sdxl"):
        pytest.importorskip({"sam": "torch", "llama": "transformers", "sdxl": "diffusers"}[family])
        pipe = get_workload(WorkloadSpec(family, size="tiny", device="meta")).build()
        module = pipe.unet if family == "sdxl" else pipe
        assert _devices(module) == {"meta"}, family


@pytest.mark.cuda
def test_builders_land_on_cuda():
    from fastpipes.llama.pipeline import build_llama
    from fastpipes.sam.pipeline import build_sam

    assert _devices(build_sam("tiny", device="cuda")) == {"cuda"}
    model = build_llama("tiny", device="cuda")
    assert _devices(model) == {"cuda"}
    ids = torch.tensor([[5, 6, 7]], device="cuda")
    assert torch.isfinite(model(ids).logits).all()
