"""recipe="auto" with an injected measurement: deterministic choice, fidelity filter, disk cache."""
import json

import pytest
import torch
import torch.nn as nn

import fastpipes
from fastpipes import auto


def model():
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU(), nn.Conv2d(4, 2, 1))


@pytest.fixture
def setup(tmp_path, monkeypatch):
    recipes = tmp_path / "recipes"
    recipes.mkdir()
    monkeypatch.setenv("FASTPIPES_RECIPE_PATH", str(recipes))
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(tmp_path / "cache"))
    # hooked: channels-last with an input hook -> fastest, but (in the fake measure) wrong
    (recipes / "hooked.yaml").write_text("memory_format: {convert_inputs: true}\n")
    # plain: channels-last weights only -> faster than FP32 and faithful
    (recipes / "plain.yaml").write_text("memory_format: {convert_inputs: false}\n")
    return tmp_path


class FakeMeasure:
    """Seconds from what the recipe did to the model; an input hook also corrupts the output."""

    def __init__(self, m):
        self.m, self.calls = m, 0

    def __call__(self, call):
        self.calls += 1
        out = call()
        conv = self.m[0]
        if self.m._forward_pre_hooks:
            return 0.2, out + 1.0
        if conv.weight.is_contiguous(memory_format=torch.channels_last):
            return 0.5, out
        return 1.0, out


OVERRIDES = ["auto.builtin=false", "auto.candidates=[hooked,plain]"]
X = (torch.randn(1, 3, 8, 8),)


def first_run():
    m = model()
    return auto.accelerate_auto(m, OVERRIDES, example_inputs=X, measure=FakeMeasure(m))


def test_auto_picks_fastest_faithful_and_applies_it(setup):
    m = model()
    fake = FakeMeasure(m)
    report = auto.accelerate_auto(m, OVERRIDES, example_inputs=X, measure=fake)
    trials = {t["recipe"]: t for t in report.extra["auto"]["trials"]}
    assert trials["hooked"]["status"] == "unfaithful"
    assert trials["plain"]["status"] == "ok" and trials["plain"]["speedup"] == pytest.approx(2.0)
    assert report.extra["auto"]["winner"] == "plain" and report.recipe == "auto -> plain"
    assert m[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert not m._forward_pre_hooks  # the losing candidate was undone
    assert fake.calls == 3  # baseline + 2 candidates


def test_second_call_hits_the_cache(setup):
    assert first_run().extra["auto"]["winner"] == "plain"
    m = model()
    fake = FakeMeasure(m)
    report = auto.accelerate_auto(m, OVERRIDES, example_inputs=X, measure=fake)
    assert report.extra["auto"]["cached"] is True and fake.calls == 0
    assert report.extra["auto"]["winner"] == "plain"


@pytest.mark.parametrize("change", ["torch", "hardware", "shapes"])
def test_cache_misses_when_torch_hardware_or_shapes_change(setup, monkeypatch, change):
    assert first_run().extra["auto"]["winner"] == "plain"
    inputs = X
    if change == "torch":
        monkeypatch.setattr(torch, "__version__", "9.9.9")
    elif change == "hardware":
        real = fastpipes.hardware.detect()
        other = type(real)(**{**real.to_dict(), "cpu_model": "Some Other CPU", "packages": []})
        monkeypatch.setattr(fastpipes.auto, "detect", lambda *a, **k: other)
    else:
        inputs = (torch.randn(1, 3, 16, 16),)
    m = model()
    fake = FakeMeasure(m)
    report = auto.accelerate_auto(m, OVERRIDES, example_inputs=inputs, measure=fake)
    assert report.extra["auto"]["cached"] is False and fake.calls == 3


def test_corrupt_cache_is_ignored_with_a_warning(setup):
    first = first_run()
    key = first.extra["auto"]["key"]
    path = setup / "cache" / "auto" / f"{key}.json"
    path.write_text("{not json")
    m = model()
    with pytest.warns(UserWarning, match="corrupt auto cache"):
        report = auto.accelerate_auto(m, OVERRIDES, example_inputs=X, measure=FakeMeasure(m))
    assert report.extra["auto"]["winner"] == "plain"
    assert json.loads(path.read_text())["winner"] == "plain"  # rewritten


def test_no_faithful_winner_leaves_model_unchanged(setup):
    m = model()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    report = auto.accelerate_auto(m, ["auto.builtin=false", "auto.candidates=[hooked]"],
                                  example_inputs=X, measure=FakeMeasure(m))
    assert report.extra["auto"]["winner"] is None and "unchanged" in report.warnings[0]
    assert not m._forward_pre_hooks
    assert all(torch.equal(before[k], v) for k, v in m.state_dict().items())


def test_budget_stops_trying_after_the_likeliest_and_never_counts_the_rest(setup):
    """Issue #27: candidates past the budget are `over-budget`, carry no precision class
    (they were judged by none), are named in the summary, and a "no winner" decision that
    left them untried is neither stored nor reused."""
    lines: list[str] = []
    m = model()
    fake = FakeMeasure(m)
    report = auto.accelerate_auto(m, OVERRIDES + ["auto.budget_s=1e-9"], example_inputs=X,
                                  measure=fake, say=lines.append)
    hooked, plain = report.extra["auto"]["trials"]
    assert hooked["status"] == "unfaithful" and hooked["precision_class"] == "exact"
    assert plain["status"] == "over-budget" and plain["precision_class"] is None
    assert plain["speedup"] is None and report.extra["auto"]["winner"] is None
    assert "none of the 1 candidate(s) tried (hooked)" in report.warnings[0]
    assert any(w.startswith("auto: not tried: plain (over-budget") and "raise auto.budget_s"
               in w for w in report.warnings)
    assert any("not stored" in w for w in report.warnings)
    assert not (setup / "cache" / "auto").exists() or not list((setup / "cache" / "auto").iterdir())
    assert any("not tried plain" in line for line in lines)
    again, calls, _ = rerun(OVERRIDES + ["auto.budget_s=1e-9"])
    assert again.extra["auto"]["cached"] is False and calls == 2  # searched again


def test_progress_lines_name_each_candidate_with_n_of_N_elapsed_and_budget(setup):
    lines: list[str] = []
    m = model()
    auto.accelerate_auto(m, OVERRIDES, example_inputs=X, measure=FakeMeasure(m),
                         say=lines.append)
    assert lines[0].startswith("2 candidate(s) for this generic pipeline on this ")
    assert lines[0].endswith("likeliest first: hooked, plain")
    assert lines[1].startswith("timing the FP32 baseline")
    trying = [line for line in lines if line.startswith("trying ")]
    assert [t.split(" (")[0] for t in trying] == ["trying hooked", "trying plain"]
    assert "(candidate 2 of 2; 0:00 elapsed, " in trying[1]
    assert "of auto.budget_s=300 s left)" in trying[1]
    assert "plain: 0.5 s, 2.00x FP32, ok" in lines and lines[-1] == "chose plain"
    lines.clear()
    auto.accelerate_auto(model(), OVERRIDES, example_inputs=X, measure=FakeMeasure(m),
                         say=lines.append)
    assert len(lines) == 1 and lines[0].startswith("using the cached decision")


def test_a_stored_no_winner_decision_with_untried_candidates_is_not_reused(setup):
    """A file from before (or from elsewhere) that gave up without trying is measured again."""
    first = first_run()
    key = first.extra["auto"]["key"]
    stale = auto.Decision(key=key, winner=None, baseline_s=1.0, trials=[
        auto.Trial("hooked", auto.TrialStatus.unfaithful, "exact", 0.2, 5.0),
        auto.Trial("plain", auto.TrialStatus.over_budget, reason="spent")])
    auto.save_decision(stale, setup / "cache")
    with pytest.warns(UserWarning, match="no winner and did not try plain"):
        report, calls, _ = rerun()
    assert report.extra["auto"]["winner"] == "plain" and calls == 3


def _machine(tier: str, bf16: bool):
    import dataclasses

    return dataclasses.replace(fastpipes.hardware.detect(), tier=tier, bf16_native=bf16,
                               fp16_native=False, cuda_devices=[])


@pytest.mark.parametrize("tier,bf16,first", [("amx", True, "sam_bf16"),
                                             ("avx512-bf16", True, "sam_bf16"),
                                             ("avx2", False, "sam_fp32_fast")])
def test_family_recipes_come_first_likeliest_on_the_tier_first(tier, bf16, first):
    from fastpipes.auto_order import candidate_recipes
    from fastpipes.recipe.schema import AutoConfig

    names = candidate_recipes("sam", _machine(tier, bf16), AutoConfig())
    assert names[0] == first
    family = [n.startswith("sam_") for n in names]
    assert family == sorted(family, reverse=True)  # every sam_* before any generic_*
    if bf16:  # BF16 before the FP32 recipes where BF16 is native
        assert names.index("sam_bf16") < names.index("sam_fp32_fast")
        assert names.index("generic_bf16") < names.index("generic_fp32_fast")
    else:
        assert not any("bf16" in n for n in names)


def test_the_prior_never_expects_emulated_bf16_to_win():
    from fastpipes.auto_order import expected_speedup

    assert expected_speedup("bf16", "avx2", bf16_native=False) < 0.1
    assert expected_speedup("bf16", "avx512-bf16", True) > expected_speedup("exact",
                                                                             "avx512-bf16", True)
    assert expected_speedup("bf16", "amx", True) > expected_speedup("int8", "amx", True) > 1
    # decode is bound by weight bytes: int4 first
    assert expected_speedup("int4", "avx2", False, memory_bound=True) > expected_speedup(
        "int8", "avx2", False, memory_bound=True) > 1


def test_tiny_sam_auto_tries_a_sam_recipe_first(setup, monkeypatch):
    """Issue #27: in name order generic_* used the whole budget and no SAM recipe was tried."""
    from fastpipes.sam.pipeline import build_sam

    applied: list[str] = []

    def refuse(pipe, rec, *args, **kwargs):  # no compile in a unit test: record and fail
        applied.append(rec.name)
        raise RuntimeError("not in this test")

    monkeypatch.setattr(auto, "apply_recipe", refuse)
    monkeypatch.setattr(auto, "detect", lambda *a, **k: _machine("avx512-bf16", True))
    lines: list[str] = []
    report = fastpipes.auto.accelerate_auto(
        build_sam("tiny"), ["auto.budget_s=1e-9", "auto.iters=1"],
        measure=lambda call: (1.0, call()), say=lines.append)
    trials = report.extra["auto"]["trials"]
    assert applied == ["sam_bf16"] and trials[0]["status"] == "failed"
    assert trials[0]["precision_class"] is None  # failed before it was judged
    assert {t["status"] for t in trials[1:]} == {"over-budget"}
    assert all(t["precision_class"] is None for t in trials[1:])
    assert "likeliest first: sam_bf16, " in lines[0]
    assert any("not stored" in w for w in report.warnings)
    assert not (setup / "cache" / "auto").exists() or not list((setup / "cache" / "auto").iterdir())


def test_auto_through_accelerate_needs_inputs_for_a_plain_module(setup):
    with pytest.raises(fastpipes.FastpipesError, match="example_inputs"):
        fastpipes.accelerate(model(), "auto", overrides=OVERRIDES)


def test_bad_auto_settings_are_recipe_errors(setup):
    with pytest.raises(fastpipes.RecipeError, match="auto.budget_s: must be > 0"):
        fastpipes.accelerate(model(), "auto", overrides=["auto.budget_s=-1"], example_inputs=X)


# ---- precision classes -------------------------------------------------------------------

class ExactMeasure(FakeMeasure):
    """Faster for any change of the model; the output is the real one."""

    def __call__(self, call):
        self.calls += 1
        out = call()
        changed = self.m._forward_pre_hooks or "forward" in self.m.__dict__
        return (0.5 if changed else 1.0), out


def test_each_candidate_is_judged_by_its_own_class_bars(setup):
    (setup / "recipes" / "half.yaml").write_text("precision: {mode: autocast}\n")
    m = model()
    report = auto.accelerate_auto(m, ["auto.builtin=false", "auto.candidates=[half]"],
                                  example_inputs=X, measure=ExactMeasure(m))
    (trial,) = report.extra["auto"]["trials"]
    # BF16 misses the exact bar (1e-3) but meets its own class's (3e-2)
    assert trial["precision_class"] == "bf16" and "(bf16 bars)" in trial["bars"]
    assert 1e-3 < trial["fidelity"]["rel_error"] <= 3e-2
    assert trial["status"] == "ok" and report.recipe == "auto -> half"
    assert report.precision_class == "bf16"


def test_max_class_excludes_a_looser_candidate_without_trying_it(setup):
    (setup / "recipes" / "half.yaml").write_text("precision: {mode: autocast}\n")
    m = model()
    fake = ExactMeasure(m)
    report = auto.accelerate_auto(m, ["auto.builtin=false", "auto.candidates=[half]",
                                      "auto.max_class=exact"], example_inputs=X, measure=fake)
    (trial,) = report.extra["auto"]["trials"]
    assert trial["status"] == "excluded" and "auto.max_class=exact" in trial["reason"]
    assert fake.calls == 1 and report.extra["auto"]["winner"] is None  # the baseline only


# ---- auto without example_inputs: the adapter makes them ------------------------------------

def _auto_trial(pipe, recipe: dict, tmp: "Path"):
    import yaml

    (tmp / "recipes" / "cand.yaml").write_text(yaml.safe_dump(recipe))
    report = fastpipes.accelerate(pipe, "auto", overrides=["auto.builtin=false",
                                                           "auto.candidates=[cand]",
                                                           "auto.iters=1", "auto.cache=false"])
    (trial,) = report.extra["auto"]["trials"]
    return report, trial


def test_sam_auto_needs_no_example_inputs(setup):
    from fastpipes.sam.pipeline import build_sam

    report, trial = _auto_trial(build_sam("tiny"), {"family": "sam",
                                                    "attention": {"block_size": 16}}, setup)
    assert report.extra["auto"]["inputs"] == ("1 image(s) of 128x128 (encoder input), 1 point "
                                              "prompt(s) per image")
    assert trial["status"] in ("ok", "unfaithful") and trial["precision_class"] == "exact"
    assert trial["fidelity"]["mask_iou_min"] == 1.0  # SDPA only reorders sums
    assert trial["fidelity"]["embedding_rel_err"] < 1e-5


def test_sdxl_auto_needs_no_example_inputs(setup):
    pytest.importorskip("diffusers")
    from fastpipes.sdxl.pipeline import build_sdxl

    report, trial = _auto_trial(build_sdxl("tiny"), {"family": "sdxl", "attention": {}}, setup)
    assert report.extra["auto"]["inputs"].startswith(
        "one UNet call as the pipeline makes it: guidance batch 2, latents 8x8 (64x64 pixels)")
    assert trial["status"] in ("ok", "unfaithful") and trial["fidelity"]["psnr_db"] > 60


def test_llama_auto_needs_no_example_inputs(setup):
    pytest.importorskip("transformers")
    from fastpipes.llama.pipeline import build_llama

    report, trial = _auto_trial(build_llama("tiny"), {"family": "llama",
                                                      "quantize": {"dtype": "int8"}}, setup)
    assert report.extra["auto"]["inputs"] == "1 prompt(s) of 16 token ids, then 8 greedy decode steps"
    assert trial["precision_class"] == "int8" and 0 <= trial["fidelity"]["top1_agreement"] <= 1


# -- a decision cache you can trust (issue #14 items 7, 8, 11, 14) -------------------------

def rerun(overrides=OVERRIDES):
    """A second call on a fresh model: (report, how many configurations were measured)."""
    m = model()
    fake = FakeMeasure(m)
    report = auto.accelerate_auto(m, overrides, example_inputs=X, measure=fake)
    return report, fake.calls, m


@pytest.mark.parametrize("edited", ["candidate", "its base"])
def test_editing_a_candidate_or_its_base_measures_again(setup, edited):
    """The key hashes what each candidate is, not its name: a cached winner whose YAML
    changed is never applied unmeasured (before: `cached: True`, the edited recipe applied)."""
    recipes = setup / "recipes"
    (recipes / "parent.yaml").write_text("memory_format: {convert_inputs: false}\n")
    (recipes / "child.yaml").write_text("base: parent\n")
    overrides = ["auto.builtin=false", "auto.candidates=[child]"]
    report, calls, _ = rerun(overrides)
    assert report.extra["auto"]["winner"] == "child" and calls == 2
    # now child converts its inputs: in the fake measure that is fast but wrong
    target = recipes / ("child.yaml" if edited == "candidate" else "parent.yaml")
    target.write_text(target.read_text().replace("base: parent\n", "base: parent\n"
                                                 "memory_format: {convert_inputs: true}\n")
                      if edited == "candidate" else "memory_format: {convert_inputs: true}\n")
    report, calls, m = rerun(overrides)
    assert report.extra["auto"]["cached"] is False and calls == 2
    assert report.extra["auto"]["winner"] is None and not m._forward_pre_hooks


def _tamper(path, how: str, recipes) -> None:
    data = json.loads(path.read_text())
    if how == "foreign-winner":  # any YAML path: was applied without a trial
        (recipes.parent / "elsewhere.yaml").write_text("memory_format: {convert_inputs: true}\n")
        data["winner"] = str(recipes.parent / "elsewhere.yaml")
    elif how == "winner-gone":  # a candidate that does not load: raised on every call
        data["winner"] = "gone"
        data["trials"].append({"recipe": "gone", "status": "ok", "latency_s": 0.1,
                               "speedup": 10.0, "fidelity": 0.0, "reason": ""})
    elif how == "malformed-trial":
        data["trials"][0]["speedup"] = "fast"
    elif how == "unknown-status":
        data["trials"][0]["status"] = "great"
    else:
        assert how == "other-key"
        data["key"] = "0" * 24
    path.write_text(json.dumps(data))


@pytest.mark.parametrize("how", ["foreign-winner", "winner-gone", "malformed-trial",
                                 "unknown-status", "other-key"])
def test_a_decision_this_search_could_not_have_made_is_ignored_and_rewritten(setup, how):
    overrides = ["auto.builtin=false", "auto.candidates=[hooked,plain,gone]"]
    first, calls, _ = rerun(overrides)
    assert first.extra["auto"]["winner"] == "plain" and calls == 3  # gone fails to load
    path = setup / "cache" / "auto" / f"{first.extra['auto']['key']}.json"
    _tamper(path, how, setup / "recipes")
    with pytest.warns(UserWarning, match="invalid auto cache file"):
        report, calls, m = rerun(overrides)
    assert report.extra["auto"]["cached"] is False and calls == 3  # measured again
    assert report.extra["auto"]["winner"] == "plain" and not m._forward_pre_hooks
    assert any("invalid auto cache file" in w for w in report.warnings)
    assert json.loads(path.read_text())["winner"] == "plain"  # rewritten


@pytest.mark.parametrize("case", ["read-only", "auto-is-a-file"])
def test_a_cache_that_cannot_be_written_keeps_and_applies_the_result(setup, read_only, case):
    """Before: PermissionError after the whole search, and the result was lost."""
    cache = setup / "cache"
    cache.mkdir(mode=0o700)
    if case == "read-only":
        read_only(cache)
    else:
        (cache / "auto").write_text("")
    with pytest.warns(UserWarning, match="could not be saved"):
        report, calls, m = rerun()
    assert report.extra["auto"]["winner"] == "plain" and report.recipe == "auto -> plain"
    assert m[0].weight.is_contiguous(memory_format=torch.channels_last)
    assert any("could not be saved" in w and "searches again" in w for w in report.warnings)


def test_decisions_are_saved_in_private_directories(setup):
    first_run()
    for path in (setup / "cache", setup / "cache" / "auto"):
        assert path.stat().st_mode & 0o777 == 0o700, path


def test_a_decision_cache_others_can_write_is_not_read(setup):
    assert first_run().extra["auto"]["winner"] == "plain"
    (setup / "cache" / "auto").chmod(0o777)
    with pytest.warns(UserWarning, match="writable by group and others"):
        report, calls, _ = rerun()
    assert report.extra["auto"]["cached"] is False and calls == 3
    assert any("ignoring the auto decision cache" in w for w in report.warnings)


def test_the_winners_ablations_are_tried_and_a_faster_one_wins(setup):
    # the fake measure makes "forward" wrappers (precision) slow and channels-last fast
    (setup / "recipes" / "both.yaml").write_text(
        "name: both\nmemory_format: {convert_inputs: false}\nprecision: {mode: autocast}\n")

    class PrecisionCosts(FakeMeasure):
        def __call__(self, call):
            self.calls += 1
            out = call()
            cl = self.m[0].weight.is_contiguous(memory_format=torch.channels_last)
            wrapped = "forward" in self.m.__dict__
            return (0.5 if cl else 1.0) + (0.2 if wrapped else 0.0), out

    m = model()
    report = auto.accelerate_auto(m, ["auto.builtin=false", "auto.candidates=[both]"],
                                  example_inputs=X, measure=PrecisionCosts(m))
    trials = {t["recipe"]: t for t in report.extra["auto"]["trials"]}
    assert set(trials) == {"both", "both without memory_format", "both without precision"}
    assert report.extra["auto"]["winner"] == "both without precision"
    assert report.recipe == "auto -> both without precision" and "forward" not in m.__dict__
    assert m[0].weight.is_contiguous(memory_format=torch.channels_last)
    # the cached decision names the ablation, and it is applied again without a search
    again = model()
    fake = PrecisionCosts(again)
    cached = auto.accelerate_auto(again, ["auto.builtin=false", "auto.candidates=[both]"],
                                  example_inputs=X, measure=fake)
    assert cached.extra["auto"]["cached"] and fake.calls == 0
    assert cached.recipe == "auto -> both without precision"


def test_ablation_can_be_turned_off(setup):
    (setup / "recipes" / "both.yaml").write_text(
        "name: both\nmemory_format: {convert_inputs: false}\nprecision: {mode: autocast}\n")
    m = model()
    report = auto.accelerate_auto(m, ["auto.builtin=false", "auto.candidates=[both]",
                                      "auto.ablate=false"], example_inputs=X,
                                  measure=FakeMeasure(m))
    assert [t["recipe"] for t in report.extra["auto"]["trials"]] == ["both"]
