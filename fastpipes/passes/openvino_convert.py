"""Turning a component into a compiled OpenVINO model, and calling it with the component's
own signature.

A component's call (positional and keyword arguments, nested tuples/dicts) is flattened to
its tensors; everything else in it (``return_dict=False``, ``None``) is a constant of the
converted graph. :class:`Flat` is what gets traced: tensors in, the output's tensors out.
:func:`generic_forward` is what replaces the component's ``forward``: it checks that a call
has the converted call's structure and constants, runs the compiled model and rebuilds the
output (a tensor, a tuple, a diffusers/transformers output class).

>>> runner = Runner(compiled, static=True)       # doctest: +SKIP
>>> module.forward = generic_forward("unet", runner, call_template, out_template)  # doctest: +SKIP
"""
from __future__ import annotations

import functools
import warnings
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np
import torch
import torch.nn as nn

from fastpipes.errors import InputError


@dataclass(frozen=True)
class Slot:
    """Where the i-th tensor of a flattened call or output goes."""

    index: int


def flatten(obj: Any, out: list[torch.Tensor]) -> Any:
    """`obj` with each tensor replaced by a Slot (appending the tensor to `out`)."""
    if isinstance(obj, torch.Tensor):
        out.append(obj)
        return Slot(len(out) - 1)
    if isinstance(obj, dict):  # ModelOutput / BaseOutput are dicts too
        return type(obj), {k: flatten(v, out) for k, v in obj.items()}
    if isinstance(obj, (tuple, list)):
        return type(obj), [flatten(v, out) for v in obj]
    return obj


def fill(template: Any, tensors: list[torch.Tensor]) -> Any:
    """The inverse of :func:`flatten`."""
    if isinstance(template, Slot):
        return tensors[template.index]
    if isinstance(template, tuple) and len(template) == 2 and isinstance(template[0], type):
        kind, items = template
        if isinstance(items, dict):
            values = {k: fill(v, tensors) for k, v in items.items()}
            return values if kind is dict else kind(**values)
        return kind(fill(v, tensors) for v in items)
    return template


def describe(template: Any) -> str:
    """A template in words, tensors as 'T', for an error message."""
    if isinstance(template, Slot):
        return "T"
    if isinstance(template, tuple) and len(template) == 2 and isinstance(template[0], type):
        kind, items = template
        if isinstance(items, dict):
            return "{" + ", ".join(f"{k}: {describe(v)}" for k, v in items.items()) + "}"
        return "(" + ", ".join(describe(v) for v in items) + ")"
    return repr(template)


class Flat(nn.Module):
    """`module` called as in `template`, with the call's tensors given positionally; returns
    the output's tensors (what OpenVINO traces), and keeps the output's template."""

    def __init__(self, module: nn.Module, template: Any):
        super().__init__()
        self.module, self.template = module, template
        self.out_template: Any = None

    def forward(self, *tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
        args, kwargs = fill(self.template, list(tensors))
        leaves: list[torch.Tensor] = []
        self.out_template = flatten(self.module(*args, **kwargs), leaves)
        return tuple(leaves)


_PLAIN = {"tuple": tuple, "list": list, "dict": dict}


def encode(template: Any) -> Any:
    """An output template as JSON, or None when it holds a type other than tuple, list or
    dict (a library's output class is never named in a cache file: that would let a cache
    choose what is built)."""
    if isinstance(template, Slot):
        return {"slot": template.index}
    if isinstance(template, tuple) and len(template) == 2 and isinstance(template[0], type):
        kind, items = template
        if kind not in _PLAIN.values():
            return None
        if isinstance(items, dict):
            inner = {k: encode(v) for k, v in items.items()}
            return None if None in inner.values() else {"dict": inner}
        inner = [encode(v) for v in items]
        return None if None in inner else {kind.__name__: inner}
    if template is None:
        return {"none": 0}
    return {"value": template} if isinstance(template, (bool, int, float, str)) else None


def decode(data: Any) -> Any:
    """The inverse of :func:`encode`."""
    (tag, value), = data.items()
    if tag == "slot":
        return Slot(int(value))
    if tag in ("value", "none"):
        return value if tag == "value" else None
    if tag == "dict":
        return dict, {k: decode(v) for k, v in value.items()}
    return _PLAIN[tag], [decode(v) for v in value]


class Runner:
    """A compiled OpenVINO model called with torch tensors: inputs cast to the model's
    element types, outputs copied out of OpenVINO's reused buffers."""

    def __init__(self, name: str, compiled: Any, static: bool):
        self.name, self.compiled = name, compiled
        self.request = compiled.create_infer_request()
        self.dtypes = [p.get_element_type().to_dtype() for p in compiled.inputs]
        self.shapes = ([tuple(p.get_partial_shape().to_shape()) for p in compiled.inputs]
                       if static else None)

    def __call__(self, *tensors: torch.Tensor) -> list[torch.Tensor]:
        if self.shapes is not None:
            got = [tuple(t.shape) for t in tensors]
            if got != self.shapes:
                raise InputError(
                    f"openvino: {self.name} was converted for static input shapes "
                    f"{self.shapes}; this call has {got}. Call it at those shapes (the "
                    "adapter's example call: SAM's input size, SDXL's default resolution with "
                    "guidance), or accelerate with openvino.shapes: dynamic (any shape)")
        # (np.ascontiguousarray would make a 0-d timestep 1-d)
        arrays = [t.detach().cpu().contiguous().numpy().astype(d, copy=False)
                  for t, d in zip(tensors, self.dtypes)]
        self.request.infer(arrays, share_inputs=True)
        return [torch.from_numpy(self.request.get_output_tensor(i).data.copy())
                for i in range(len(self.compiled.outputs))]


def generic_forward(name: str, run: Callable, call_template: Any, out_template: Any) -> Callable:
    """A ``forward(*args, **kwargs)`` that runs `run` for calls shaped like the converted
    one and refuses others, saying what differs."""
    expected = describe(call_template)

    def forward(*args, **kwargs):
        tensors: list[torch.Tensor] = []
        template = flatten((args, kwargs), tensors)
        if template != call_template:
            raise InputError(
                f"openvino: {name} was converted for calls shaped {expected} (T: a tensor); "
                f"this call is {describe(template)}. Call it as the pipeline did when it was "
                "accelerated, or drop the component from openvino.components")
        return fill(out_template, run(*tensors))

    return forward


def convert(ov: Any, module: nn.Module, example: tuple[torch.Tensor, ...]) -> Any:
    """`module` as an OpenVINO model (dynamic shapes), traced on `example`.

    The tracer's warnings (a shape read as a Python number becomes a constant) are silenced:
    with static shapes they are what is meant; with ``shapes: dynamic`` such a constant can
    make another shape fail or differ (docs/passes/openvino.md)."""
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore", torch.jit.TracerWarning)
        return ov.convert_model(module.eval(), example_input=example)


def compress(nncf: Any, model: Any, weights: str, group_size: int) -> Any:
    """nncf's data-free weight compression: int8 (per channel) or int4 (group-wise).

    int4: a layer whose input size is not a multiple of `group_size` (a Llama down_proj of
    704 inputs at 128) gets the largest power of two >= 32 that divides it (nncf's ADJUST;
    704 -> 64), else int8. nncf's default refuses the whole model instead; the native
    quantize pass pads such a layer's groups."""
    mode = {"int8": nncf.CompressWeightsMode.INT8_ASYM,
            "int4": nncf.CompressWeightsMode.INT4_SYM}[weights]
    extra = {}
    if weights == "int4":
        extra = {"group_size": group_size, "ratio": 1.0,
                 "advanced_parameters": nncf.AdvancedCompressionParameters(
                     group_size_fallback_mode=nncf.GroupSizeFallbackMode.ADJUST)}
    return nncf.compress_weights(model, mode=mode, **extra)


@functools.cache
def shared_core(ov: Any) -> Any:
    """The process's one ``openvino.Core``, kept until the process ends (hence cached).

    Why one: OpenVINO's CPU plugin (2026.4.1) gives the thread that creates a CPU engine (one
    per Core) an alternate signal stack of its own and, when that engine is released, puts back
    the stack it found. Engines released in the order they were made (pipelines dropped, the
    candidates recipe="auto" tried) leave the thread's alternate stack in freed memory, and the
    next signal Python handles (SIGTERM, Ctrl-C: CPython's handlers run on that stack) ends the
    process with SIGSEGV, without a traceback. One Core makes one engine, released at exit
    (docs/passes/openvino.md, tests/test_pass_openvino_sigterm.py)."""
    return ov.Core()


def compile_model(ov: Any, model: Any, precision: str, static_shapes: list | None,
                  extra: dict | None = None) -> Any:
    """Compile for the CPU with `precision` ("bf16"/"f32") as the inference precision, one
    stream (latency), torch's thread count; `static_shapes` fixes the input shapes; `extra`
    adds properties (a stateful Llama's KV_CACHE_PRECISION)."""
    if static_shapes is not None:
        model = model.clone()
        model.reshape({p: ov.PartialShape(list(s)) for p, s in zip(model.inputs, static_shapes)})
    config = {"INFERENCE_PRECISION_HINT": precision, "PERFORMANCE_HINT": "LATENCY",
              "NUM_STREAMS": "1", "INFERENCE_NUM_THREADS": str(torch.get_num_threads()),
              **(extra or {})}
    return shared_core(ov).compile_model(model, "CPU", config)
