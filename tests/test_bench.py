"""The harness end to end on the tiny toy workload: each configuration in its own process.

Worker processes import torch (2-4 s each), so this file starts few of them: one shared
run (limits + baseline + a good and a crashing recipe) and one cut run.
"""
import dataclasses
import json
from pathlib import Path

import pytest
from PIL import Image

from fastpipes.bench import WorkloadSpec, check_schema, plan, render, run_benchmark
from fastpipes.errors import BenchmarkError
from fastpipes.hardware import detect

CHANNELS_LAST = {"name": "channels_last", "memory_format": {}}
BROKEN = {"name": "broken", "memory_format": {"components": ["no_such_component"]}}


@pytest.fixture(scope="module")
def toy_run(tmp_path_factory):
    spec = WorkloadSpec("toy", size="tiny", batch_size=2)
    return run_benchmark(spec, [CHANNELS_LAST, BROKEN], iters=2, warmup=0, limits_quick=True,
                         progress=False, command="pytest toy")


def test_json_follows_documented_schema(toy_run, tmp_path):
    data = json.loads(toy_run.json())
    assert check_schema(data) == []
    assert data["workload"]["family"] == "toy" and data["workload"]["flops"] > 0
    assert data["limits"]["gemm_gflops"] > 0 and data["limits"]["bandwidth_gbps"] > 0
    assert data["settings"]["threads"] >= 1 and data["command"] == "pytest toy"
    assert data["machine"]["torch_version"] == data["torch_version"]
    assert [c["name"] for c in data["configs"]] == ["fp32_eager", "channels_last", "broken"]


def test_baseline_and_recipe_measured_on_same_inputs(toy_run):
    base, cl = toy_run.config("fp32_eager"), toy_run.config("channels_last")
    assert base.ok and cl.ok
    assert base.speedup == pytest.approx(1.0)
    assert cl.speedup == pytest.approx(base.latency_s["median"] / cl.latency_s["median"])
    for c in (base, cl):
        lat = c.latency_s
        assert len(lat["runs"]) == 2 and lat["min"] <= lat["median"] <= lat["max"]
        assert c.compile_s >= 0 and c.peak_rss_mb > 50 and c.items == 2
        assert c.throughput == pytest.approx(2 / lat["median"])
        assert 0 < c.gflops_share  # achieved / measured GEMM peak
    # identical seeded inputs: channels-last changes only the layout, so FP32 output matches
    assert cl.fidelity["ok"] and cl.fidelity["metrics"]["rel_error"] <= 1e-5
    assert cl.report["passes"][0]["name"] == "memory_format"
    assert cl.report["passes"][0]["status"] == "applied"


def test_crashing_configuration_does_not_lose_the_others(toy_run):
    broken = toy_run.config("broken")
    assert broken.status == "failed" and broken.latency_s is None
    assert "no_such_component" in broken.reason and "accelerate" in broken.reason
    assert "Traceback" in broken.traceback
    assert toy_run.config("channels_last").ok  # ran before it, kept; the run completed


def test_markdown_and_png_are_written(toy_run, tmp_path):
    md = render.markdown(toy_run)
    assert "| fp32_eager (baseline) | exact | ok |" in md and "| broken | exact | FAILED |" in md
    png = render.plot(toy_run, tmp_path / "toy.png")
    with Image.open(png) as img:
        img.verify()
        assert img.format == "PNG"


def _worker_pids(marker: str) -> list[int]:
    pids = []
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:
                if marker in (entry / "cmdline").read_bytes().decode(errors="replace"):
                    pids.append(int(entry.name))
            except OSError:
                pass
    return pids


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="checks leftover processes via /proc")
def test_max_time_cuts_cleanly(tmp_path):
    # the toy sleeps only after the memory_format pass, so the baseline completes; its output
    # cannot be saved as a fidelity reference, which must cost the row nothing but that note
    spec = WorkloadSpec("toy", size="tiny", options={"sleep_if_channels_last": 600,
                                                     "unportable_output": True})
    result = run_benchmark(spec, [CHANNELS_LAST], iters=1, warmup=0, max_time=15, limits=False,
                           progress=False, workdir=tmp_path / "work")
    base, cl = result.configs
    assert base.ok and base.latency_s["median"] > 0, base.reason
    assert "saving the FP32 reference output failed" in base.reason
    assert not (tmp_path / "work" / "reference.pt").exists()
    assert cl.status == "cut" and "max-time 15 s" in cl.reason and "first call" in cl.reason
    assert cl.wall_s < 25
    assert _worker_pids(str(tmp_path / "work")) == []  # killed with its process group
    assert check_schema(json.loads(json.dumps(result.to_dict()))) == []


def test_plan_runs_unmet_recipes_only_when_asked(tmp_path, monkeypatch):
    (tmp_path / "needs_bf16.yaml").write_text(
        "# fastpipes bench toy --recipes needs_bf16\nname: needs_bf16\nfamily: generic\n"
        "requires: {native_bf16: true}\nmemory_format: {}\n")
    monkeypatch.setenv("FASTPIPES_RECIPE_PATH", str(tmp_path))
    no_bf16 = dataclasses.replace(detect(), bf16_native=False)

    default = {p.name: p for p in plan("toy", None, info=no_bf16)}
    assert not default["needs_bf16"].run and "--all" in default["needs_bf16"].reason
    assert "bf16" in default["needs_bf16"].hardware_note
    assert default["fp32_eager"].baseline and default["fp32_eager"].run

    everything = {p.name: p for p in plan("toy", None, run_all=True, info=no_bf16)}
    assert everything["needs_bf16"].run and everything["needs_bf16"].hardware_note

    named = plan("toy", ["needs_bf16", "missing_recipe"], info=no_bf16)
    assert named[1].run and named[1].hardware_note
    assert named[2].failed and "missing_recipe" in named[2].reason


def test_plan_runs_by_default_the_recipes_made_for_the_workload_measured():
    """`bench sam` runs the encoder recipes, `bench sam --workload click` the click ones;
    the others are listed as not run, with the workload they are made for."""
    for workload, made_for, other in ((None, "sam_fp32_fast", "sam_fp32_click"),
                                      ("click", "sam_fp32_click", "sam_fp32_fast")):
        planned = {p.name: p for p in plan("sam", None, info=detect(), workload=workload)}
        assert planned[made_for].run, planned[made_for].reason
        assert not planned[other].run and "made for --workload" in planned[other].reason
        everything = {p.name: p for p in plan("sam", None, run_all=True, info=detect(),
                                              workload=workload)}
        assert everything[other].run
    named = plan("sam", ["sam_fp32_click"], info=detect())
    assert named[1].run and not named[1].reason


def test_unknown_family_and_bad_counts_are_errors():
    from fastpipes.errors import BenchmarkError

    with pytest.raises(BenchmarkError, match="allowed: .*toy"):
        run_benchmark(WorkloadSpec("nope"), progress=False)
    with pytest.raises(BenchmarkError, match="iters"):
        run_benchmark(WorkloadSpec("toy"), iters=0, progress=False)


def test_plan_rejects_a_recipe_of_another_family(tmp_path):
    path = tmp_path / "sdxl_only.yaml"
    path.write_text("name: sdxl_only\nfamily: sdxl\nmemory_format: {}\n")
    planned = plan("toy", [str(path)], info=detect())
    assert planned[1].failed and "for sdxl pipelines" in planned[1].reason


def test_auto_row_and_second_start_of_compiling_recipes():
    """--recipes auto searches inside its worker; a compiling recipe gets a second start on
    the caches its first start left (counted hits, not timings: this is a unit test)."""
    compiled = {"name": "compiled", "compile": {}}
    result = run_benchmark(WorkloadSpec("toy", size="tiny"), [compiled, "auto"],
                           overrides=["auto.iters=1"], iters=2, warmup=0, limits=False,
                           progress=False)
    assert check_schema(json.loads(json.dumps(result.to_dict()))) == []
    base, c, auto = result.configs
    assert base.compile_warm_s is None  # nothing to warm: no compile
    assert c.ok and c.compile_warm_s is not None and c.compile_warm_s >= 0
    assert c.extra["fxgraph_cache_miss"] >= 1  # its first start was cold: own empty cache
    assert c.extra["warm_fxgraph_cache_hit"] >= 1 and "warm_fxgraph_cache_miss" not in c.extra
    assert auto.ok and "auto chose" in auto.reason and auto.fidelity["ok"]
    decision = auto.report["extra"]["auto"]
    assert "generic_fp32_fast" in [t["recipe"] for t in decision["trials"]]
    assert not decision["cached"] and auto.extra["accelerate_s"] > 0
    assert auto.compile_warm_s is not None  # the second start reused the cached decision
    assert auto.extra["warm_accelerate_s"] < auto.extra["accelerate_s"]


@pytest.mark.parametrize("recipe, second_start", [
    (None, False), ("auto", True), ({"memory_format": {}}, False),
    ({"compile": {}}, True), ({"compile": {"enabled": False}}, False),
    ({"kv_cache": {"compile_decode": True}}, True), ({"kv_cache": {}}, False),
    ({"openvino": {"components": ["model"]}}, True),
    ({"openvino": {"components": ["model"], "cache": False}}, False)])
def test_which_recipes_get_a_second_start(recipe, second_start):
    from fastpipes.bench.plan import compiles

    assert compiles(recipe) is second_start


def test_no_baseline_runs_the_recipes_without_speedup_or_fidelity(tmp_path):
    result = run_benchmark(WorkloadSpec("toy", size="tiny"), [CHANNELS_LAST], iters=1, warmup=0,
                           limits=False, warm_start=False, baseline=False, progress=False)
    base, cl = result.config("fp32_eager"), result.config("channels_last")
    assert base.status == "not_run" and "--no-baseline" in base.reason
    assert cl.ok and cl.latency_s["median"] > 0 and cl.throughput > 0
    assert cl.speedup is None and cl.fidelity is None
    assert "no fidelity" in cl.reason
    assert check_schema(json.loads(result.json())) == []


def test_a_workload_built_in_bf16_cannot_be_called_the_fp32_baseline():
    spec = WorkloadSpec("llama", size="tiny", options={"dtype": "bfloat16"})
    with pytest.raises(BenchmarkError, match="--no-baseline"):
        run_benchmark(spec, ["llama_woq_int4"], progress=False)


def test_profile_says_where_each_rows_time_goes():
    result = run_benchmark(WorkloadSpec("toy", size="tiny"), [CHANNELS_LAST], iters=1, warmup=0,
                           limits_quick=True, warm_start=False, profile=True, progress=False)
    assert check_schema(json.loads(result.json())) == []
    groups = result.workload["flops_by_group"]  # counted on the FP32 run
    assert groups["convolution"] > 0 and groups["GEMM: linear layers"] > 0
    for c in result.configs:
        assert c.profile["total_s"] > 0
        assert {"convolution", "GEMM: linear layers"} <= set(c.profile["groups"])
        assert sum(c.profile["groups"].values()) == pytest.approx(c.profile["total_s"])
    md = render.markdown(result)
    assert "where channels_last's time goes" in md and "| convolution |" in md
    assert "of its ceiling" in md and "GEMM ceiling of its class: exact" in md


def test_a_pass_that_falls_back_at_the_first_call_is_not_reported_as_applied(tmp_path):
    """compile falls back to eager only when the model first runs, after accelerate() has
    returned: the row must show what ran (fallback + its warning), not 'applied'."""
    spec = WorkloadSpec("toy", size="tiny", options={"graph_break": True})
    recipe = {"name": "fullgraph", "compile": {"backend": "eager", "fullgraph": True,
                                               "fallback": "eager"}}
    result = run_benchmark(spec, [recipe], iters=1, warmup=0, limits=False, progress=False,
                           warm_start=False, workdir=tmp_path / "work")
    row = result.config("fullgraph")
    assert row.ok, row.reason
    (compile_pass,) = [p for p in row.report["passes"] if p["name"] == "compile"]
    assert compile_pass["status"] == "fallback"
    assert any("torch.compile failed, running eager" in w for w in row.report["warnings"])
