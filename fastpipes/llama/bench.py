"""Llama benchmark: greedy decode of `new_tokens` after a seeded `prompt_len`-token prompt.

Throughput counts generated tokens; time to first token and the decode rate are extras.
Fidelity is the adapter's: teacher-forced top-1 agreement with FP32 (and held-out
perplexity for the trained reference models). Random-weight models are not judged: their
flat logits make top-1 agreement a coin toss whatever the recipe.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import torch

from fastpipes.bench.workloads.base import Workload, WorkloadSpec
from fastpipes.errors import BenchmarkError
from fastpipes.family import BuildSpec
from fastpipes.llama.pipeline import LLAMA_SHAPES, LlamaAdapter, decode_weight_bytes
from fastpipes.llama.reference import (REFERENCE_MODELS, heldout_batches,
                                                 heldout_tokens, read_metadata, reference_dir,
                                                 stored_dir, teacher_forced)
from fastpipes.recipe.load import load_recipe


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


class LlamaWorkload(Workload):
    unit = "tokens"
    bound = "memory"
    OPTIONS = {"prompt_len": (int, "prompt tokens (default 32)"),
               "heldout_windows": (int, "windows of held-out text (256 tokens each) that a "
                                        "trained reference model's fidelity reads (default 32)"),
               "new_tokens": (int, "tokens generated per timed run (default 64)"),
               "dtype": (str, "float32 (the baseline's) or bfloat16, to build shapes whose FP32 "
                              "form does not fit in memory (then with --no-baseline)"),
               "train_steps": (int, "optimizer steps when --model trained-tiny is not built "
                                    "yet and is trained first (default: its spec's, 180)")}

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
        self.windows = int(spec.options.get("heldout_windows", 32))
        if self.windows < 1:
            raise BenchmarkError(f"heldout_windows must be >= 1, got {self.windows}")
        self.train_steps = spec.options.get("train_steps")
        if self.train_steps is not None and int(self.train_steps) < 1:
            raise BenchmarkError(f"train_steps must be >= 1, got {self.train_steps}")

    @property
    def random_weights(self) -> bool:
        return self.model_name in LLAMA_SHAPES

    @property
    def trained_here(self) -> bool:
        """A reference model trained here (by name, or its directory): it has held-out text
        to judge fidelity on."""
        return self.model_name in REFERENCE_MODELS or (Path(self.model_name) / "heldout.bin").is_file()

    def _dir(self) -> Path:
        name = self.model_name
        return reference_dir(name) if name in REFERENCE_MODELS else Path(name)

    def _heldout(self) -> torch.Tensor:
        return heldout_tokens(self._dir())

    def prepare(self) -> WorkloadSpec:
        """A reference model is trained (once, in the user's cache) before any worker starts;
        the workers, which run on caches of their own, get its directory."""
        if self.model_name in REFERENCE_MODELS:
            shorten = ("run `fastpipes bench llama --model trained-tiny` again with fewer "
                       "steps: --train-steps N")
            return replace(self.spec, model=str(reference_dir(
                self.model_name, steps=self.train_steps, shorten=shorten)))
        return self.spec

    def describe(self) -> str:
        built = "" if self.build_dtype == "float32" else f" (built in {self.build_dtype})"
        weights = (", random weights" if self.random_weights else
                   f", trained here ({self._steps()}held-out fidelity)" if self.trained_here
                   else "")
        return (f"{Path(self.model_name).name}{built}{weights}: {self.prompt_len} prompt + "
                f"{self.new_tokens} new tokens, greedy, batch {self.spec.batch_size}")

    def _steps(self) -> str:
        """'N steps; ' (or 'N of M planned steps; ') a stored reference model was trained
        for, from its metadata, so a table of a short training says so ('' before one)."""
        name = self.model_name
        meta = read_metadata(stored_dir(name) if name in REFERENCE_MODELS else name) or {}
        ran, planned = meta.get("steps"), meta.get("steps_planned")
        if not isinstance(ran, int):
            return ""
        return (f"{ran} steps; " if planned in (None, ran) else
                f"{ran} of {planned} planned steps; ")

    def build_spec(self) -> BuildSpec:
        return replace(super().build_spec(),
                       model=str(self._dir()) if self.trained_here else self.model_name)

    def build_for(self, recipe: Any) -> Any:
        """A directory with a weight-only recipe is quantized layer by layer while it is read
        (its FP32 form never exists whole); everything else is :meth:`build`."""
        if recipe is None or recipe == "auto" or self.random_weights or \
                not self.spec.device.startswith("cpu"):
            return self.build()
        quantize = load_recipe(recipe).section("quantize")
        return self.description.build(replace(self.build_spec(), quantize=quantize))

    def inputs(self, pipe: Any) -> dict[str, Any]:
        inputs = LlamaAdapter(pipe).example_inputs(self.prompt_len, self.new_tokens,
                                                   self.spec.batch_size, self.spec.seed)
        if self.trained_here:  # real text as the prompt: the tail of the held-out split
            text = self._heldout()[-self.prompt_len * self.spec.batch_size:]
            inputs["input_ids"] = text.view(self.spec.batch_size, self.prompt_len).clone()
        inputs["input_ids"] = inputs["input_ids"].to(self.spec.device)
        return inputs

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
        adapter = LlamaAdapter(pipe)
        view = adapter.fidelity_view(inputs, output.sequences, reference)
        if self.random_weights:
            view["random_weights"] = True
        if self.trained_here:  # held-out text, teacher-forced: top-1 and perplexity
            tokens = heldout_batches(self._heldout(), 256, self.windows)
            view["heldout_tokens"] = tokens
            view["heldout_logits"] = teacher_forced(adapter.model, tokens)
        return view

    def bytes_per_item(self, pipe: Any) -> float:
        return float(decode_weight_bytes(LlamaAdapter(pipe).model))

    def extra_metrics(self, pipe: Any, inputs: dict[str, Any]) -> dict[str, float]:
        out = self.run(pipe, inputs)
        return {"ttft_s": out.ttft_s, "decode_tokens_per_s": out.decode_tokens_per_s,
                "weight_bytes_per_token": self.bytes_per_item(pipe)}
