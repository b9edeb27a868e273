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


def test_budget_stops_trying(setup):
    m = model()
    report = auto.accelerate_auto(m, OVERRIDES + ["auto.budget_s=1e-9"], example_inputs=X,
                                  measure=FakeMeasure(m))
    assert {t["status"] for t in report.extra["auto"]["trials"]} == {"over-budget"}


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
    from fastpipes.pipelines.sam import build_sam

    report, trial = _auto_trial(build_sam("tiny"), {"family": "sam",
                                                    "attention": {"block_size": 16}}, setup)
    assert report.extra["auto"]["inputs"] == ("1 image(s) of 128x128 (encoder input), 1 point "
                                              "prompt(s) per image")
    assert trial["status"] in ("ok", "unfaithful") and trial["precision_class"] == "exact"
    assert trial["fidelity"]["mask_iou_min"] == 1.0  # SDPA only reorders sums
    assert trial["fidelity"]["embedding_rel_err"] < 1e-5


def test_sdxl_auto_needs_no_example_inputs(setup):
    pytest.importorskip("diffusers")
    from fastpipes.pipelines.sdxl import build_sdxl

    report, trial = _auto_trial(build_sdxl("tiny"), {"family": "sdxl", "attention": {}}, setup)
    assert report.extra["auto"]["inputs"].startswith(
        "one UNet call as the pipeline makes it: guidance batch 2, latents 8x8 (64x64 pixels)")
    assert trial["status"] in ("ok", "unfaithful") and trial["fidelity"]["psnr_db"] > 60


def test_llama_auto_needs_no_example_inputs(setup):
    pytest.importorskip("transformers")
    from fastpipes.pipelines.llama import build_llama

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
