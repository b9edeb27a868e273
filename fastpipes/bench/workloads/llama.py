"""Llama benchmark: greedy decode of `new_tokens` after a seeded `prompt_len`-token prompt.

Throughput counts generated tokens; time to first token and the decode rate are extras.
Fidelity is the adapter's: teacher-forced top-1 agreement with FP32 (and held-out
perplexity for the trained reference models). Random-weight models are not judged: their
flat logits make top-1 agreement a coin toss whatever the recipe.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any

import torch

from fastpipes.bench.workloads.base import Workload, WorkloadSpec, register_workload
from fastpipes.errors import BenchmarkError
from fastpipes.pipelines.llama import LLAMA_SHAPES, LlamaAdapter, build_llama, decode_weight_bytes


@dataclass
class LlamaOutput:
    sequences: torch.Tensor  # [B, prompt + new]
    ttft_s: float = 0.0
    decode_tokens_per_s: float = 0.0


class _Clock:
    """A generate() streamer that time-stamps every token (one Python call per token)."""

    def __init__(self):
        self.stamps: list[float] = []

    def put(self, value):
        self.stamps.append(time.perf_counter())

    def end(self):
        pass


@register_workload
class LlamaWorkload(Workload):
    family = "llama"
    unit = "tokens"
    bound = "memory"
    OPTIONS = {"prompt_len": (int, "prompt tokens (default 32)"),
               "new_tokens": (int, "tokens generated per timed run (default 64)"),
               "dtype": (str, "float32 (the baseline's) or bfloat16, to build shapes whose FP32 "
                              "form does not fit in memory (then with --no-baseline)")}

    def __init__(self, spec: WorkloadSpec):
        super().__init__(spec)
        if spec.size == "tiny" and spec.model not in (None, "tiny"):
            raise BenchmarkError(f"--size tiny builds the tiny Llama; it cannot be combined with "
                                 f"--model {spec.model} (drop one of them)")
        self.model_name = spec.model or ("tiny" if spec.size == "tiny" else "llama-3.2-1b")
        self.prompt_len = int(spec.options.get("prompt_len", 32))
        self.new_tokens = int(spec.options.get("new_tokens", 64))
        if self.prompt_len < 1 or self.new_tokens < 2:
            raise BenchmarkError(f"prompt_len must be >= 1 and new_tokens >= 2 (got "
                                 f"{self.prompt_len}, {self.new_tokens})")
        # dtype the model is built in: float32 (the baseline's), or bfloat16 for shapes whose
        # FP32 form does not fit in memory (runs without a baseline; see run_benchmark)
        self.build_dtype = str(spec.options.get("dtype", "float32"))
        if self.build_dtype not in ("float32", "bfloat16"):
            raise BenchmarkError(f"llama option dtype must be float32 or bfloat16, "
                                 f"got {self.build_dtype!r}")

    @property
    def random_weights(self) -> bool:
        return self.model_name in LLAMA_SHAPES

    def describe(self) -> str:
        built = "" if self.build_dtype == "float32" else f" (built in {self.build_dtype})"
        weights = ", random weights" if self.random_weights else ""
        return (f"{self.model_name}{built}{weights}: {self.prompt_len} prompt + "
                f"{self.new_tokens} new tokens, greedy, batch {self.spec.batch_size}")

    def build(self) -> Any:
        return build_llama(self.model_name, seed=self.spec.seed,
                           dtype=getattr(torch, self.build_dtype))

    def inputs(self, pipe: Any) -> dict[str, Any]:
        return LlamaAdapter(pipe).example_inputs(self.prompt_len, self.new_tokens,
                                                 self.spec.batch_size, self.spec.seed)

    def run(self, pipe: Any, inputs: dict[str, Any]) -> LlamaOutput:
        clock = _Clock()
        t0 = time.perf_counter()
        seq = LlamaAdapter(pipe).call(inputs, streamer=clock)
        stamps = clock.stamps  # [prompt, token 1, token 2, ...]
        ttft = stamps[1] - t0 if len(stamps) > 1 else 0.0
        decode = (len(stamps) - 2) / (stamps[-1] - stamps[1]) if len(stamps) > 2 else 0.0
        return LlamaOutput(seq, ttft, decode)

    def items(self, inputs: dict[str, Any]) -> int:
        return self.spec.batch_size * self.new_tokens

    def view(self, pipe: Any, inputs: dict[str, Any], output: LlamaOutput,
             reference: Any = None) -> dict:
        view = LlamaAdapter(pipe).fidelity_view(inputs, output.sequences, reference)
        if self.random_weights:
            view["random_weights"] = True
        return view

    def bytes_per_item(self, pipe: Any) -> float:
        return float(decode_weight_bytes(LlamaAdapter(pipe).model))

    def extra_metrics(self, pipe: Any, inputs: dict[str, Any]) -> dict[str, float]:
        out = self.run(pipe, inputs)
        return {"ttft_s": out.ttft_s, "decode_tokens_per_s": out.decode_tokens_per_s,
                "weight_bytes_per_token": self.bytes_per_item(pipe)}
