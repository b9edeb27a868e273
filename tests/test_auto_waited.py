"""recipe="auto" on a SAM predictor times its click too (issue 24): a candidate that makes the
click slower than FP32's is never chosen, whatever it does for the encoder. The measurement is
injected (no timing in unit tests); the recipes and the fidelity judgement are real."""
import json

import pytest
import torch

from fastpipes import auto
from fastpipes.auto_search import Decision, Trial, TrialStatus, summary
from fastpipes.sam.pipeline import SamAdapter, build_sam
from fastpipes.sam.predictor import SamPredictor

CAST = {"family": "sam", "precision": {"mode": "cast", "dtype": "bfloat16"}}


@pytest.fixture
def setup(tmp_path, monkeypatch):
    import yaml

    recipes = tmp_path / "recipes"
    recipes.mkdir()
    monkeypatch.setenv("FASTPIPES_RECIPE_PATH", str(recipes))
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(tmp_path / "cache"))
    both = {**CAST, "precision": {**CAST["precision"], "components": ["image_encoder",
                                                                      "mask_decoder"]}}
    encoder = {**CAST, "precision": {**CAST["precision"], "components": ["image_encoder"]}}
    (recipes / "cast_both.yaml").write_text(yaml.safe_dump(both))
    (recipes / "cast_encoder.yaml").write_text(yaml.safe_dump(encoder))
    return tmp_path


class FakeMeasure:
    """A BF16 encoder halves the encoder call; a BF16 decoder doubles a click (as BF16 small
    GEMMs do at tiny shapes on CPUs, docs/sam.md). Tells the calls apart by their output:
    the encoder returns embeddings, a click three low-res masks."""

    def __init__(self, sam):
        self.sam, self.timed = sam, []

    def __call__(self, call):
        out = call()
        click = out.shape[1] == 3
        part = self.sam.mask_decoder if click else self.sam.image_encoder
        bf16 = next(part.parameters()).dtype == torch.bfloat16
        self.timed.append("click" if click else "encoder")
        return ((2.0 if bf16 else 1.0) if click else (0.5 if bf16 else 1.0)), out


def _run(pipe, sam, candidates):
    fake = FakeMeasure(sam)
    report = auto.accelerate_auto(pipe, ["auto.builtin=false", f"auto.candidates=[{candidates}]",
                                         "auto.ablate=false"], measure=fake, say=lambda _: None)
    return report, {t["recipe"]: t for t in report.extra["auto"]["trials"]}, fake


def test_a_predictor_never_gets_a_recipe_that_slows_its_click(setup):
    sam = build_sam("tiny")
    report, trials, fake = _run(SamPredictor(sam), sam, "cast_both,cast_encoder")
    assert fake.timed == ["encoder", "click"] * 3  # FP32, then each candidate, both calls
    assert trials["cast_both"]["status"] == "slower"
    assert trials["cast_both"]["speedup"] == pytest.approx(2.0)  # its encoder was faster
    assert trials["cast_both"]["waits"] == {"click": pytest.approx(0.5)}
    assert "click 0.50x FP32" in trials["cast_both"]["reason"]
    assert trials["cast_both"]["precision_class"] == "bf16"  # timed and judged, not skipped
    assert trials["cast_encoder"]["status"] == "ok"
    assert trials["cast_encoder"]["waits"] == {"click": pytest.approx(1.0)}
    assert report.extra["auto"]["winner"] == "cast_encoder"
    assert next(sam.mask_decoder.parameters()).dtype == torch.float32  # the loser was undone
    assert next(sam.image_encoder.parameters()).dtype == torch.bfloat16
    assert report.extra["auto"]["inputs"].endswith("; then click")


def test_a_predictor_with_only_click_slowing_candidates_stays_fp32(setup):
    sam = build_sam("tiny")
    report, trials, _ = _run(SamPredictor(sam), sam, "cast_both")
    assert report.extra["auto"]["winner"] is None
    assert all(p.dtype == torch.float32 for p in sam.parameters())
    # a slower trial was tried: the "no winner" decision is a verdict, stored for reuse
    saved = list((setup / "cache" / "auto").glob("*.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["trials"][0]["status"] == "slower"
    again = auto.accelerate_auto(SamPredictor(sam), ["auto.builtin=false",
                                                     "auto.candidates=[cast_both]",
                                                     "auto.ablate=false"],
                                 measure=FakeMeasure(sam), say=lambda _: None)
    assert again.extra["auto"]["cached"] is True


def test_a_bare_sam_model_is_timed_on_its_encoder_only(setup):
    sam = build_sam("tiny")
    report, trials, fake = _run(sam, sam, "cast_both")
    assert fake.timed == ["encoder", "encoder"]
    assert trials["cast_both"]["status"] == "ok" and trials["cast_both"]["waits"] == {}


def test_the_click_a_predictor_waits_on_is_three_masks_from_a_set_embedding():
    sam = build_sam("tiny")
    adapter = SamAdapter(SamPredictor(sam))
    waited = adapter.waited_calls(adapter.example_inputs())
    low = waited["click"]()
    side = 4 * sam.prompt_encoder.image_embedding_size[0]
    assert set(waited) == {"click"} and tuple(low.shape) == (1, 3, side, side)
    assert torch.equal(low, waited["click"]())  # a fixed embedding: the same work each time


def test_the_summary_names_a_slower_candidate_as_tried():
    d = Decision("k", None, 1.0, [Trial("a", TrialStatus.slower, "bf16", 0.5, 2.0,
                                        reason="makes a call users wait on slower: click 0.5x")])
    assert d.storable and "a" in summary(d)[0] and len(summary(d)) == 1
