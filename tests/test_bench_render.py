"""Reports from a hand-made BenchResult: no worker processes, so every status is covered fast."""
import json

import pytest
from PIL import Image

from fastpipes.bench import BenchResult, ConfigResult, check_schema
from fastpipes.bench.render import markdown, plot, row, table
from fastpipes.bench.result import RunStatus


def _ok(name, median, speedup, fid_ok=None, klass="exact", **kw):
    fidelity = None if fid_ok is None else {
        "metrics": {"rel_error": 1e-7 if fid_ok else 0.3, "top1_agreement": 1.0},
        "ok": fid_ok, "thresholds": "rel. error <= 0.001 (exact bars)", "precision_class": klass,
        "note": ""}
    return ConfigResult(name, status=RunStatus.ok, precision_class=klass, latency_s={"median": median, "min": median * 0.9,
                                                      "max": median * 1.2, "runs": [median]},
                        items=2, throughput=2 / median, unit="images", speedup=speedup,
                        compile_s=0.5, first_call_s=median + 0.5, peak_rss_mb=812.0,
                        achieved_gflops=12.0, gflops_share=0.1, fidelity=fidelity, **kw)


@pytest.fixture
def result():
    configs = [
        _ok("fp32_eager", 0.2, 1.0, baseline=True),
        _ok("fast", 0.1, 2.0, fid_ok=True, recipe_source="fast.yaml",
            report={"recipe": "fast", "family": "generic", "adapter": "generic", "components": [],
                    "passes": [{"name": "memory_format", "status": "applied", "reason": "",
                                "changes": [], "components": []},
                               {"name": "attention", "status": "skipped",
                                "reason": "no attention sites", "changes": [],
                                "components": []}],
                    "warnings": [], "precision_class": "exact", "extra": {}}),
        _ok("lossy", 0.05, 4.0, fid_ok=False, hardware_note="bf16 matmul is NOT native"),
        ConfigResult("broken", status=RunStatus.failed,
                     reason="PassError during accelerate: boom\nmore"),
        ConfigResult("slow", status=RunStatus.cut,
                     reason="cut: exceeded --max-time 5 s (during timed)"),
        ConfigResult("bf16", status=RunStatus.not_run, reason="not run: needs native bf16"),
    ]
    return BenchResult(
        workload={"family": "toy", "description": "toy net", "spec": {}, "unit": "images",
                  "bound": "compute", "flops": 2.4e9},
        settings={"iters": 3, "warmup": 1, "threads": 2, "max_time_s": 5.0, "device": "cpu",
                  "overrides": ["memory_format.convert_inputs=false"]},
        machine={"cpu_model": "Test CPU", "logical_cpus": 2, "bf16_native": False},
        limits={"gemm_gflops": 120.0, "gemm_n": 2048, "bandwidth_gbps": 30.0, "copy_mb": 512.0,
                "device": "cpu", "ceilings": {"exact": 120.0, "bf16": 960.0, "int8": 1500.0}},
        configs=configs, torch_version="2.x", fastpipes_version="0.1.0",
        command="fastpipes bench toy", date="2026-01-01T00:00:00+00:00")


def test_json_round_trip_matches_schema(result, tmp_path):
    data = json.loads(result.json())
    assert check_schema(data) == []
    again = BenchResult.from_dict(data)
    assert [c.status for c in again.configs] == ["ok", "ok", "ok", "failed", "cut", "not_run"]
    assert again.config("lossy").fidelity["ok"] is False


def test_schema_check_reports_departures(result):
    data = json.loads(json.dumps(result.to_dict()))
    del data["configs"][1]["speedup"]
    data["configs"][2]["status"] = "weird"
    data["settings"]["iters"] = "3"
    problems = check_schema(data)
    assert any("configs[1].speedup: missing" in p for p in problems)
    assert any("settings.iters" in p for p in problems)
    data = json.loads(json.dumps(result.to_dict()))
    data["configs"][2]["status"] = "weird"
    assert any("status" in p and "weird" in p for p in check_schema(data))


def test_rows_say_what_happened(result):
    rows = {c.name: row(c) for c in result.configs}
    assert rows["fp32_eager"]["fidelity vs FP32"] == "reference"
    assert rows["fast"]["speedup"] == "2.00x"
    assert rows["fast"]["latency median (min-max)"] == "100.0 ms (90.0 ms-120.0 ms)"
    assert "applied: memory_format" in rows["fast"]["notes"]
    assert "attention skipped (no attention sites)" in rows["fast"]["notes"]
    assert rows["lossy"]["fidelity vs FP32"].startswith("FAIL (exact bars)")
    assert "hardware: bf16 matmul is NOT native" in rows["lossy"]["notes"]
    assert rows["broken"]["status"] == "FAILED" and "boom more" in rows["broken"]["notes"]
    assert rows["slow"]["status"] == "CUT"
    assert rows["bf16"]["status"] == "not run"
    assert rows["fast"]["machine share"] == "12.0 GFLOP/s"  # share needs the limits
    assert row(result.config("fast"), result.limits)["machine share"] == \
        "12.0 GFLOP/s (10% of FP32 GEMM)"
    assert rows["fast"]["class"] == "exact"


def test_a_row_is_judged_by_the_bars_of_its_own_class_and_says_which(result):
    c = result.config("fast")
    c.precision_class, c.gflops_share = "bf16", 12.0 / 960.0
    c.fidelity = dict(c.fidelity, precision_class="bf16",
                      thresholds="rel. error <= 0.03 (bf16 bars)")
    cells = row(c, result.limits)
    assert cells["fidelity vs FP32"].startswith("ok (bf16 bars): rel_error=")
    assert "bars: rel. error <= 0.03 (bf16 bars)" in cells["fidelity vs FP32"]
    assert cells["class"] == "bf16" and cells["machine share"] == "12.0 GFLOP/s (1% of BF16 GEMM)"
    c.fidelity = dict(c.fidelity, ok=None, note="not judged: random weights")
    assert row(c)["fidelity vs FP32"].startswith("not judged: ")


def test_markdown_has_header_and_one_row_per_config(result):
    md = markdown(result)
    assert "Test CPU" in md and "FP32 120 GFLOP/s, BF16 960 GFLOP/s, int8 1,500 GOP/s" in md
    assert "memory_format.convert_inputs=false" in md
    table_rows = [ln for ln in md.splitlines() if ln.startswith("| ") and "---" not in ln]
    assert len(table_rows) == 1 + len(result.configs)  # header + rows


def test_terminal_table_renders(result):
    from rich.console import Console

    console = Console(width=250, record=True)
    console.print(table(result))
    text = console.export_text()
    for name in ("fp32_eager", "fast", "lossy", "broken", "slow", "bf16"):
        assert name in text


def test_plot_is_a_valid_png(result, tmp_path):
    path = plot(result, tmp_path / "chart.png")
    with Image.open(path) as img:
        img.verify()
    with Image.open(path) as img:
        assert img.format == "PNG" and img.size[0] > 500 and img.size[1] > 200


def test_toy_flops_match_flop_counter():
    import torch
    from torch.utils.flop_counter import FlopCounterMode

    from fastpipes.bench import WorkloadSpec
    from fastpipes.generic.bench import ToyWorkload

    wl = ToyWorkload(WorkloadSpec("toy", size="tiny", batch_size=3))
    pipe = wl.build()
    x = wl.inputs(pipe)
    with FlopCounterMode(display=False) as counter, torch.inference_mode():
        pipe(x)
    assert wl.flops(pipe, x) == counter.get_total_flops()


def test_only_portable_outputs_cross_processes():
    import torch

    from fastpipes.bench.worker import check_portable

    check_portable({"emb": torch.ones(2), "masks": [torch.zeros(1, dtype=torch.bool)], "n": 3})
    with pytest.raises(TypeError, match=r"output\['pipe'\] is a torch.nn.modules.linear.Linear"):
        check_portable({"emb": torch.ones(2), "pipe": torch.nn.Linear(2, 2)})


def test_profile_rates_read_against_the_rows_ceiling():
    from fastpipes.bench.profile import group_of, markdown as profile_md

    prof = {"total_s": 2.0, "groups": {"GEMM: linear layers": 1.0, "other": 1.0},
            "top_ops": [["aten::addmm", 1.0, 48]]}
    md = profile_md("r", prof, {"GEMM: linear layers": 100e9}, ("bf16", 200.0))
    assert "| GEMM: linear layers | 1.000 | 50% | 100.0 | 100 G | 50% |" in md
    assert "GEMM ceiling of its class: bf16 200 GFLOP/s" in md
    # eager's batched GEMMs and a recipe's SDPA are the same work: one group
    assert group_of("aten::bmm") == group_of("aten::_scaled_dot_product_flash_attention_for_cpu")
    assert group_of("aten.bmm") == group_of("aten::bmm")  # the FLOP counter's spelling
    assert group_of("graph_0_cpp_fused__scaled_dot_product_flash_attention_for_cpu_add_4") == \
        "Inductor fused kernels"


# ---- noise: a loaded machine is flagged, with its evidence (issue #27 item 5) -------------

def _noisy(result):
    base = result.config("fp32_eager")
    base.latency_s = {"median": 3.0, "min": 1.8, "max": 10.6, "runs": [1.8, 3.0, 10.6]}
    result.machine["tier"] = "avx512-bf16"
    result.limits["gemm_gflops"] = 60.0  # a third of what a quiet Zen 4 reaches on 2 threads
    return result


def test_a_noisy_run_says_so_with_its_evidence_everywhere(result, tmp_path):
    from rich.console import Console

    from fastpipes.bench.noise import noise_verdict

    r = _noisy(result)
    r.noise = noise_verdict(r.config("fp32_eager").latency_s, r.limits, "avx512-bf16", 2, 1.7)
    assert r.noise["noisy"] and len(r.noise["evidence"]) == 3
    line = "NOISY machine (speedups unreliable; rerun on a quiet machine): FP32 baseline " \
           "max/min 5.89 (1.80-10.60 s; bar 1.25); FP32 GEMM 60 GFLOP/s = 33% of the " \
           "avx512-bf16 tier's typical 180 at 2 threads (bar 60%); load average 1.70 per " \
           "logical CPU before the run (bar 0.5)"
    assert line in markdown(r)
    data = json.loads(r.json())
    assert check_schema(data) == [] and data["noise"]["noisy"] is True
    assert data["noise"]["baseline_max_over_min"] == pytest.approx(10.6 / 1.8)
    console = Console(width=400, record=True)
    console.print(table(r))
    assert "NOISY machine" in console.export_text()
    plot(r, tmp_path / "noisy.png")  # the title carries the verdict (checked by eye)


def test_a_quiet_run_says_what_its_verdict_rests_on(result):
    from fastpipes.bench.noise import noise_verdict

    result.config("fp32_eager").latency_s = {"median": 0.2, "min": 0.198, "max": 0.21,
                                             "runs": [0.198, 0.2, 0.21]}
    result.machine["tier"] = "avx512-bf16"
    result.limits["gemm_gflops"] = 175.0
    result.noise = noise_verdict(result.config("fp32_eager").latency_s, result.limits,
                                 "avx512-bf16", 2, 0.1)
    md = markdown(result)
    assert not result.noise["noisy"] and "NOISY" not in md
    assert ("- quiet machine: FP32 baseline max/min 1.06 (0.20-0.21 s; bar 1.25); FP32 GEMM "
            "175 GFLOP/s = 97% of the avx512-bf16 tier's typical 180 at 2 threads") in md


def test_old_json_without_a_verdict_is_judged_from_its_rows(result):
    r = _noisy(result)
    assert r.noise is None
    assert "NOISY machine" in markdown(r) and "5.89" in markdown(r)


def test_chart_whiskers_span_the_runs(result):
    from fastpipes.bench.render import speedup_range

    lo, hi = speedup_range(result, result.config("fast"))
    # baseline 0.18-0.24 s, fast 0.09-0.12 s
    assert lo == pytest.approx(0.18 / 0.12) and hi == pytest.approx(0.24 / 0.09)
    assert speedup_range(result, result.config("broken")) is None


def test_extra_metrics_are_shown_with_their_ratio_to_fp32(result):
    result.config("fp32_eager").extra = {"click_wall_ms": 60.0, "click_weight_casts": 0.0}
    result.config("fast").extra = {"click_wall_ms": 30.0, "click_weight_casts": 156.0}
    text = markdown(result)
    assert "| metric | fp32_eager | fast | lossy |" in text  # the rows that ran, in order
    assert "| click_wall_ms | 60.0 ms (1.00x) | 30.0 ms (2.00x) | - |" in text
    assert "| click_weight_casts | 0 | 156 | - |" in text


def test_no_extra_metrics_no_extras_section(result):
    assert "Extra metrics" not in markdown(result)


def test_extra_metrics_show_timings_and_rates_as_speedups_over_fp32(result):
    """A time's speedup is FP32's over ours, a rate's ours over FP32's: both read 'higher is
    faster' (tokens/s were once shown as seconds, with the ratio upside down)."""
    from fastpipes.bench.render import extras_markdown, extras_rows

    base, fast = result.configs[0], result.configs[1]
    base.extra = {"ttft_s": 0.8, "decode_tokens_per_s": 4.0, "weight_bytes_per_token": 4e9}
    fast.extra = {"ttft_s": 0.4, "decode_tokens_per_s": 12.0, "weight_bytes_per_token": 1e9,
                  "accelerate_s": 13.0}
    rows = {r[0]: r[1:] for r in extras_rows(result)}
    assert rows["ttft_s"][:2] == ["800.0 ms (1.00x)", "400.0 ms (2.00x)"]
    assert rows["decode_tokens_per_s"][0].startswith("4") and "/s (1.00x)" in rows["decode_tokens_per_s"][0]
    assert rows["decode_tokens_per_s"][1].endswith("/s (3.00x)")
    assert " s" not in rows["decode_tokens_per_s"][1] and rows["accelerate_s"][0] == "-"
    assert "(" not in rows["weight_bytes_per_token"][1]  # not a time: no ratio
    assert "speedup over FP32 eager, higher is faster" in extras_markdown(result)
