"""Llama via transformers: builders at real shapes, the adapter, and the benchmark workload.

>>> from fastpipes.pipelines.llama import build_llama
>>> model = build_llama("tiny")            # seeded random weights; or "llama-3.2-1b", a local dir
>>> out = model.generate(torch.tensor([[1, 2, 3]]), max_new_tokens=4, do_sample=False)
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fastpipes.bench.workload import Fidelity, Workload, WorkloadSpec
from fastpipes.errors import BenchmarkError, InputError
from fastpipes.pipelines.base import Adapter, AttentionSite, register_adapter
from fastpipes.recipe.schema import Family

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


def _transformers_version() -> tuple[int, int]:
    import transformers

    major, minor = transformers.__version__.split(".")[:2]
    return int(major), int(minor)


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
        raise InputError(f"unknown Llama model {name!r}; allowed: {', '.join(LLAMA_SHAPES)} "
                         "or a local Hugging Face directory")
    shape = LLAMA_SHAPES[name]
    if _transformers_version() < (5, 0):
        shape = legacy_rope_kwargs(shape)
    return LlamaConfig(**shape, attn_implementation="eager")


@torch.no_grad()
def _seeded_init(model: nn.Module, seed: int, std: float = 0.02) -> None:
    # weights ~ N(0, std), norms = 1: fast, deterministic, and at the real shapes
    g = torch.Generator().manual_seed(seed)
    for name, p in model.named_parameters():  # tied weights are visited once
        if p.dim() == 1:
            p.fill_(1.0)
        else:
            p.normal_(0.0, std, generator=g)


def build_llama(name_or_path: str = "llama-3.2-1b", seed: int = 0,
                dtype: torch.dtype = torch.float32):
    """A LlamaForCausalLM in eval mode: a named shape with seeded random weights, or a local
    Hugging Face directory (config.json + safetensors).

    Random models are built on the meta device, cast to `dtype` there and initialised in
    place, so the 1B shape builds in seconds without a second copy of the weights, and a
    BF16 build of the 7B shape (13.5 GB) never holds its 27 GB FP32 form.
    """
    from transformers import AutoModelForCausalLM, LlamaForCausalLM

    path = Path(str(name_or_path))
    if path.is_dir():
        if not (path / "config.json").exists():
            raise InputError(f"{path} has no config.json; expected a Hugging Face model directory")
        # `dtype` since transformers 4.56; before, it was `torch_dtype` (and `dtype` was ignored)
        key = "dtype" if _transformers_version() >= (4, 56) else "torch_dtype"
        model = AutoModelForCausalLM.from_pretrained(str(path), **{key: dtype})
        return model.eval()
    config = llama_config(str(name_or_path))
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.to(dtype)  # on meta: allocates nothing
    model.to_empty(device="cpu")  # gives each module its own tensors: tie them again
    model.tie_weights()
    _seeded_init(model, seed)
    # buffers made on meta hold garbage after to_empty: rebuild the rotary tables
    model.model.rotary_emb = type(model.model.rotary_emb)(config)
    model.generation_config.pad_token_id = config.eos_token_id
    return model.eval()


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


@register_adapter
class LlamaAdapter(Adapter):
    name = "llama"
    family = Family.llama
    description = "transformers LlamaForCausalLM (or a llama-like *ForCausalLM), or a "\
                  "text-generation pipeline holding one"
    priority = 10

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


# ---- benchmark workload ---------------------------------------------------------------------

@dataclass
class LlamaOutput:
    sequences: torch.Tensor  # [B, prompt + new]
    prompt_len: int
    ttft_s: float = 0.0
    decode_tokens_per_s: float = 0.0
    # kept until fidelity() has used it: the model that produced this output
    model: Any = field(default=None, repr=False)
    logits: torch.Tensor | None = field(default=None, repr=False)


class _Clock:
    """A generate() streamer that time-stamps every token (one Python call per token)."""

    def __init__(self):
        self.stamps: list[float] = []

    def put(self, value):
        self.stamps.append(time.perf_counter())

    def end(self):
        pass


@torch.no_grad()
def teacher_forced_logits(model: nn.Module, sequences: torch.Tensor) -> torch.Tensor:
    """logits [B, S, V] of `model` reading `sequences` in one forward (no cache)."""
    return model(sequences, use_cache=False).logits.float()


def compare_logits(ref: torch.Tensor, out: torch.Tensor, prompt_len: int) -> dict[str, float]:
    """Top-1 agreement and logit error over the positions that predict generated tokens."""
    r, o = ref[:, prompt_len - 1:-1], out[:, prompt_len - 1:-1]  # [B, new, V]
    err = (r - o).abs()
    top2 = r.topk(2, dim=-1).values
    # how decided FP32 itself is: a flip needs a logit error about this large. Random
    # weights give small margins (flat logits), trained models large ones, so read
    # top-1 agreement together with it
    margin = (top2[..., 0] - top2[..., 1]).median().item()
    return {"top1_agreement": (r.argmax(-1) == o.argmax(-1)).float().mean().item(),
            "max_logit_error": err.max().item(), "mean_logit_error": err.mean().item(),
            "fp32_top1_margin_median": margin}


class LlamaWorkload(Workload):
    """Greedy decode of `new_tokens` after a seeded `prompt_len`-token prompt.

    Fidelity is teacher-forced: the FP32 reference sequence is fed through the FP32 and the
    accelerated model, and their per-position argmax and logits are compared.
    """

    family = "llama"
    unit = "tokens"
    bound = "memory"
    TOP1_MIN = 0.95

    def __init__(self, spec: WorkloadSpec):
        super().__init__(spec)
        self.model_name = spec.model or ("tiny" if spec.size == "tiny" else "llama-3.2-1b")
        self.prompt_len = int(spec.options.get("prompt_len", 32))
        self.new_tokens = int(spec.options.get("new_tokens", 64))
        # dtype the model is built in: float32 (the baseline's), or bfloat16 for shapes whose
        # FP32 form does not fit in memory (runs without a baseline; see run_benchmark)
        self.build_dtype = str(spec.options.get("dtype", "float32"))
        if self.build_dtype not in ("float32", "bfloat16"):
            raise BenchmarkError(f"llama option dtype must be float32 or bfloat16, "
                                 f"got {self.build_dtype!r}")

    def describe(self) -> str:
        built = "" if self.build_dtype == "float32" else f" (built in {self.build_dtype})"
        return (f"{self.model_name}{built}: {self.prompt_len} prompt + {self.new_tokens} new tokens, "
                f"greedy, batch {self.spec.batch_size}")

    def build(self) -> Any:
        return build_llama(self.model_name, seed=self.spec.seed, dtype=getattr(torch, self.build_dtype))

    def inputs(self, pipe: Any) -> torch.Tensor:
        model = LlamaAdapter(pipe).model
        g = torch.Generator().manual_seed(self.spec.seed + 1)
        # ids: [B, P], away from special tokens at the ends of the vocabulary
        high = max(3, model.config.vocab_size - 300)
        return torch.randint(3, high, (self.spec.batch_size, self.prompt_len), generator=g)

    @torch.no_grad()
    def run(self, pipe: Any, inputs: torch.Tensor) -> LlamaOutput:
        model = LlamaAdapter(pipe).model
        clock = _Clock()
        t0 = time.perf_counter()
        seq = model.generate(inputs, attention_mask=torch.ones_like(inputs),
                             max_new_tokens=self.new_tokens, min_new_tokens=self.new_tokens,
                             do_sample=False, pad_token_id=model.generation_config.pad_token_id or 0,
                             streamer=clock)
        stamps = clock.stamps  # [prompt, token 1, token 2, ...]
        ttft = stamps[1] - t0 if len(stamps) > 1 else 0.0
        decode = (len(stamps) - 2) / (stamps[-1] - stamps[1]) if len(stamps) > 2 else 0.0
        return LlamaOutput(seq, inputs.shape[1], ttft, decode, model=model)

    def items(self, inputs: Any) -> int:
        return self.spec.batch_size * self.new_tokens

    def comparable(self, pipe: Any, inputs: Any, output: LlamaOutput) -> dict:
        """Plain tensors for the harness to carry across processes. The model stays with
        this (worker) process: fidelity() teacher-forces the reference sequence through it."""
        model = LlamaAdapter(pipe).model
        self._model = model
        return {"sequences": output.sequences, "prompt_len": output.prompt_len,
                "logits": teacher_forced_logits(model, output.sequences)}

    def fidelity(self, reference: LlamaOutput | dict, output: LlamaOutput | dict) -> Fidelity:
        if isinstance(reference, LlamaOutput):  # in-process use: both outputs hold their model
            if reference.logits is None:
                reference.logits = teacher_forced_logits(reference.model, reference.sequences)
                reference.model = None  # free the FP32 model as soon as its logits are known
            reference = {"sequences": reference.sequences, "prompt_len": reference.prompt_len,
                         "logits": reference.logits}
        model = output.model if isinstance(output, LlamaOutput) else self._model
        sequences = output.sequences if isinstance(output, LlamaOutput) else output["sequences"]
        same = torch.equal(reference["sequences"], sequences)
        if same and isinstance(output, dict):  # comparable() already teacher-forced this sequence
            out_logits = output["logits"]
        else:
            out_logits = teacher_forced_logits(model, reference["sequences"])
        metrics = compare_logits(reference["logits"], out_logits, int(reference["prompt_len"]))
        metrics["sequence_match"] = float(same)
        return Fidelity(metrics, metrics["top1_agreement"] >= self.TOP1_MIN,
                        f"teacher-forced top-1 agreement >= {self.TOP1_MIN}")

    def bytes_per_item(self, pipe: Any) -> float:
        return float(decode_weight_bytes(LlamaAdapter(pipe).model))

    def extra_metrics(self, pipe: Any, inputs: Any) -> dict[str, float]:
        out = self.run(pipe, inputs)
        return {"ttft_s": out.ttft_s, "decode_tokens_per_s": out.decode_tokens_per_s,
                "weight_bytes_per_token": self.bytes_per_item(pipe)}


def decode_weight_bytes(model: nn.Module) -> int:
    """Bytes of weights one decode step reads: every tensor once, but of the input
    embedding only one row (unless the lm_head reads it as its weight)."""
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
