"""openvino pass, Llama: the decoder converted into one stateful OpenVINO model gives FP32
eager's greedy tokens at f32, resets its KV cache per call, converts once (then reads the
cache), refuses what it does not do, and leaves the model as it was when it fails. Tiny
model: a conversion takes a few seconds. Skipped with the reason where OpenVINO does not
import."""
from __future__ import annotations

import pytest
import torch

import fastpipes
import fastpipes.passes.openvino as ov_pass
import fastpipes.passes.openvino_llama as llama_ov
from fastpipes.bench.workloads import get_workload
from fastpipes.bench.workloads.base import WorkloadSpec
from fastpipes.errors import InputError, PassError, PreflightError
from fastpipes.llama.pipeline import build_llama, decode_weight_bytes
from fastpipes.openvino_probe import import_nncf, import_openvino

OV, WHY = import_openvino()
pytestmark = pytest.mark.skipif(OV is None, reason=f"OpenVINO does not import: {WHY}")
F32 = {"family": "llama", "openvino": {"components": ["model"], "precision": "f32",
                                        "cache": False}}
STEPS = 24


def _prompt(batch=2, length=12, seed=1):
    return torch.randint(3, 400, (batch, length), generator=torch.Generator().manual_seed(seed))


def _greedy(model, ids, n=STEPS, **kw):
    return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                          min_new_tokens=n, do_sample=False, pad_token_id=2, **kw)


@pytest.fixture(scope="module")
def pair():
    """(FP32 eager, the same weights converted at f32)."""
    ref, model = build_llama("tiny"), build_llama("tiny")
    report = fastpipes.accelerate(model, F32)
    assert report.applied == ["openvino"] and report.precision_class == "exact"
    return ref, model


def test_f32_greedy_tokens_and_logits_equal_fp32_eager(pair):
    # f32 hint and f32 KV cache: only the order of sums differs from eager, so every
    # greedy token is expected equal; logits within 1e-4 (measured: 5e-7)
    ref, model = pair
    ids = _prompt()
    want, got = _greedy(ref, ids), _greedy(model, ids)
    assert got.shape == (2, 12 + STEPS) and torch.equal(got, want)
    with torch.no_grad():
        torch.testing.assert_close(model(want, use_cache=False).logits,
                                   ref(want, use_cache=False).logits, rtol=0, atol=1e-4)


def test_the_kv_cache_is_reset_for_every_generate(pair):
    ref, model = pair
    a, b = _prompt(1, 9, seed=2), _prompt(1, 5, seed=3)
    first = _greedy(model, a)
    _greedy(model, b)  # a cache left from this call would shift the next one's positions
    assert torch.equal(_greedy(model, a), first)
    assert torch.equal(_greedy(model, b), _greedy(ref, b))


def test_streamer_and_eos_follow_transformers(pair):
    ref, model = pair
    calls = []

    class Streamer:
        def put(self, value):
            calls.append(tuple(value.shape))

        def end(self):
            calls.append("end")

    ids = _prompt(1, 6)
    _greedy(model, ids, n=5, streamer=Streamer())
    assert calls == [(1, 6)] + [(1,)] * 5 + ["end"]  # the prompt, each token, the end
    eos = int(_greedy(ref, ids, n=3)[0, -1])  # stops there when eos may come early
    kw = dict(attention_mask=torch.ones_like(ids), max_new_tokens=8, do_sample=False,
              pad_token_id=2, eos_token_id=eos)
    want = ref.generate(ids, **kw)
    assert want.shape[1] < 6 + 8 and torch.equal(model.generate(ids, **kw), want)


@pytest.mark.parametrize("call,message", [
    (lambda m, ids: m.generate(ids, do_sample=True, temperature=0.8), "decodes greedily"),
    (lambda m, ids: m.generate(ids, num_beams=4), "decodes greedily"),
    (lambda m, ids: m.generate(ids, num_return_sequences=2), "not num_return_sequences"),
    (lambda m, ids: m.generate(ids, attention_mask=torch.tensor([[0] + [1] * 11] * 2)),
     "unpadded prompts"),
    (lambda m, ids: m(ids, past_key_values=object()), "without a cache"),
])
def test_what_it_does_not_do_is_refused_saying_what_is_allowed(pair, call, message):
    with pytest.raises(InputError, match=message):
        call(pair[1], _prompt())


def test_a_conversion_is_cached_and_read_back(tmp_path, monkeypatch):
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(tmp_path))
    recipe = {**F32, "openvino": {**F32["openvino"], "cache": True}}
    exports = []
    real = llama_ov.export
    monkeypatch.setattr(llama_ov, "export", lambda *a: exports.append(1) or real(*a))
    first, second = build_llama("tiny"), build_llama("tiny")
    r1, r2 = fastpipes.accelerate(first, recipe), fastpipes.accelerate(second, recipe)
    assert exports == [1]
    assert "converted in" in r1.passes[0].changes[0]
    assert "read from the cache" in r2.passes[0].changes[0]
    ids = _prompt()
    assert torch.equal(_greedy(second, ids), _greedy(first, ids))
    entry = sorted(p.suffix for p in (tmp_path / "openvino").iterdir() if p.name[0] != ".")
    assert entry == [".bin", ".json", ".xml"]


def test_a_failure_leaves_the_model_as_it_was(monkeypatch):
    model, ref = build_llama("tiny"), build_llama("tiny")

    def fail(*a, **k):
        raise RuntimeError("compile failed on purpose")

    monkeypatch.setattr(ov_pass, "compile_model", fail)
    with pytest.raises(PassError, match="compile failed on purpose"):
        fastpipes.accelerate(model, F32)
    assert not {"generate", "forward", "fastpipes_decode_weight_bytes"} & set(model.__dict__)
    ids = _prompt()
    assert torch.equal(_greedy(model, ids), _greedy(ref, ids))


def test_other_passes_on_the_converted_model_are_refused():
    with pytest.raises(PreflightError, match="quantize would change model"):
        fastpipes.accelerate(build_llama("tiny"), {**F32, "quantize": {"dtype": "int8"}})


@pytest.mark.skipif(import_nncf()[0] is None, reason="nncf does not import")
def test_int8_recipe_in_the_benchmark_reports_its_own_weight_bytes_and_timings():
    wl = get_workload(WorkloadSpec("llama", size="tiny", options={"new_tokens": 4,
                                                                 "prompt_len": 8}))
    pipe = wl.build()
    fp32_bytes = decode_weight_bytes(pipe)
    report = fastpipes.accelerate(pipe, {**F32, "openvino": {"components": ["model"],
                                                             "weights": "int8"}})
    assert report.precision_class == "int8"
    extra = wl.extra_metrics(pipe, wl.inputs(pipe))
    assert extra["ttft_s"] > 0 and extra["decode_tokens_per_s"] > 0
    assert extra["weight_bytes_per_token"] < fp32_bytes / 3  # int8 weights, f32 norms


def _judged(path, batches, recipe):
    """(top-1 agreement, perplexity change %, the bars of the recipe's class) of `recipe`
    against the unmodified FP32 model, teacher-forced on held-out windows `batches`."""
    from fastpipes.hardware import detect, unmet_requirements
    from fastpipes.llama.pipeline import LLAMA_BARS
    from fastpipes.llama.reference import perplexity, teacher_forced, top1_agreement
    from fastpipes.recipe.load import load_recipe

    rec = load_recipe(recipe)
    unmet = unmet_requirements(rec.requires, detect(), "cpu")
    if unmet:
        pytest.skip(f"{recipe} is refused on this machine: {unmet}")
    fp32 = teacher_forced(build_llama(str(path)), batches)
    model = build_llama(str(path))
    report = fastpipes.accelerate(model, recipe, overrides=["openvino.cache=false"])
    out = teacher_forced(model, batches)
    change = 100 * (perplexity(out, batches) / perplexity(fp32, batches) - 1)
    return top1_agreement(fp32, out), change, LLAMA_BARS[report.precision_class]


@pytest.mark.skipif(import_nncf()[0] is None, reason="nncf does not import")
@pytest.mark.parametrize("recipe", ["llama_openvino_int8", "llama_openvino_int4"])
def test_int_recipes_keep_a_trained_model_within_their_class_bars(trained_small, recipe):
    """Random weights give flat logits: on a model trained here (conftest.trained_small;
    its down_proj of 176 inputs is no multiple of int4's group of 128: nncf's default
    refused the whole conversion) each recipe as shipped meets the top-1 and perplexity
    bars of its class, the ones the native llama_woq_int8/int4 are judged by.
    Measured (avx512-bf16): int8 0.9951 / -0.03%, int4 0.9844 / +0.44%."""
    top1, change, (top1_bar, ppl_bar) = _judged(*trained_small, recipe)
    assert top1_bar.holds(top1) and ppl_bar.holds(abs(change)), (recipe, top1, change)


@pytest.mark.slow
@pytest.mark.skipif(import_nncf()[0] is None, reason="nncf does not import")
@pytest.mark.parametrize("recipe", ["llama_openvino_int8", "llama_openvino_int4"])
def test_int_recipes_keep_trained_tiny_within_their_class_bars(recipe):
    """The same on the reference model trained-tiny (trained on first use: ~12 min on 2
    cores), 64 held-out windows of 256 bytes: where the BF16 hint put llama_openvino_int8
    at top-1 0.967, under its bar of 0.98 (now f32: 0.994). Measured (avx512-bf16): int8
    0.9944 / -0.01%, int4 0.9639 / +0.16%; llama_woq_int8 0.9916, llama_woq_int4 0.9605."""
    from fastpipes.llama.reference import heldout_batches, heldout_tokens, reference_dir

    path = reference_dir("trained-tiny", progress=False)
    top1, change, (top1_bar, ppl_bar) = _judged(path, heldout_batches(heldout_tokens(path),
                                                                      256, 64), recipe)
    assert top1_bar.holds(top1) and ppl_bar.holds(abs(change)), (recipe, top1, change)
