"""Loading a model directory straight into weight-only quantized layers
(llama/quantized_load.py): the FP32 weights never all exist at once, the result equals
from_pretrained + the quantize pass, the quantized layers are cached and reloaded, and
accelerate() records them as quantized at load."""
import gc
import shutil

import pytest
import torch
from safetensors.torch import load_file, save_file

import fastpipes
from fastpipes.errors import InputError
from fastpipes.llama.pipeline import build_llama, load_llama
from fastpipes.llama.quantized_load import ATTR, TensorIndex, load_quantized_causal_lm

IDS = torch.tensor([[5, 9, 33, 7, 100, 3, 64, 8]])


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    d = tmp_path_factory.mktemp("tiny-llama")
    build_llama("tiny", seed=3).save_pretrained(str(d))
    return d


def _linear_names(model):
    return {f"{n}.weight" for n, m in model.named_modules() if type(m) is torch.nn.Linear}


def _real(o) -> bool:
    """A tensor with storage: not the fake tensors earlier compiles in this process left."""
    try:
        return isinstance(o, torch.Tensor) and (o.data_ptr() or True)
    except (RuntimeError, ReferenceError, FileNotFoundError):
        return False


def _alive(records, current):
    """How many of the FP32 weights read before (data address, shape) some live tensor other
    than `current` still holds."""
    wanted = {r for r in records if r[0] != current.data_ptr()}  # a freed block, reused
    held = {(o.data_ptr(), tuple(o.shape)) for o in gc.get_objects()
            if _real(o) and o is not current and o.dtype == torch.float32}
    return len(wanted & held)


def test_fp32_linear_weights_never_all_exist_at_once(saved, tmp_path):
    """Every Linear weight read from the checkpoint is gone before the next one is read."""
    index = TensorIndex(saved)
    names = _linear_names(build_llama(str(saved)))
    records, most = [], 0

    def read(name):
        nonlocal most
        t = index.read(name)
        if name in names:  # a Linear weight (the tied lm_head reads the embedding: not here)
            most = max(most, _alive(records, t))
            records.append((t.data_ptr(), tuple(t.shape)))
        return t

    model = load_quantized_causal_lm(saved, {"dtype": "int8"}, cache_dir=tmp_path, read=read)
    assert len(records) == len(names) - 1 > 10  # every one read (lm_head: the tied embedding)
    assert most == 0, f"{most} earlier FP32 Linear weights were still alive at a read"
    assert not [n for n, m in model.named_modules() if type(m) is torch.nn.Linear]


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_equals_from_pretrained_then_the_quantize_pass(saved, tmp_path, dtype):
    section = {"dtype": dtype, "group_size": 32}
    ref = build_llama(str(saved))
    fastpipes.accelerate(ref, {"quantize": section})
    got = load_quantized_causal_lm(saved, section, cache_dir=tmp_path)
    with torch.no_grad():
        a, b = ref(IDS).logits, got(IDS).logits
    assert torch.allclose(a, b, atol=1e-5, rtol=1e-5)
    assert torch.equal(ref.generate(IDS, max_new_tokens=4, do_sample=False),
                       got.generate(IDS, max_new_tokens=4, do_sample=False))


def test_quantized_layers_are_cached_and_reloaded(saved, tmp_path):
    first = load_quantized_causal_lm(saved, {"dtype": "int4", "group_size": 32}, cache_dir=tmp_path)
    assert "saved to" in getattr(first, ATTR)["how"]
    again = load_quantized_causal_lm(saved, {"dtype": "int4", "group_size": 32}, cache_dir=tmp_path)
    assert getattr(again, ATTR)["how"].startswith("loaded from")
    with torch.no_grad():
        assert torch.equal(first(IDS).logits, again(IDS).logits)
    # a damaged cache file is not used: quantized again (and rewritten), same model
    cache = next(tmp_path.glob("load-int4-*.safetensors"))
    tensors = load_file(str(cache))
    tensors = {k: torch.zeros_like(v) if k.endswith("scales_and_zeros") else v
               for k, v in tensors.items()}
    save_file(tensors, str(cache), metadata={"format": "x"})
    third = load_quantized_causal_lm(saved, {"dtype": "int4", "group_size": 32}, cache_dir=tmp_path)
    assert "not used" in getattr(third, ATTR)["how"]
    with torch.no_grad():
        assert torch.equal(first(IDS).logits, third(IDS).logits)


def test_accelerate_records_layers_quantized_at_load(saved, tmp_path):
    model = load_llama(saved, {"name": "x", "family": "llama",
                               "quantize": {"dtype": "int8", "cache_dir": str(tmp_path)}})
    report = fastpipes.accelerate(model, {"quantize": {"dtype": "int8"}})
    assert report.applied == ["quantize"]
    assert report.extra["quantize"]["model"]["at_load"] is True
    assert "while loading" in str(report.to_dict())
    assert "prompts: dense" in str(report.to_dict())  # layers built at load plan prompts too
    model = load_llama(saved, {"name": "x", "family": "llama",
                               "quantize": {"dtype": "int8", "cache_dir": str(tmp_path)}})
    fastpipes.accelerate(model, {"quantize": {"dtype": "int8", "prompt_path": "kernel"}})
    assert {m.prompt_rows for m in model.modules() if hasattr(m, "prompt_rows")} == {0}
    # another section than the model was loaded with: a warning, the layers as loaded
    model = load_llama(saved, {"name": "x", "family": "llama",
                               "quantize": {"dtype": "int8", "cache_dir": str(tmp_path)}})
    report = fastpipes.accelerate(model, {"quantize": {"dtype": "int4"}})
    assert "quantize" not in report.applied
    assert any("quantized while loading as int8" in w for w in report.warnings)


def test_missing_weight_is_an_error_naming_it(saved, tmp_path):
    d = tmp_path / "m"
    shutil.copytree(saved, d)
    f = d / "model.safetensors"
    tensors = load_file(str(f))
    del tensors["model.norm.weight"]
    save_file(tensors, str(f), metadata={"format": "pt"})
    with pytest.raises(InputError, match="model.norm.weight"):
        load_quantized_causal_lm(d, {"dtype": "int8"}, cache_dir=tmp_path)


def _quantized(model) -> dict:
    return {n: m for n, m in model.named_modules() if hasattr(m, "scales_and_zeros")
            or hasattr(m, "scales")}


@pytest.mark.parametrize("dtype", ["int4", "int8"])
def test_a_warm_load_packs_nothing_and_equals_the_cold_one(saved, tmp_path, monkeypatch, dtype):
    """The cache holds the layers as the kernels run them: a warm load reads them into
    place (no call of the int4 packing op) and every layer computes bit for bit the same."""
    section = {"dtype": dtype, "group_size": 32}
    cold = load_quantized_causal_lm(saved, section, cache_dir=tmp_path)
    assert "saved to" in getattr(cold, ATTR)["how"]
    packs = []
    real = torch.ops.aten._convert_weight_to_int4pack_for_cpu
    monkeypatch.setattr(torch.ops.aten, "_convert_weight_to_int4pack_for_cpu",
                        lambda *a: packs.append(1) or real(*a))
    warm = load_quantized_causal_lm(saved, section, cache_dir=tmp_path)
    assert getattr(warm, ATTR)["how"].startswith("loaded from")
    assert packs == []
    a, b = _quantized(cold), _quantized(warm)
    assert sorted(a) == sorted(b) and len(a) > 10
    for name, q in a.items():
        for (bn, buf), (_, other) in zip(q.named_buffers(), b[name].named_buffers()):
            assert torch.equal(buf, other), (name, bn)
        xin = torch.randn(3, q.in_features, generator=torch.Generator().manual_seed(1))
        with torch.no_grad():
            assert torch.equal(q(xin), b[name](xin)), name


def test_a_cache_file_of_another_int4_packing_is_quantized_again(saved, tmp_path):
    """The packed layout depends on torch and the ISA: a file packed otherwise is refused,
    saying why, and the layers are quantized again."""
    from safetensors import safe_open

    section = {"dtype": "int4", "group_size": 32}
    first = load_quantized_causal_lm(saved, section, cache_dir=tmp_path)
    cache = next(tmp_path.glob("load-int4-*.safetensors"))
    with safe_open(str(cache), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k).clone() for k in f.keys()}
    save_file(tensors, str(cache), metadata={**meta, "int4_packing": "torch 0.0, packing x"})
    again = load_quantized_causal_lm(saved, section, cache_dir=tmp_path)
    how = getattr(again, ATTR)["how"]
    assert "not used" in how and "packing x" in how and "quantize again" in how, how
    with torch.no_grad():
        assert torch.equal(first(IDS).logits, again(IDS).logits)
    assert getattr(load_quantized_causal_lm(saved, section, cache_dir=tmp_path),
                   ATTR)["how"].startswith("loaded from")  # rewritten with this packing


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_a_bf16_sharded_directory_with_an_untied_lm_head(tmp_path, monkeypatch, dtype):
    """What the llama-2-7b shape's directory is (BF16 files, several shards, lm_head its own
    tensor): the same model as from_pretrained in FP32 + the quantize pass; the embedding
    and norms are FP32, lm_head is quantized from its own weight."""
    from fastpipes.llama import pipeline
    from fastpipes.llama.random_dir import save_random_llama

    monkeypatch.setitem(pipeline.LLAMA_SHAPES, "tiny-untied",
                        {**pipeline.LLAMA_SHAPES["tiny"], "tie_word_embeddings": False})
    d = tmp_path / "m"
    save_random_llama("tiny-untied", d, torch.bfloat16, seed=5, shard_bytes=200_000)
    assert len(list(d.glob("*.safetensors"))) > 2
    section = {"dtype": dtype, "group_size": 32}
    ref = build_llama(str(d))  # from_pretrained, FP32
    fastpipes.accelerate(ref, {"quantize": section})
    got = load_quantized_causal_lm(d, section, cache_dir=tmp_path)
    assert got.model.embed_tokens.weight.dtype == torch.float32
    assert got.model.norm.weight.dtype == torch.float32
    assert hasattr(got.lm_head, "scales_and_zeros" if dtype == "int4" else "scales")
    assert "lm_head" in getattr(got, ATTR)["layers"]
    with torch.no_grad():
        assert torch.allclose(ref(IDS).logits, got(IDS).logits, atol=1e-5, rtol=1e-5)
    warm = load_quantized_causal_lm(d, section, cache_dir=tmp_path)
    assert getattr(warm, ATTR)["how"].startswith("loaded from")
    with torch.no_grad():
        assert torch.equal(got(IDS).logits, warm(IDS).logits)
