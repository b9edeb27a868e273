"""A family is one registered description: a throwaway one, registered here and nowhere else,
shows up in ``fastpipes bench`` / ``fastpipes run`` (sub-commands, typed options, flags,
dispatch), in recipe validation (``family:`` and its component names), in find_adapter and in
the bench workloads, and is built on the device asked. Nothing outside this file is edited."""
from __future__ import annotations

from typing import Any, ClassVar

import pytest
import torch
import torch.nn as nn

from fastpipes.bench.workloads.base import WORKLOADS, Workload, WorkloadSpec, get_workload
from fastpipes.cli.main import build_parser, main
from fastpipes.errors import FastpipesError, RecipeError
from fastpipes.family import FAMILIES, BuildSpec, FamilyDescription, register_family, resolve
from fastpipes.generic.adapter import GENERIC_BARS
from fastpipes.pipelines.base import ADAPTERS, Adapter, find_adapter
from fastpipes.recipe import load_recipe
from fastpipes.recipe.schema import FAMILY_COMPONENTS
from fastpipes.run.base import Flag, Job


class Tiny(nn.Module):
    def __init__(self, width: int = 4):
        super().__init__()
        self.net = nn.Linear(width, width)

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # x: [B, width]
        return self.net(x)


class TinyAdapter(Adapter):
    name = "tinyfam"
    family = "tinyfam"
    description = "the throwaway test family"
    priority = 5
    BARS = GENERIC_BARS

    @classmethod
    def matches(cls, obj: Any) -> bool:
        return isinstance(obj, Tiny)

    def components(self) -> dict[str, nn.Module]:
        return {"net": self.obj.net}


def build(spec: BuildSpec) -> Tiny:
    torch.manual_seed(spec.seed)
    with torch.device(spec.device):
        return Tiny(2 if spec.size == "tiny" else 8).eval()


class TinyWorkload(Workload):
    unit = "items"
    OPTIONS = {"repeats": (int, "how often a run calls the model")}

    def describe(self) -> str:
        return "tiny"


class TinyJob(Job):
    family: ClassVar[str] = "tinyfam"
    SUMMARY: ClassVar[str] = "double numbers"
    MODEL_HELP: ClassVar[str] = "tiny (the only shape)"
    FLAGS: ClassVar[tuple[Flag, ...]] = (
        Flag("--numbers", required=True, metavar="FILE", help="one number per line"),
        Flag("--factor", type=float, default=2.0, help="what to multiply by (default 2)"),
        Flag("--no-round", action="store_false", dest="round", help="keep fractions"))
    ran: ClassVar[list] = []

    @classmethod
    def run_cli(cls, flags: dict[str, Any], common: dict[str, Any]) -> Any:
        cls.ran.append((flags, common))
        return type("Summary", (), {"exit_code": 0, "__str__": lambda self: "ran"})()


TINY = FamilyDescription(name="tinyfam", help="a throwaway family of the tests", build=build,
                         adapter=TinyAdapter, components=("net",),
                         bench=f"{__name__}:TinyWorkload", run=f"{__name__}:TinyJob")


@pytest.fixture
def tinyfam(monkeypatch):
    """TINY registered for one test; the registries are as they were afterwards."""
    for registry in (FAMILIES, FAMILY_COMPONENTS, ADAPTERS):
        monkeypatch.setattr(registry, "_items", dict(registry._items))
    return register_family(TINY)


def _help(capsys, *argv: str) -> str:
    with pytest.raises(SystemExit) as e:
        build_parser().parse_args([*argv, "--help"])
    assert e.value.code == 0
    return capsys.readouterr().out


def test_a_registered_family_is_a_bench_and_a_run_sub_command(tinyfam, capsys):
    assert "tinyfam" in _help(capsys, "bench") and "a throwaway family of the tests" in \
        _help(capsys, "run")
    bench = _help(capsys, "bench", "tinyfam")
    assert "--repeats OPT_REPEATS" in bench and "how often a run calls the model" in bench
    run = _help(capsys, "run", "tinyfam")
    for text in ("double numbers", "--numbers FILE", "--factor FACTOR", "--no-round",
                 "tiny (the only shape)", "--out DIR", "--recipe RECIPE"):
        assert text in run, text


def test_run_dispatches_to_the_family_job_with_its_flags(tinyfam, tmp_path, capsys):
    TinyJob.ran.clear()
    assert main(["run", "tinyfam", "--numbers", "n.txt", "--factor", "3", "--no-round",
                 "--out", str(tmp_path)]) == 0
    (flags, common), = TinyJob.ran
    assert flags == {"numbers": "n.txt", "factor": 3.0, "round": False}
    assert common["out"] == str(tmp_path) and common["recipe"] == "auto"
    with pytest.raises(SystemExit):  # a typed flag is checked by argparse
        main(["run", "tinyfam", "--numbers", "n.txt", "--factor", "x", "--out", str(tmp_path)])
    assert "--factor: invalid float value: 'x'" in capsys.readouterr().err


def test_recipes_may_name_a_registered_family_and_its_components(tinyfam):
    assert load_recipe({"name": "t", "family": "tinyfam",
                        "compile": {"components": ["net"]}}).family == "tinyfam"
    with pytest.raises(RecipeError) as e:
        load_recipe({"name": "t", "family": "tinyfam", "compile": {"components": ["nett"]}})
    assert "unknown tinyfam component 'nett' (did you mean 'net'?)" in str(e.value)
    with pytest.raises(RecipeError) as e:
        load_recipe({"name": "t", "family": "tinyfm"})
    assert "family: unknown value 'tinyfm' (did you mean 'tinyfam'?)" in str(e.value)
    assert "sam, sdxl, llama, generic, tinyfam" in str(e.value)


def test_an_unregistered_family_is_refused_by_recipes_and_bench():
    assert "tinyfam" not in FAMILIES and "tinyfam" not in WORKLOADS
    with pytest.raises(RecipeError, match="family: unknown value 'tinyfam'"):
        load_recipe({"name": "t", "family": "tinyfam"})
    with pytest.raises(FastpipesError, match="unknown family 'tinyfam'; allowed: sam, sdxl"):
        get_workload(WorkloadSpec("tinyfam"))


def test_the_family_builds_benches_and_adapts_on_the_device_asked(tinyfam):
    workload = get_workload(WorkloadSpec("tinyfam", size="tiny", device="meta",
                                         options={"repeats": 2}))
    assert isinstance(workload, TinyWorkload) and WORKLOADS["tinyfam"] is TinyWorkload
    pipe = workload.build()
    assert isinstance(find_adapter(pipe), TinyAdapter)
    assert pipe.net.weight.device.type == "meta" and pipe.net.weight.shape == (2, 2)
    with pytest.raises(FastpipesError, match="unknown tinyfam option"):
        get_workload(WorkloadSpec("tinyfam", options={"repeat": 2}))


def test_a_bad_hook_reference_says_what_is_expected():
    broken = FamilyDescription(name="broken", help="", build=build, adapter=TinyAdapter,
                               components=None, bench="fastpipes.nowhere:Workload")
    with pytest.raises(FastpipesError, match="its bench reference 'fastpipes.nowhere:Workload' "
                                             "cannot be loaded"):
        resolve(broken, "bench")
