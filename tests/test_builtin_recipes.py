"""Every shipped recipe validates, round-trips through `show`, and states what it needs."""
import pytest
from omegaconf import OmegaConf

from fastpipes.recipe import available, builtin_dir, load_recipe

BUILTIN = sorted(p.stem for p in builtin_dir().glob("*.yaml"))


def test_builtin_recipes_are_found():
    assert BUILTIN, f"no built-in recipes in {builtin_dir()}"


@pytest.mark.parametrize("name", BUILTIN)
def test_builtin_recipe_validates_and_round_trips(name, tmp_path):
    r = load_recipe(name)
    assert r.name == name, "a built-in recipe's name must match its file name"
    assert r.description, "every built-in recipe needs a description"
    text = (builtin_dir() / f"{name}.yaml").read_text()
    assert text.startswith("#") and "fastpipes" in text.splitlines()[0], \
        "each built-in YAML opens with the command that uses it"
    # resolved YAML written back out loads to the same recipe
    out = tmp_path / f"{name}.yaml"
    out.write_text(r.to_yaml())
    again = load_recipe(str(out))
    assert again.sections == r.sections and again.requires == r.requires
    assert again.family == r.family
    assert OmegaConf.create(r.raw) == OmegaConf.create(again.raw)


def test_available_includes_builtins():
    assert set(BUILTIN) <= set(available())


@pytest.mark.parametrize("name", BUILTIN)
def test_low_precision_matmul_recipes_declare_what_they_need(name):
    """A recipe doing BF16/FP16 matmul must say so, so CPUs without it never pick it silently."""
    r = load_recipe(name)
    prec = r.section("precision")
    if prec is None:
        return
    dtype = prec.dtype.value
    if dtype == "bfloat16":
        assert r.requires.native_bf16 or r.requires.device.value == "cuda"
    if dtype == "float16":
        assert r.requires.native_fp16 or r.requires.device.value == "cuda"


def _uses_ipex(r) -> bool:
    backend = lambda sec: getattr(getattr(r.section(sec), "backend", None), "value", None)
    return r.section("ipex") is not None or "ipex" in (backend("attention"), backend("compile"))


@pytest.mark.parametrize("name", BUILTIN)
def test_ipex_recipes_declare_that_they_need_it(name):
    """IPEX imports only with torch 2.8: a recipe using it must say so (requires.ipex)."""
    r = load_recipe(name)
    assert _uses_ipex(r) == r.requires.ipex
    ipex = r.section("ipex")
    if ipex is not None and ipex.dtype.value == "bfloat16":
        assert r.requires.native_bf16


def test_auto_never_offers_ipex_recipes_where_ipex_does_not_import(monkeypatch):
    import fastpipes.hardware
    from fastpipes.auto import candidate_recipes
    from fastpipes.recipe import AutoConfig

    monkeypatch.setattr(fastpipes.hardware, "ipex_unavailable", lambda: "not installed")
    offered = [n for f in ("sam", "sdxl", "llama", "any")
               for n in candidate_recipes(f, fastpipes.hardware.detect(), AutoConfig())]
    assert offered and not [n for n in offered if _uses_ipex(load_recipe(n))]
    monkeypatch.setattr(fastpipes.hardware, "ipex_unavailable", lambda: "")
    assert "llama_ipex" in candidate_recipes("llama", fastpipes.hardware.detect(), AutoConfig())


def test_auto_never_offers_bf16_matmul_recipes_without_native_bf16():
    from fastpipes.auto import candidate_recipes
    from fastpipes.recipe import AutoConfig
    from fastpipes.hardware import detect
    from fastpipes.recipe import AutoConfig

    real = detect()
    avx2 = type(real)(**{**real.to_dict(), "bf16_native": False, "fp16_native": False,
                         "packages": []})
    for family in ("sam", "sdxl", "llama", "generic"):
        names = candidate_recipes(family, avx2, AutoConfig())
        assert names, family
        for name in names:
            assert load_recipe(name).precision_class.value not in ("bf16", "fp16"), (family, name)


# derived from the passes, never labelled: pinned here so a change of derivation shows
CLASSES = {"generic_fp32_fast": "exact", "generic_bf16": "bf16", "sam_fp32_fast": "exact",
           "sam_bf16": "bf16", "sam_bf16_click": "bf16", "sam_int8_dynamic": "int8",
           "sam_fp32_click": "exact", "sam_bf16_click_cast": "bf16", "sam_bf16_aot": "bf16",
           "sam_bf16_click_aot": "bf16", "sam_bf16_native": "bf16",
           "sdxl_fp32_fast": "exact",
           "sdxl_bf16": "bf16", "sdxl_int8_dynamic": "int8", "llama_bf16": "bf16",
           "llama_woq_int8": "int8", "llama_int8_dynamic": "int8", "llama_woq_int4": "int4",
           "sam_cuda_bf16": "bf16", "sdxl_cuda_bf16": "bf16", "llama_cuda_bf16": "bf16",
           "llama_cuda_woq_int8": "int8", "llama_cuda_woq_int4": "int4",
           "llama_openvino_int4": "int4", "llama_openvino_int8": "int8",
           "llama_openvino_f32": "exact", "llama_bf16_packed": "bf16",
           "sdxl_openvino_int8": "int8"}


def test_every_builtin_recipe_has_its_derived_precision_class():
    got = {name: load_recipe(name).precision_class.value for name in CLASSES}
    assert got == CLASSES
    assert set(available()) >= set(CLASSES)


def test_auto_max_class_excludes_looser_recipes():
    from fastpipes.auto import candidate_recipes
    from fastpipes.recipe import AutoConfig
    from fastpipes.hardware import detect
    from fastpipes.recipe import AutoConfig, PrecisionClass

    exact_only = candidate_recipes("llama", detect(), AutoConfig(max_class=PrecisionClass.exact))
    assert all(load_recipe(n).precision_class is PrecisionClass.exact for n in exact_only)
    assert "llama_woq_int4" in candidate_recipes("llama", detect(), AutoConfig())
