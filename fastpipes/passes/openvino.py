"""openvino: components converted to OpenVINO and called through its CPU runtime, used only
when OpenVINO imports (``pip install 'fastpipes[openvino]'``).

Each named component is traced with ``openvino.convert_model`` on example inputs (the
adapter's own example call; SAM's prompt encoder and mask decoder through the rewrites in
fastpipes.passes.openvino_sam), optionally weight-compressed by nncf (int8 per channel,
int4 group-wise), compiled for the CPU with the precision hint, and its ``forward`` replaced
by one that calls the compiled model with the original signature. The PyTorch module stays
(its config, attributes and weights: what undoes accelerate()), so memory holds both.

Shapes: with ``shapes: static`` (the default) the image encoder, UNet and VAE decoder are
compiled for the example's shapes, and a call with other shapes is refused with an error
saying so; ``shapes: dynamic`` compiles them for any shape (slower per call). SAM's prompt
encoder and mask decoder are always dynamic (the number of prompts varies).

Llama (component ``model``) is converted into one stateful model, its KV cache kept inside
OpenVINO, and its ``generate`` (greedy) and ``forward`` replaced
(fastpipes.passes.openvino_llama).

Converted models are cached in the ``openvino/`` cache part (fastpipes.passes.openvino_cache):
a second accelerate() of the same weights reads them instead of converting. All components
are converted and compiled before any ``forward`` is replaced: a failure leaves the pipeline
as it was.

>>> fastpipes.accelerate(sam, "sam_openvino_bf16")   # doctest: +SKIP
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import torch
import torch.nn as nn

from fastpipes.cache import open_part
from fastpipes.errors import CacheError, FastpipesError
from fastpipes.openvino_probe import import_nncf, import_openvino
from fastpipes.passes import openvino_llama as llama_ov
from fastpipes.passes import openvino_sam as sam_ov
from fastpipes.passes.base import PassContext, register_pass
from fastpipes.passes.openvino_cache import entry_name, load, save
from fastpipes.passes.openvino_convert import (Flat, Runner, compile_model, compress, convert,
                                               decode, encode, flatten, generic_forward)
from fastpipes.recipe.schema import PrecisionClass, Section

# component -> how it is converted; "generic": the component's own call, flattened
KINDS = {"image_encoder": "generic", "unet": "generic", "vae_decoder": "generic",
         "prompt_encoder": "sam_prompt_v1", "mask_decoder": "sam_decoder_v1"}
LLAMA_KINDS = {"model": llama_ov.KIND}  # the decoder, its KV cache as OpenVINO state


def component_kind(family: str, name: str) -> str | None:
    """How component `name` of a `family` pipeline is converted (None: it is not)."""
    return (LLAMA_KINDS if family == "llama" else KINDS).get(name)


def converts_llama(recipe: Any) -> bool:
    """Whether `recipe` (a loaded Recipe) has the openvino pass replace a Llama's
    ``generate`` by the converted model's (greedy only: llama_ov.refusal says what it takes)."""
    section = recipe.section("openvino")
    return section is not None and any(component_kind("llama", name) == llama_ov.KIND
                                       for name in section.components)


class OvPrecision(str, Enum):
    bf16 = "bf16"
    f32 = "f32"


class OvWeights(str, Enum):
    none = "none"
    int8 = "int8"  # nncf INT8_ASYM, per output channel
    int4 = "int4"  # nncf INT4_SYM, group-wise (group_size)


class OvShapes(str, Enum):
    static = "static"
    dynamic = "dynamic"


@dataclass(frozen=True)
class OpenvinoConfig(Section):
    components: list[str] = field(default_factory=list)  # must be named (see check)
    precision: OvPrecision = OvPrecision.bf16  # OpenVINO's INFERENCE_PRECISION_HINT
    weights: OvWeights = OvWeights.none
    group_size: int = 128  # int4 only
    shapes: OvShapes = OvShapes.static
    cache: bool = True  # keep converted models in the openvino/ cache part

    def check(self) -> list[tuple[str, str, str]]:
        out = []
        if not self.components:
            out.append(("components", "name the components to convert",
                        "SAM: image_encoder, prompt_encoder, mask_decoder; SDXL: unet, vae_decoder; "
                        "Llama: model"))
        if self.group_size not in (32, 64, 128, 256):
            out.append(("group_size", f"int4 group_size {self.group_size} is not supported",
                        "32, 64, 128, 256"))
        return out

    def numerics(self) -> PrecisionClass:
        classes = [PrecisionClass.bf16 if self.precision is OvPrecision.bf16
                   else PrecisionClass.exact]
        if self.weights is not OvWeights.none:
            classes.append(PrecisionClass(self.weights.value))
        return PrecisionClass.loosest(classes)

    def preflight(self, target) -> list:
        out = []
        ov, why = import_openvino()
        if ov is None:
            out.append(target.problem("openvino", f"OpenVINO is unavailable: {why}",
                                      "a native recipe, or install fastpipes[openvino]"))
        if self.weights is not OvWeights.none and ov is not None and import_nncf()[0] is None:
            out.append(target.problem("openvino.weights", import_nncf()[1], "none"))
        family = target.adapter.family
        if target.adapter.device().type != "cpu":
            out.append(target.problem("openvino", f"OpenVINO runs on the CPU here; the "
                                      f"pipeline is on {target.adapter.device()}", "a CPU pipeline"))
        for name in self.components:
            if name in target.adapter.components() and component_kind(family, name) is None:
                allowed = LLAMA_KINDS if family == "llama" else KINDS
                out.append(target.problem(
                    "openvino.components", f"component {name!r} is not converted by the "
                    "openvino pass", ", ".join(allowed)))
        out += _shared_components(target, self.components)
        return out


def _shared_components(target, mine: list[str]) -> list:
    """Other passes on a converted component would change a module no longer called."""
    out = []
    for name, section in target.recipe.sections.items():
        if name == "openvino" or not section.enabled:
            continue
        theirs = getattr(section, "components", None) or target.adapter.default_components(name)
        both = sorted(set(theirs) & set(mine))
        if both:
            out.append(target.problem(
                f"{name}.components", f"{name} would change {', '.join(both)}, which the "
                "openvino pass replaces by a converted model", "components openvino leaves alone"))
    return out


class _Captured(Exception):
    """Ends the example call once every component's inputs are known."""


def _captured(ctx: PassContext, names: list[str]) -> dict[str, tuple]:
    """(args, kwargs) each named component is called with in the adapter's example call;
    the call stops at the last of them, so nothing heavy runs."""
    seen: dict[str, tuple] = {}
    comps = ctx.adapter.components()
    needed = set(names) - {"vae_decoder"}  # the UNet step does not decode

    def hook(name):
        def record(module, args, kwargs):
            seen.setdefault(name, (args, kwargs))
            if needed <= set(seen):
                raise _Captured
        return record

    handles = [comps[n].register_forward_pre_hook(hook(n), with_kwargs=True) for n in names]
    try:
        inputs = ctx.adapter.example_inputs()
        ctx.adapter.call(inputs)
    except _Captured:
        pass
    finally:
        for h in handles:
            h.remove()
    lat = getattr(inputs, "sample", None)  # SDXL: [2B, 4, h, w] latents of the guidance batch
    if "vae_decoder" in names and lat is not None:  # latents of its size, batch 1
        seen["vae_decoder"] = ((torch.randn(1, *lat.shape[1:]),), {})
    return seen


def _plain(t: torch.Tensor) -> torch.Tensor:
    return t.detach().clone()  # not an inference tensor: tracing needs normal ones


def _traceable(ctx: PassContext, cfg: OpenvinoConfig, name: str, module: nn.Module,
               calls: dict):
    """(what to trace, example tensors, static shapes or None, forward maker)."""
    kind = KINDS[name]
    if kind == "sam_prompt_v1":
        return (sam_ov.PromptPoints(module), sam_ov.prompt_example(module), None,
                lambda run, out: sam_ov.prompt_encoder_forward(module, run))
    if kind == "sam_decoder_v1":
        pe = ctx.adapter.components()["prompt_encoder"]
        return (sam_ov.DecoderCore(module), sam_ov.decoder_example(pe), None,
                lambda run, out: sam_ov.mask_decoder_forward(run))
    if name not in calls:
        raise FastpipesError(f"openvino: {name} was not called by the {ctx.adapter.name} "
                             "adapter's example call, so there is nothing to convert it on")
    args, kwargs = calls[name]
    tensors: list[torch.Tensor] = []
    call = flatten((args, kwargs), tensors)
    example = tuple(_plain(t) for t in tensors)
    static = [tuple(t.shape) for t in example] if cfg.shapes is OvShapes.static else None
    return (Flat(module, call), example, static,
            lambda run, out: generic_forward(name, run, call, out))


def _cache_root(ctx: PassContext, cfg: OpenvinoConfig):
    if not cfg.cache:
        return None
    try:
        return open_part("openvino")
    except CacheError as e:
        ctx.warn(f"{e}; converted models are not cached")
        return None


def _output_template(traced: nn.Module, example: tuple, meta: dict) -> Any:
    """How the component's output is rebuilt: what tracing saw, else the cache header's,
    else one call of the PyTorch module to see it."""
    if not isinstance(traced, Flat):
        return None  # the SAM forwards build their outputs themselves
    if traced.out_template is None and meta.get("output") is not None:
        return decode(meta["output"])
    if traced.out_template is None:
        with torch.no_grad():
            traced(*example)
    return traced.out_template


def _converted(ctx: PassContext, cfg: OpenvinoConfig, ov: Any, name: str, traced: nn.Module,
               example: tuple) -> tuple[Any, Any, str]:
    """(the OpenVINO model of `traced`, its output template, how it was had) from the cache
    or a conversion."""
    root = _cache_root(ctx, cfg)
    stem = entry_name(name, component_kind(ctx.adapter.family, name), traced, example,
                      ctx.hardware, cfg.weights.value, cfg.group_size)
    if root is not None:
        model, meta, why = load(ov, root, stem)
        if why:
            ctx.warn(why)
        if model is not None:
            return (model, _output_template(traced, example, meta),
                    f"read from the cache ({stem})")
    start = time.perf_counter()
    model = (llama_ov.export(ov, traced, example) if isinstance(traced, llama_ov.KVDecoder)
             else convert(ov, traced, example))
    if cfg.weights is not OvWeights.none:
        model = compress(import_nncf()[0], model, cfg.weights.value, cfg.group_size)
    seconds = time.perf_counter() - start
    ctx.report.extra.setdefault("openvino_convert_s", {})[name] = round(seconds, 2)
    out = _output_template(traced, example, {})
    if root is not None:
        save(ov, root, stem, model, {"output": encode(out) if out is not None else None})
    return model, out, f"converted in {seconds:.1f} s" + (" and cached" if root is not None else "")


@register_pass("openvino", OpenvinoConfig, "components converted to OpenVINO (optional)")
def apply(ctx: PassContext, cfg: OpenvinoConfig) -> None:
    ov, why = import_openvino()
    if ov is None:  # the preflight refused this
        raise FastpipesError(f"openvino pass: {why}")
    if ctx.adapter.family == "llama":
        return _apply_llama(ctx, cfg, ov)
    comps = ctx.adapter.components()
    generic = [n for n in cfg.components if KINDS[n] == "generic"]
    calls = _captured(ctx, generic) if generic else {}
    ready = []  # everything converted and compiled before any component is touched
    for name in cfg.components:
        traced, example, static, make_forward = _traceable(ctx, cfg, name, comps[name], calls)
        model, out, how = _converted(ctx, cfg, ov, name, traced, example)
        compiled = compile_model(ov, model, cfg.precision.value, static)
        shapes = "static " + str(static) if static else "dynamic shapes"
        ready.append((name, make_forward(Runner(name, compiled, static is not None), out),
                      f"{how}; compiled for {cfg.precision.value}, {shapes}" +
                      (f", nncf {cfg.weights.value} weights" if cfg.weights.value != "none" else "")))
    for name, forward, note in ready:
        comps[name].forward = forward  # an instance attribute: the snapshot undoes it
        ctx.change(name, note)


def _apply_llama(ctx: PassContext, cfg: OpenvinoConfig, ov: Any) -> None:
    """The decoder as one stateful model (fastpipes.passes.openvino_llama), its KV cache
    kept in the cache precision the hint names; generate and forward then call it."""
    model = ctx.adapter.components()["model"]
    traced = llama_ov.KVDecoder(model)
    ov_model, _, how = _converted(ctx, cfg, ov, "model", traced, llama_ov.example(model))
    kv = {"KV_CACHE_PRECISION": cfg.precision.value}
    run = llama_ov.StatefulRunner(compile_model(ov, ov_model, cfg.precision.value, None, kv))
    llama_ov.install(model, run, llama_ov.weight_bytes(ov_model, model))
    ctx.change("model", f"{how}; compiled for {cfg.precision.value} (KV cache "
               f"{cfg.precision.value}, dynamic shapes)" +
               (f", nncf {cfg.weights.value} weights" if cfg.weights.value != "none" else "") +
               "; generate is greedy, forward reads whole sequences")
