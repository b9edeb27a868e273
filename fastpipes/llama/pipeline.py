"""Llama via transformers: builders at real shapes and the adapter (components, attention,
example inputs, teacher-forced fidelity and its bars per precision class).

>>> from fastpipes.llama.pipeline import build_llama
>>> model = build_llama("tiny")            # seeded random weights; or "llama-3.2-1b", a local dir
>>> out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False)
"""
from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fastpipes.errors import InputError
from fastpipes.fidelity import Bar, Fidelity, judge
from fastpipes.llama.hf_dir import load_causal_lm, transformers_version
from fastpipes.llama.quantized_load import load_quantized_causal_lm, weight_only
from fastpipes.llama.reference import (REFERENCE_MODELS, perplexity, reference_dir,
                                                 top1_agreement)
from fastpipes.pipelines.base import Adapter, AttentionSite, seeded_generator
from fastpipes.recipe.load import load_recipe
from fastpipes.recipe.schema import PrecisionClass

LLAMA3_ROPE = {"rope_type": "llama3", "rope_theta": 500000.0, "factor": 32.0,
               "low_freq_factor": 1.0, "high_freq_factor": 4.0,
               "original_max_position_embeddings": 8192}

# name -> LlamaConfig kwargs (real published shapes)
LLAMA_SHAPES: dict[str, dict[str, Any]] = {
    "llama-3.2-1b": dict(hidden_size=2048, num_hidden_layers=16, num_attention_heads=32,
                         num_key_value_heads=8, intermediate_size=8192, vocab_size=128256,
                         tie_word_embeddings=True, rope_parameters=LLAMA3_ROPE,
                         max_position_embeddings=131072, rms_norm_eps=1e-5,
                         bos_token_id=128000, eos_token_id=128001),
    "llama-2-7b": dict(hidden_size=4096, num_hidden_layers=32, num_attention_heads=32,
                       num_key_value_heads=32, intermediate_size=11008, vocab_size=32000,
                       tie_word_embeddings=False,
                       rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
                       max_position_embeddings=4096, rms_norm_eps=1e-5,
                       bos_token_id=1, eos_token_id=2),
    "tiny": dict(hidden_size=128, num_hidden_layers=2, num_attention_heads=4,
                 num_key_value_heads=2, intermediate_size=256, vocab_size=512,
                 tie_word_embeddings=True, rope_parameters=LLAMA3_ROPE,
                 max_position_embeddings=131072, rms_norm_eps=1e-5,
                 bos_token_id=1, eos_token_id=2),
}


def legacy_rope_kwargs(shape: dict[str, Any]) -> dict[str, Any]:
    """`shape` in transformers 4.x terms: ``rope_parameters`` (5.x) becomes ``rope_theta`` +
    ``rope_scaling``, which 4.x reads (it would keep an unknown ``rope_parameters`` as a
    plain attribute and silently build the default RoPE)."""
    out = dict(shape)
    rope = dict(out.pop("rope_parameters"))
    out["rope_theta"] = rope.pop("rope_theta")
    out["rope_scaling"] = rope if rope["rope_type"] != "default" else None
    return out


def llama_config(name: str):
    from transformers import LlamaConfig

    if name not in LLAMA_SHAPES:
        raise InputError(f"unknown Llama model {name!r}; allowed: "
                         f"{', '.join([*LLAMA_SHAPES, *REFERENCE_MODELS])} "
                         "or a local Hugging Face directory")
    shape = LLAMA_SHAPES[name]
    if transformers_version() < (5, 0):
        shape = legacy_rope_kwargs(shape)
    return LlamaConfig(**shape, attn_implementation="eager")


@torch.no_grad()
def _seeded_init(model: nn.Module, seed: int, std: float = 0.02) -> None:
    # weights ~ N(0, std), norms = 1: fast, deterministic, and at the real shapes; drawn
    # where the weights live (a CUDA model needs a CUDA generator)
    g = seeded_generator(seed, next(model.parameters()).device)
    for name, p in model.named_parameters():  # tied weights are visited once
        if p.dim() == 1:
            p.fill_(1.0)
        else:
            p.normal_(0.0, std, generator=g)


def build_llama(name_or_path: str = "llama-3.2-1b", seed: int = 0,
                dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu",
                quantize: Any = None):
    """A LlamaForCausalLM in eval mode: a named shape with seeded random weights, a
    reference model trained here (``trained-tiny``: built on first use, see
    llama_reference.py), or a local Hugging Face directory (config.json + safetensors;
    a missing weight or a damaged file is an InputError naming it).

    Random models are built on the meta device, cast to `dtype` there and initialised in
    place, so the 1B shape builds in seconds without a second copy of the weights, and a
    BF16 build of the 7B shape (13.5 GB) never holds its 27 GB FP32 form. With `device`
    (e.g. ``cuda``) the tensors are made and initialised there, never on the CPU.

    `quantize` (a recipe's weight-only quantize section) loads a directory layer by layer
    straight into quantized layers (llama/quantized_load.py): the FP32 model never
    exists whole. Named shapes ignore it (their random weights are made, not loaded).
    """
    from transformers import LlamaForCausalLM

    if str(name_or_path) in REFERENCE_MODELS:
        name_or_path = reference_dir(str(name_or_path))
    path = Path(str(name_or_path))
    if (path.exists() or "/" in str(name_or_path)) and str(name_or_path) not in LLAMA_SHAPES:
        if weight_only(quantize) and torch.device(device).type == "cpu":
            return load_quantized_causal_lm(path, quantize, dtype)
        return load_causal_lm(path, dtype).to(device).eval()
    config = llama_config(str(name_or_path))
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.to(dtype)  # on meta: allocates nothing
    model.to_empty(device=device)  # gives each module its own tensors: tie them again
    model.tie_weights()
    _seeded_init(model, seed)
    # buffers made on meta hold garbage after to_empty: rebuild the rotary tables
    with torch.device(device):
        model.model.rotary_emb = type(model.model.rotary_emb)(config)
    model.generation_config.pad_token_id = config.eos_token_id
    return model.eval()


def load_llama(name_or_path: str | Path, recipe: Any = None, overrides: Any = None,
               seed: int = 0):
    """The model `name_or_path` names (see :func:`build_llama`), made ready for `recipe`: a
    directory with a weight-only quantize section is quantized layer by layer while it is
    read, so its FP32 form never exists whole. ``accelerate(model, recipe)`` then applies
    the rest of the recipe and records the layers as quantized at load.

    >>> model = load_llama("/path/to/Llama-3.2-1B", "llama_woq_int4")        # doctest: +SKIP
    >>> report = fastpipes.accelerate(model, "llama_woq_int4")                # doctest: +SKIP
    """
    quantize = None
    if recipe is not None:
        quantize = load_recipe(recipe, overrides).section("quantize")
    return build_llama(str(name_or_path), seed=seed, quantize=quantize)


def load_tokenizer(path: str | Path):
    """The tokenizer of a local model directory, or None if it has none."""
    from transformers import AutoTokenizer

    try:
        return AutoTokenizer.from_pretrained(str(path))
    except Exception:  # no tokenizer files in the directory
        return None


def _is_llama_like(obj: Any) -> bool:
    """A transformers *ForCausalLM with Llama's structure (decoder layers + lm_head)."""
    if not type(obj).__module__.startswith("transformers") or not isinstance(obj, nn.Module):
        return False
    inner = getattr(obj, "model", None)
    return (hasattr(obj, "generate") and isinstance(getattr(obj, "lm_head", None), nn.Module)
            and hasattr(inner, "layers") and hasattr(obj, "config"))


# ---- fidelity ---------------------------------------------------------------------------------

_TOP1, _PPL = "teacher-forced top-1 agreement", "held-out perplexity change %"
# Stated per precision class before any run (docs/fidelity.md says why). Both are
# teacher-forced: every position is predicted from the same text by FP32 and the recipe.
# Perplexity needs held-out text (the trained reference models have it); top-1 agreement is
# measured on held-out text when there is some, else on FP32's own greedy continuation.
LLAMA_BARS = {
    PrecisionClass.exact: (Bar("top1_agreement", ">=", 0.995, _TOP1),
                           Bar("perplexity_change_pct", "<=", 0.1, _PPL)),
    PrecisionClass.fp16: (Bar("top1_agreement", ">=", 0.98, _TOP1),
                          Bar("perplexity_change_pct", "<=", 0.5, _PPL)),
    PrecisionClass.bf16: (Bar("top1_agreement", ">=", 0.98, _TOP1),
                          Bar("perplexity_change_pct", "<=", 0.5, _PPL)),
    PrecisionClass.int8: (Bar("top1_agreement", ">=", 0.98, _TOP1),
                          Bar("perplexity_change_pct", "<=", 0.5, _PPL)),
    PrecisionClass.int4: (Bar("top1_agreement", ">=", 0.95, _TOP1),
                          Bar("perplexity_change_pct", "<=", 2.0, _PPL)),
}


@torch.no_grad()
def teacher_forced_logits(model: nn.Module, sequences: torch.Tensor) -> torch.Tensor:
    """logits [B, S, V] of `model` reading `sequences` in one forward (no cache)."""
    device = next(model.parameters()).device  # the reference's sequences may be on the CPU
    return model(sequences.to(device), use_cache=False).logits.float()


def compare_logits(ref: torch.Tensor, out: torch.Tensor, prompt_len: int) -> dict[str, float]:
    """Top-1 agreement and logit error over the positions that predict generated tokens."""
    r, o = ref[:, prompt_len - 1:-1], out[:, prompt_len - 1:-1]  # [B, new, V]
    err = (r - o).abs()
    top2 = r.topk(2, dim=-1).values
    # how decided FP32 itself is: a flip needs a logit error about this large. Random
    # weights give small margins (flat logits), trained models large ones
    margin = (top2[..., 0] - top2[..., 1]).median().item()
    return {"top1_agreement": (r.argmax(-1) == o.argmax(-1)).float().mean().item(),
            "max_logit_error": err.max().item(), "mean_logit_error": err.mean().item(),
            "fp32_top1_margin_median": margin}


class LlamaAdapter(Adapter):
    name = "llama"
    family = "llama"
    description = "transformers LlamaForCausalLM (or a llama-like *ForCausalLM), or a "\
                  "text-generation pipeline holding one"
    priority = 10
    BARS = LLAMA_BARS

    @classmethod
    def matches(cls, obj: Any) -> bool:
        return _is_llama_like(obj) or _is_llama_like(getattr(obj, "model", None)) and \
            type(obj).__name__ == "TextGenerationPipeline"

    @property
    def model(self) -> nn.Module:
        return self.obj if _is_llama_like(self.obj) else self.obj.model

    def components(self) -> dict[str, nn.Module]:
        return {"model": self.model}

    def set_component(self, name: str, module: nn.Module) -> None:
        if name != "model" or self.model is self.obj:
            raise NotImplementedError("a bare model cannot be replaced in place")
        self.obj.model = module

    def state_objects(self) -> list[Any]:
        m = self.model
        objs = [m.config, m.generation_config]
        return objs if m is self.obj else [self.obj] + objs

    def attention_sites(self) -> list[AttentionSite]:
        m = self.model
        return [AttentionSite("hf", "model", list(m.named_modules())[:0], owner=m)]

    # -- exercising and judging (recipe="auto", the benchmark) ------------------------------
    def example_inputs(self, prompt_len: int = 16, new_tokens: int = 8, batch: int = 1,
                       seed: int = 0) -> dict[str, Any]:
        """A seeded prompt of `prompt_len` token ids and `new_tokens` greedy decode steps."""
        vocab = self.model.config.vocab_size
        # away from the special tokens at either end of a large vocabulary
        lo, hi = (3, vocab - 300) if vocab > 1000 else (3, max(4, vocab - 16))
        g = torch.Generator().manual_seed(seed + 1)
        return {"input_ids": torch.randint(lo, hi, (batch, prompt_len), generator=g),
                "max_new_tokens": new_tokens}

    def describe_inputs(self, inputs: dict[str, Any]) -> str:
        b, n = inputs["input_ids"].shape
        return (f"{b} prompt(s) of {n} token ids, then {inputs['max_new_tokens']} greedy "
                "decode steps")

    @torch.no_grad()
    def call(self, inputs: dict[str, Any], streamer: Any = None) -> torch.Tensor:
        """Greedy generate of exactly max_new_tokens tokens: sequences [B, prompt + new]."""
        model, ids, n = self.model, inputs["input_ids"], inputs["max_new_tokens"]
        return model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=n,
                              min_new_tokens=n, do_sample=False, streamer=streamer,
                              pad_token_id=model.generation_config.pad_token_id or 0)

    def fidelity_view(self, inputs: dict[str, Any], output: torch.Tensor,
                      reference: dict | None = None) -> dict:
        """This configuration's sequences, and its teacher-forced logits on FP32's sequences
        (`reference`; its own when it is the FP32 run)."""
        text = reference["sequences"] if reference is not None else output
        return {"sequences": output, "prompt_len": int(inputs["input_ids"].shape[1]),
                "logits": teacher_forced_logits(self.model, text)}

    def fidelity_metrics(self, reference: dict, view: dict) -> dict[str, float]:
        metrics = compare_logits(reference["logits"], view["logits"], reference["prompt_len"])
        metrics["sequence_match"] = float(torch.equal(reference["sequences"], view["sequences"]))
        if "heldout_logits" in reference and "heldout_logits" in view:
            metrics.update(heldout_metrics(reference, view))
        return metrics

    def compare(self, reference: dict, view: dict,
                klass: PrecisionClass | str = PrecisionClass.exact) -> Fidelity:
        klass = PrecisionClass(klass)
        metrics = self.fidelity_metrics(reference, view)
        if reference.get("random_weights"):
            return Fidelity(metrics, None, ", ".join(map(str, LLAMA_BARS[klass])) +
                            f" ({klass.value} bars)", klass.value,
                            "not judged: random weights give flat logits (FP32's median top-1 "
                            f"margin {metrics['fp32_top1_margin_median']:.3g}); judge fidelity "
                            "on a trained model (--model trained-tiny)")
        return judge(metrics, LLAMA_BARS[klass], klass)


def heldout_metrics(reference: dict, view: dict) -> dict[str, float]:
    """Teacher-forced top-1 agreement and perplexities on held-out text: `heldout_logits`
    [n, S, V] of each model read from the same `heldout_tokens` [n, S]."""
    ref, out, tokens = reference["heldout_logits"], view["heldout_logits"], reference["heldout_tokens"]
    ppl_ref, ppl = perplexity(ref, tokens), perplexity(out, tokens)
    return {"top1_agreement": top1_agreement(ref, out), "heldout_positions": float(tokens.numel()),
            "fp32_perplexity": ppl_ref, "perplexity": ppl,
            "perplexity_change_pct": abs(ppl / ppl_ref - 1.0) * 100.0}


def decode_weight_bytes(model: nn.Module) -> int:
    """Bytes of weights one decode step reads: every tensor once, but of the input
    embedding only one row (unless the lm_head reads it as its weight). A model whose decode
    runs elsewhere (the openvino pass) says its own (``fastpipes_decode_weight_bytes``)."""
    if getattr(model, "fastpipes_decode_weight_bytes", None) is not None:
        return int(model.fastpipes_decode_weight_bytes)
    emb = model.get_input_embeddings().weight
    head = model.get_output_embeddings()
    seen, total = set(), 0
    for t in list(model.parameters()) + list(model.buffers()):
        if id(t) in seen:
            continue
        seen.add(id(t))
        total += t.numel() * t.element_size()
    if getattr(head, "weight", None) is not emb:
        total -= emb.numel() * emb.element_size()
    return total
