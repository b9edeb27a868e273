"""Builders make their modules on the device asked (`meta` stands in for a GPU here: the
same code path makes and draws every weight there, without allocating memory), and the
`cuda` tests run only where a CUDA device is present (marker `cuda`).

Every registered family is covered: its bench pipeline and its run pipeline are built on
`meta` from the family registry, so a new family is tested here without an edit, and
``fastpipes bench FAMILY --device cuda`` on a machine without CUDA is refused before any work
(issue 23: bench either runs on the device asked or is refused)."""
import pytest
import torch

from fastpipes.family import FAMILIES
from fastpipes.pipelines.base import find_adapter, seeded_generator

# the model library each family needs to build (a family not listed needs only torch)
NEEDS = {"sdxl": "diffusers", "llama": "transformers"}


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


def _components_on(adapter) -> dict[str, set[str]]:
    parts = adapter.components()
    assert parts, f"{adapter.name}: no components to check"
    return {name: _devices(module) for name, module in parts.items()}


@pytest.mark.parametrize("family", [n for n, f in FAMILIES.items() if f.bench])
def test_every_family_builds_its_bench_pipeline_on_the_spec_device(family):
    """bench builds where --device says (it used to build on the CPU and only report CUDA)."""
    from fastpipes.bench.workloads.base import WorkloadSpec, get_workload

    pytest.importorskip(NEEDS.get(family, "torch"))
    wl = get_workload(WorkloadSpec(FAMILIES.get(family).cli_name, size="tiny", device="meta"))
    pipe = wl.build()
    devices = _components_on(wl.adapter(pipe))
    assert all(d == {"meta"} for d in devices.values()), (family, devices)


@pytest.mark.parametrize("family", [n for n, f in FAMILIES.items() if f.run])
def test_every_family_builds_its_run_pipeline_on_the_job_device(family, tmp_path):
    """``fastpipes run FAMILY --random-weights --model tiny --device meta`` builds there."""
    from fastpipes.family import resolve

    pytest.importorskip(NEEDS.get(family, "torch"))
    job_class = resolve(FAMILIES.get(family), "run")
    job = job_class(out=str(tmp_path), model="tiny", random_weights=True, device="meta")
    pipe = job.build()
    devices = _components_on(find_adapter(job.target(pipe)))
    assert all(d == {"meta"} for d in devices.values()), (family, devices)


@pytest.mark.cuda
def test_builders_land_on_cuda():
    from fastpipes.llama.pipeline import build_llama
    from fastpipes.sam.pipeline import build_sam

    assert _devices(build_sam("tiny", device="cuda")) == {"cuda"}
    model = build_llama("tiny", device="cuda")
    assert _devices(model) == {"cuda"}
    ids = torch.tensor([[5, 6, 7]], device="cuda")
    assert torch.isfinite(model(ids).logits).all()


@pytest.mark.parametrize("family", [n for n, f in FAMILIES.items() if f.bench])
def test_bench_on_a_device_torch_cannot_use_is_refused_before_any_work(family, monkeypatch,
                                                                      capsys):
    """``fastpipes bench sdxl --device cuda`` on a machine without CUDA says so and exits 2
    before a recipe is loaded or a model built (it used to time the CPU and call it CUDA);
    torch is told it sees no CUDA device, so this holds on a GPU machine too."""
    import fastpipes.cli.bench as bench_cli
    from fastpipes.cli.main import build_parser

    def no_work(*args, **kwargs):
        pytest.fail("nothing may run")

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    for name in ("run_benchmark", "plan", "load_recipe"):
        monkeypatch.setattr(bench_cli, name, no_work)
    args = build_parser().parse_args(["bench", FAMILIES.get(family).cli_name, "--device", "cuda"])
    assert args.func(args) == 2
    err = capsys.readouterr().err
    assert "fastpipes bench: --device cuda: " in err and "use --device cpu" in err, err
