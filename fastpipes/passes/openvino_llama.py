"""A transformers Llama as one stateful OpenVINO model, and the ``generate`` / ``forward``
that call it (the openvino pass's Llama path).

optimum-intel exports Llama this way but cannot live in fastpipes' environment, so the
export is done here directly:

1. :class:`KVDecoder` is what is traced: the decoder with its KV cache as explicit tensors
   (``past.{i}.key`` / ``past.{i}.value`` in, ``present.{i}.key`` / ``.value`` out), the
   cache object transformers wants built from them inside the trace.
2. :func:`export` converts it with ``openvino.convert_model`` and hides the cache pairs in
   the model as state (``apply_make_stateful_transformation``); each state starts as zeros
   of length 0 with the batch of ``input_ids``. No ``beam_idx`` input (optimum's convention
   for beam search): decoding here is greedy, and the state is reset per call.
3. :func:`install` replaces the model's ``generate`` (greedy, batch of unpadded prompts,
   a streamer called as transformers calls it) and ``forward`` (a whole sequence without a
   cache: teacher-forced logits) by ones that run the compiled model.

>>> ov_model = export(ov, KVDecoder(model), example(model))   # doctest: +SKIP
"""
from __future__ import annotations

import inspect
import warnings
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from fastpipes.errors import InputError

KIND = "llama_stateful_v1"  # the cache key's name for this export (change it when it changes)
GENERATE_ARGS = ("attention_mask", "max_new_tokens", "min_new_tokens", "do_sample", "streamer",
                 "pad_token_id", "eos_token_id", "num_beams", "use_cache")


class KVDecoder(nn.Module):
    """A ``*ForCausalLM`` called with its KV cache as tensors (what OpenVINO traces)."""

    def __init__(self, model: nn.Module):
        super().__init__()
        self.model = model
        params = inspect.signature(model.forward).parameters
        self.cache_arg = "cache" if "cache" in params else "past_key_values"  # 5.2x: cache

    def forward(self, input_ids, attention_mask, position_ids, logits_index, *past):
        # input_ids, position_ids: [B, S]; attention_mask: [B, P + S]; logits_index: [K]
        # past: per layer key, value [B, H_kv, P, D]
        from transformers import DynamicCache

        cache = DynamicCache(config=self.model.config)
        for i, layer in enumerate(cache.layers):
            # set, not update(): an empty layer's update concatenates a 1-d empty tensor,
            # which OpenVINO's Concat refuses
            layer.keys, layer.values = past[2 * i], past[2 * i + 1]
            layer.device, layer.is_initialized = past[0].device, True
        out = self.model(input_ids=input_ids, attention_mask=attention_mask,
                         position_ids=position_ids, use_cache=True, logits_to_keep=logits_index,
                         return_dict=True, **{self.cache_arg: cache})
        present = [t for layer in cache.layers for t in (layer.keys, layer.values)]
        return (out.logits, *present)  # logits: [B, K, V]; present: [B, H_kv, P + S, D]


def _kv_shape(config: Any) -> tuple[int, int, int]:
    heads = config.num_attention_heads
    head_dim = getattr(config, "head_dim", None) or config.hidden_size // heads
    return config.num_hidden_layers, getattr(config, "num_key_value_heads", heads), head_dim


def example(model: nn.Module) -> tuple[torch.Tensor, ...]:
    """A decode call of batch 2, 3 new tokens after 2 cached ones (sizes that differ, so no
    size is mistaken for another while tracing)."""
    layers, heads, dim = _kv_shape(model.config)
    dtype = next(model.parameters()).dtype
    b, s, p = 2, 3, 2
    g = torch.Generator().manual_seed(0)
    past = [torch.randn(b, heads, p, dim, generator=g).to(dtype) for _ in range(2 * layers)]
    return (torch.randint(3, 100, (b, s), generator=g), torch.ones(b, p + s, dtype=torch.long),
            torch.arange(p, p + s).expand(b, s).clone(), torch.tensor([s - 1]), *past)


def _names(layers: int) -> tuple[list[str], list[str]]:
    kv = [f"{i}.{t}" for i in range(layers) for t in ("key", "value")]
    return (["input_ids", "attention_mask", "position_ids", "logits_index",
             *[f"past.{n}" for n in kv]], ["logits", *[f"present.{n}" for n in kv]])


def _init_states(ov: Any, model: Any, heads: int, dim: int) -> None:
    """Each state (ReadValue) starts as zeros [B, H_kv, 0, D], B from ``input_ids``."""
    ops = ov.opset13
    batch = ops.gather(ops.shape_of(model.input("input_ids"), output_type="i64"),
                       ops.constant(np.array([0], dtype=np.int64)), ops.constant(0))
    rest = ops.constant(np.array([heads, 0, dim], dtype=np.int64))
    for op in model.get_ops():
        if op.get_type_name() == "ReadValue":
            zero = ops.constant(np.zeros((), dtype=op.get_output_element_type(0).to_dtype()))
            op.set_arguments([ops.broadcast(zero, ops.concat([batch, rest], 0))])
    model.validate_nodes_and_infer_types()


def export(ov: Any, traced: KVDecoder, example_inputs: tuple) -> Any:
    """`traced` as a stateful OpenVINO model: inputs input_ids, attention_mask, position_ids,
    logits_index; output logits; the KV cache inside."""
    from openvino._offline_transformations import apply_make_stateful_transformation

    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # tracer warnings: shapes read as numbers
        model = ov.convert_model(traced.eval(), example_input=example_inputs)
    layers, heads, dim = _kv_shape(traced.model.config)
    ins, outs = _names(layers)
    for port, name in zip(model.inputs, ins):
        port.get_tensor().set_names({name})
        if name.startswith("past."):  # traced as [?, ?, ?, D]: the state needs H_kv known
            port.get_node().set_partial_shape(ov.PartialShape([-1, heads, -1, dim]))
    for port, name in zip(model.outputs, outs):
        port.get_tensor().set_names({name})
    model.validate_nodes_and_infer_types()
    apply_make_stateful_transformation(model, {i: o for i, o in zip(ins[4:], outs[1:])})
    _init_states(ov, model, heads, dim)
    return model


def weight_bytes(ov_model: Any, model: nn.Module) -> int:
    """Bytes of the converted model's constants (its weights as compressed) that one decode
    step reads. An untied input embedding is read one row a step: its share (its PyTorch
    size scaled by the model's compression) is left out."""
    total = sum(op.get_byte_size() for op in ov_model.get_ops()
                if op.get_type_name() == "Constant")
    emb = model.get_input_embeddings().weight
    head = getattr(model.get_output_embeddings(), "weight", None)
    if head is not emb:
        torch_bytes = sum(p.numel() * p.element_size() for p in model.parameters())
        total -= int(emb.numel() * emb.element_size() * total / max(torch_bytes, 1))
    return total


class StatefulRunner:
    """One infer request of the compiled stateful model; :meth:`reset` empties its cache."""

    def __init__(self, compiled: Any):
        self.request = compiled.create_infer_request()

    def reset(self) -> None:
        self.request.reset_state()

    def __call__(self, ids: torch.Tensor, past_len: int, keep: torch.Tensor) -> torch.Tensor:
        """logits [B, K, V] of tokens ids [B, S] after `past_len` cached ones."""
        b, s = ids.shape
        self.request.infer({
            "input_ids": ids.numpy(), "logits_index": keep.numpy(),
            "attention_mask": np.ones((b, past_len + s), dtype=np.int64),
            "position_ids": np.broadcast_to(np.arange(past_len, past_len + s), (b, s)).copy()},
            share_inputs=True)
        return torch.from_numpy(self.request.get_tensor("logits").data.copy())


def _token_ids(value: Any) -> list[int]:
    if value is None:
        return []
    return [int(v) for v in value] if isinstance(value, (list, tuple)) else [int(value)]


def refusal(kwargs: dict, sample_default: bool = False) -> str | None:
    """What the converted Llama's ``generate`` does not do of a call with options `kwargs`
    (None: it takes them), said as a fact its callers add their way out to: the one
    statement of what it does (greedy, one beam, the options in GENERATE_ARGS).
    `sample_default`: what the model's generation_config says when `kwargs` do not.
    ``fastpipes run llama`` asks it before any work (fastpipes.llama.run).

    >>> refusal({"do_sample": True, "temperature": 0.8})
    'the converted Llama decodes greedily only (do_sample=False, num_beams=1)'
    """
    sample = kwargs.get("do_sample")
    if sample is None:
        sample = sample_default
    if sample or (kwargs.get("num_beams") or 1) != 1:
        return "the converted Llama decodes greedily only (do_sample=False, num_beams=1)"
    unknown = sorted(set(kwargs) - set(GENERATE_ARGS))
    if unknown:
        return (f"the converted Llama's generate takes {', '.join(GENERATE_ARGS)}; not "
                f"{', '.join(unknown)} (greedy decoding only)")
    return None


def _check_call(model: nn.Module, input_ids: Any, attention_mask: Any, kwargs: dict) -> None:
    """Refuse, saying what is allowed, what the converted model does not do."""
    why = refusal(kwargs, bool(getattr(model.generation_config, "do_sample", False)))
    if why:
        raise InputError(f"openvino: {why}: call generate with do_sample=False and "
                         "num_beams=1 and only those options (this model's generation_config "
                         "may ask for sampling), or use a native recipe (llama_woq_int4) to "
                         "sample or for other generation options")
    if not isinstance(input_ids, torch.Tensor) or input_ids.dim() != 2 or input_ids.shape[1] < 1:
        raise InputError("openvino: generate needs input_ids as a tensor [batch, prompt tokens]")
    if attention_mask is not None and not bool((attention_mask == 1).all()):
        raise InputError("openvino: the converted Llama takes unpadded prompts (an attention "
                         "mask of ones): generate each prompt length apart, or use a native "
                         "recipe for padded batches")


def _new_tokens(model: nn.Module, prompt_len: int, kwargs: dict) -> tuple[int, int]:
    """(max_new_tokens, min_new_tokens) as transformers reads them."""
    gc = model.generation_config
    most = kwargs.get("max_new_tokens") or getattr(gc, "max_new_tokens", None)
    if most is None:
        most = max(int(getattr(gc, "max_length", 20) or 20) - prompt_len, 0)
    return int(most), int(kwargs.get("min_new_tokens") or 0)


def generate_for(model: nn.Module, run: StatefulRunner) -> Callable:
    """A greedy ``generate(input_ids, **kwargs)`` on the converted model: sequences
    [B, prompt + new], as ``LlamaForCausalLM.generate(..., do_sample=False)`` returns them."""

    @torch.no_grad()
    def generate(input_ids=None, **kwargs):
        _check_call(model, input_ids, kwargs.get("attention_mask"), kwargs)
        gc = model.generation_config
        most, least = _new_tokens(model, input_ids.shape[1], kwargs)
        eos = torch.tensor(_token_ids(kwargs.get("eos_token_id", gc.eos_token_id)), dtype=torch.long)
        pad = kwargs.get("pad_token_id", gc.pad_token_id)
        pad = int(pad if pad is not None else (eos[0] if len(eos) else 0))
        streamer = kwargs.get("streamer")
        seq = input_ids.cpu().long()  # [B, P]
        done = torch.zeros(seq.shape[0], dtype=torch.bool)
        if streamer is not None:
            streamer.put(seq)
        run.reset()
        logits = run(seq, 0, torch.tensor([seq.shape[1] - 1]))  # [B, 1, V]
        for step in range(most):
            scores = logits[:, -1].float()
            if step < least and len(eos):
                scores[:, eos] = -float("inf")
            token = torch.where(done, pad, scores.argmax(-1))  # [B]
            seq = torch.cat([seq, token[:, None]], 1)
            if streamer is not None:
                streamer.put(token)
            done |= torch.isin(token, eos)
            if step == most - 1 or bool(done.all()):
                break
            logits = run(token[:, None], seq.shape[1] - 1, torch.tensor([0]))
        if streamer is not None:
            streamer.end()
        return seq.to(input_ids.device)

    return generate


def forward_for(model: nn.Module, run: StatefulRunner) -> Callable:
    """``forward(input_ids)`` without a cache: the logits of every position, read by the
    converted model from an empty state (what teacher-forced fidelity calls)."""
    from transformers.modeling_outputs import CausalLMOutputWithPast

    @torch.no_grad()
    def forward(input_ids=None, attention_mask=None, use_cache=None, return_dict=None,
                **kwargs):
        given = sorted(k for k, v in kwargs.items() if v is not None)
        if given or use_cache:
            raise InputError("openvino: the converted Llama's forward reads a whole sequence "
                             f"without a cache (input_ids, attention_mask; use_cache=False); "
                             f"got {', '.join(given) or 'use_cache=True'}. Decode with "
                             "generate, which keeps the cache inside OpenVINO")
        _check_call(model, input_ids, attention_mask, {"do_sample": False})
        run.reset()
        logits = run(input_ids.cpu().long(), 0, torch.arange(input_ids.shape[1]))
        run.reset()
        return CausalLMOutputWithPast(logits=logits.to(input_ids.device))

    return forward


def install(model: nn.Module, run: StatefulRunner, decode_bytes: int) -> None:
    """Point the model's ``generate`` and ``forward`` at the converted model (instance
    attributes: accelerate()'s snapshot undoes them), and record the bytes a decode step
    reads (fastpipes.llama's ``decode_weight_bytes`` reports them)."""
    model.generate = generate_for(model, run)
    model.forward = forward_for(model, run)
    model.fastpipes_decode_weight_bytes = int(decode_bytes)
