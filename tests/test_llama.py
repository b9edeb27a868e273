"""Llama on a tiny seeded model: builders, adapter, passes through accelerate(), workload."""
import pytest
import torch

import fastpipes
from fastpipes.bench.workloads import WorkloadSpec
from fastpipes.errors import BenchmarkError, InputError
from fastpipes.kernels.woq import Int4WeightOnlyLinear, Int8DynamicLinear, Int8WeightOnlyLinear
from fastpipes.pipelines.base import find_adapter

transformers = pytest.importorskip("transformers")
from fastpipes.llama.bench import LlamaWorkload  # noqa: E402
from fastpipes.llama.pipeline import (LLAMA_SHAPES, LlamaAdapter, build_llama,  # noqa: E402
                                       compare_logits, legacy_rope_kwargs,
                                       teacher_forced_logits)

PROMPT = torch.tensor([[5, 17, 99, 3, 250, 7, 42, 11]])


def _gen(model, n=8):
    with torch.no_grad():
        return model.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=n,
                              min_new_tokens=n, do_sample=False, pad_token_id=0)


def test_build_is_seeded_and_shaped():
    a, b = build_llama("tiny", seed=0), build_llama("tiny", seed=0)
    assert all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))
    assert a.lm_head.weight is a.model.embed_tokens.weight  # tied, like Llama 3.2 1B
    assert torch.isfinite(a.model.rotary_emb.inv_freq).all()
    with pytest.raises(InputError, match="llama-3.2-1b"):
        build_llama("llama-9b")


def test_named_shapes_get_their_rope_on_every_transformers_version():
    # transformers 4.x ignores `rope_parameters` and would build the default RoPE silently
    assert build_llama("tiny").model.rotary_emb.rope_type == "llama3"
    legacy = legacy_rope_kwargs(LLAMA_SHAPES["tiny"])
    assert "rope_parameters" not in legacy and legacy["rope_theta"] == 500000.0
    assert legacy["rope_scaling"] == {"rope_type": "llama3", "factor": 32.0, "low_freq_factor": 1.0,
                                      "high_freq_factor": 4.0,
                                      "original_max_position_embeddings": 8192}
    assert legacy_rope_kwargs(LLAMA_SHAPES["llama-2-7b"])["rope_scaling"] is None
    assert "rope_theta" in LLAMA_SHAPES["tiny"]["rope_parameters"]  # the table is not mutated


def test_local_directory_loads_in_the_requested_dtype(tmp_path):
    model = build_llama("tiny")
    model.save_pretrained(tmp_path)
    fp32, bf16 = build_llama(str(tmp_path)), build_llama(str(tmp_path), dtype=torch.bfloat16)
    assert {p.dtype for p in bf16.parameters()} == {torch.bfloat16}
    ref = model.state_dict()
    assert all(torch.equal(t, ref[k]) for k, t in fp32.state_dict().items())
    assert fp32.model.rotary_emb.rope_type == "llama3"


def test_bf16_build_is_the_same_shape_without_an_fp32_copy():
    a = build_llama("tiny", seed=0, dtype=torch.bfloat16)
    assert {p.dtype for p in a.parameters()} == {torch.bfloat16}
    assert a.lm_head.weight is a.model.embed_tokens.weight
    ref = build_llama("tiny", seed=0)
    assert [p.shape for p in a.parameters()] == [p.shape for p in ref.parameters()]
    # random weights of the same scale (std 0.02), not a copy of uninitialised memory
    w = a.model.layers[0].mlp.up_proj.weight.float()
    assert 0.015 < w.std().item() < 0.025 and torch.isfinite(w).all()
    with pytest.raises(BenchmarkError, match="float32 or bfloat16"):
        LlamaWorkload(WorkloadSpec("llama", size="tiny", options={"dtype": "float16"}))


def test_adapter_and_report():
    model = build_llama("tiny")
    adapter = find_adapter(model)
    assert adapter.name == "llama" and list(adapter.components()) == ["model"]
    assert model.config in adapter.state_objects() and model.generation_config in adapter.state_objects()


@pytest.mark.parametrize("dtype", ["int8", "int4", "int8_dynamic"])
def test_woq_recipe_keeps_generate_and_fidelity(dtype):
    ref_model = build_llama("tiny")
    ref_seq = _gen(ref_model)
    model = build_llama("tiny")
    quantize = ({"mode": "dynamic"} if dtype == "int8_dynamic" else
                {"dtype": dtype, "group_size": 32})
    report = fastpipes.accelerate(model, {
        "family": "llama", "attention": {"backend": "sdpa"},
        "quantize": quantize, "kv_cache": {"implementation": "static"}})
    assert report.applied == ["attention", "quantize", "kv_cache"]
    assert model.config._attn_implementation == "sdpa"
    assert model.generation_config.cache_implementation == "static"
    kind = {"int8": Int8WeightOnlyLinear, "int4": Int4WeightOnlyLinear,
            "int8_dynamic": Int8DynamicLinear}[dtype]
    assert isinstance(model.lm_head, kind)
    assert isinstance(model.model.layers[0].mlp.down_proj, kind)
    seq = _gen(model)
    assert seq.shape == ref_seq.shape and torch.equal(seq[:, :8], PROMPT)
    fid = compare_logits(teacher_forced_logits(ref_model, ref_seq),
                         teacher_forced_logits(model, ref_seq), PROMPT.shape[1])
    # int8 weights alone keep the tiny model's argmax; int4, and int8 activations rounded
    # per token, flip some of its small-margin positions (random weights)
    assert fid["top1_agreement"] >= (0.95 if dtype == "int8" else 0.75), fid


def test_attention_recipes_change_only_the_attention_kernel():
    """llama_attn_eager / llama_attn_sdpa: the two native attention options, FP32, nothing else
    changed; the long prompt (40 tokens) gives SDPA's CPU flash kernel more than one block."""
    prompt = torch.randint(3, 500, (1, 40), generator=torch.Generator().manual_seed(3))
    ref = teacher_forced_logits(build_llama("tiny"), prompt)
    for name, impl in (("llama_attn_sdpa", "sdpa"), ("llama_attn_eager", "eager")):
        model = build_llama("tiny")
        model.config._attn_implementation = "sdpa"  # as from_pretrained loads a checkpoint
        report = fastpipes.accelerate(model, name)
        assert report.applied == ["attention"] and model.config._attn_implementation == impl
        assert {p.dtype for p in model.parameters()} == {torch.float32}
        torch.testing.assert_close(teacher_forced_logits(model, prompt), ref, rtol=0, atol=1e-5)


def test_failed_pass_restores_config_and_modules():
    model = build_llama("tiny")
    ref = _gen(model)
    with pytest.raises(fastpipes.FastpipesError):
        fastpipes.accelerate(model, {"attention": {}, "quantize": {},
                                     "kv_cache": {"components": ["missing"]}})
    assert model.config._attn_implementation == "eager"
    assert model.generation_config.cache_implementation is None
    assert type(model.lm_head) is torch.nn.Linear
    assert torch.equal(_gen(model), ref)


def test_workload_runs_and_compares():
    wl = LlamaWorkload(WorkloadSpec("llama", size="tiny", options={"prompt_len": 8, "new_tokens": 6}))
    ref_pipe = wl.build()
    inputs = wl.inputs(ref_pipe)
    ref = wl.run(ref_pipe, inputs)
    assert ref.sequences.shape == (1, 14) and wl.items(inputs) == 6
    assert ref.ttft_s > 0 and ref.decode_tokens_per_s > 0
    pipe = wl.build()
    report = fastpipes.accelerate(pipe, {"quantize": {"dtype": "int8"}})
    assert report.precision_class == "int8"
    ref_view = wl.view(ref_pipe, inputs, ref)
    view = wl.view(pipe, inputs, wl.run(pipe, inputs), ref_view)
    # teacher-forced on FP32's own sequence
    assert torch.equal(view["logits"], teacher_forced_logits(pipe, ref.sequences))
    fid = wl.compare(pipe, ref_view, view, report.precision_class)
    # random weights: flat logits, so top-1 agreement is measured but not judged
    assert fid.ok is None and "random weights" in fid.note and fid.precision_class == "int8"
    assert 0 <= fid.metrics["top1_agreement"] <= 1
    assert wl.bytes_per_item(pipe) < wl.bytes_per_item(wl.build())


def test_trained_weights_are_judged_by_the_class_bars():
    adapter = LlamaAdapter(build_llama("tiny"))
    inputs = adapter.example_inputs(prompt_len=8, new_tokens=4)
    ref = adapter.fidelity_view(inputs, adapter.call(inputs))
    same = adapter.compare(ref, ref, "int8")
    assert same.ok is True and same.metrics["top1_agreement"] == 1.0
    assert "perplexity" in same.note  # no held-out text here: that bar is not measured
    flipped = dict(ref, logits=-ref["logits"])  # every argmax changes
    assert adapter.compare(ref, flipped, "int4").ok is False


def test_text_generation_pipeline_is_accepted():
    model = build_llama("tiny")
    pipe = transformers.TextGenerationPipeline(model=model, tokenizer=None)
    adapter = find_adapter(pipe)
    assert adapter.name == "llama" and adapter.components()["model"] is model


def test_kv_cache_checks_and_compile_config():
    from fastpipes.errors import RecipeError

    with pytest.raises(RecipeError, match="compile_decode"):
        fastpipes.accelerate(build_llama("tiny"), {"kv_cache": {"implementation": "dynamic",
                                                                "compile_decode": True}})
    model = build_llama("tiny")
    report = fastpipes.accelerate(model, {"kv_cache": {"max_cache_len": 64, "compile_decode": True}})
    gen = model.generation_config
    assert gen.cache_implementation == "static" and gen.max_cache_len == 64
    assert gen.compile_config._compile_all_devices  # compiled on first generate (not run here)
    assert "torch.compile" in " ".join(report.passes[0].changes)


def test_compiled_static_decode_matches_eager_decode():
    """The built-in WOQ recipes compile the decode step: same scores as the eager decode."""
    torch._dynamo.reset()
    eager, compiled = build_llama("tiny"), build_llama("tiny")
    base = {"family": "llama", "quantize": {"dtype": "int8"},
            "kv_cache": {"implementation": "static"}}
    fastpipes.accelerate(eager, base)
    fastpipes.accelerate(compiled, {**base, "kv_cache": {"implementation": "static",
                                                         "compile_decode": True}})

    def scores(model):
        out = model.generate(PROMPT, attention_mask=torch.ones_like(PROMPT), max_new_tokens=6,
                             min_new_tokens=6, do_sample=False, pad_token_id=0,
                             output_scores=True, return_dict_in_generate=True)
        return out.sequences, torch.stack(out.scores)

    from torch._dynamo.utils import counters

    with torch.no_grad():
        seq_e, sc_e = scores(eager)
        graphs = counters["stats"]["unique_graphs"]
        seq_c, sc_c = scores(compiled)
    assert counters["stats"]["unique_graphs"] > graphs  # the decode step really compiled
    torch.testing.assert_close(sc_c, sc_e, atol=2e-2, rtol=2e-2)
    assert torch.equal(seq_c, seq_e)
    torch._dynamo.reset()
