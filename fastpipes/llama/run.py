"""``fastpipes run llama``: complete every prompt of a file; greedy, or sampled with a seed.

Output under ``--out``: ``completions.jsonl``, one line per prompt in input order, with the
completion, token counts, seconds and tokens/s.

>>> summary = fastpipes.run_llama("prompts.jsonl", "out/", model="/models/Llama-3.2-1B",
...                               max_new_tokens=64, recipe="llama_woq_int8")  # doctest: +SKIP
"""
from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import torch

from fastpipes.bounds import BOUNDS, check_float, check_int, read_capped
from fastpipes.errors import InputError
from fastpipes.llama.pipeline import LLAMA_SHAPES, load_tokenizer
from fastpipes.passes import openvino_llama as llama_ov
from fastpipes.passes.openvino import converts_llama
from fastpipes.run.base import Flag, Item, Job, job_recipe
from fastpipes.run.jobs import RunSummary, run_job
from fastpipes.run.outdir import OutDir, atomic_write_lines
from fastpipes.run.prompts import read_prompts

PER_PROMPT = {"seed", "max_new_tokens"}


class ByteTokenizer:
    """UTF-8 bytes as token ids (id = byte + 3; 0-2 are special). Only for
    ``--random-weights``, whose models have no tokenizer: the completions are noise, the
    job and its timing are real."""

    offset = 3

    def __init__(self, bos_token_id: int | None, eos_token_id: int | None):
        self.bos_token_id, self.eos_token_id = bos_token_id, eos_token_id
        self.pad_token_id = eos_token_id

    def __call__(self, text: str, return_tensors: str = "pt") -> dict:
        ids = [b + self.offset for b in text.encode("utf-8")]
        if self.bos_token_id is not None:
            ids = [self.bos_token_id] + ids
        t = torch.tensor([ids])
        return {"input_ids": t, "attention_mask": torch.ones_like(t)}

    def decode(self, ids: Sequence[int], skip_special_tokens: bool = True) -> str:
        data = bytes(i - self.offset for i in ids if self.offset <= i < 256 + self.offset)
        return data.decode("utf-8", errors="replace")


@dataclass
class LlamaPipe:
    model: Any  # a transformers *ForCausalLM: what accelerate() gets
    tokenizer: Any


@dataclass(frozen=True, kw_only=True)
class LlamaJob(Job):
    """Complete prompts. `sample` draws with `temperature` / `top_p` from a seed per prompt
    (``seed + n`` unless its JSON line gives one); otherwise decoding is greedy."""

    prompts: str = ""  # a file: one prompt per line, or JSON lines (keys: PER_PROMPT)
    max_new_tokens: int = 128
    sample: bool = False
    temperature: float = 0.8
    top_p: float = 0.95

    family: ClassVar[str] = "llama"
    result_file: ClassVar[str] = "completions.jsonl"
    input_fields: ClassVar[tuple[str, ...]] = ("prompts",)
    SUMMARY: ClassVar[str] = "complete prompts"
    MODEL_HELP: ClassVar[str] = ("a local Hugging Face model directory with a tokenizer (with "
                                 "--random-weights: tiny, llama-3.2-1b or llama-2-7b)")
    FLAGS: ClassVar[tuple[Flag, ...]] = (
        Flag("--prompts", required=True, metavar="FILE",
             help="one prompt per line, or JSON lines with prompt and optional seed, "
                  "max_new_tokens"),
        Flag("--max-new-tokens", type=int, default=128),
        Flag("--sample", action="store_true",
             help="sample (seeded per prompt) instead of greedy decoding"),
        Flag("--temperature", type=float, default=0.8),
        Flag("--top-p", type=float, default=0.95))

    @classmethod
    def run_cli(cls, flags: dict[str, Any], common: dict[str, Any]) -> RunSummary:
        return run_llama(**flags, **common)

    def check(self) -> None:
        self.check_model(tuple(LLAMA_SHAPES), "a local Hugging Face model directory with "
                                              "config.json, weights and a tokenizer")
        context = self.context()
        check_int("max_new_tokens", self.max_new_tokens, "--max-new-tokens", hi=context - 1,
                  extra=_context_note(context))
        check_float("temperature", self.temperature, "--temperature")  # also when greedy:
        check_float("top_p", self.top_p, "--top-p")  # a NaN given is a mistake either way
        self._check_recipe_decodes()

    def _check_recipe_decodes(self) -> None:
        """A recipe that runs the decoder in OpenVINO decodes greedily: --sample with it is
        refused here, not at warm-up after the conversion. What the converted generate
        takes is said once, by fastpipes.passes.openvino_llama.refusal."""
        recipe = job_recipe(self)  # a bad recipe fails here as in run_job
        if recipe == "auto" or not converts_llama(recipe):
            return
        why = llama_ov.refusal(self.generate_options())
        if why:
            flags = f"--recipe {self.recipe}" + (" with --sample" if self.sample else "")
            raise InputError(f"{flags}: this recipe runs the Llama decoder in OpenVINO, and "
                             f"{why}. Allowed: this recipe without "
                             "--sample (greedy), or --sample with a native recipe (e.g. "
                             "llama_woq_int4). Nothing was run")

    def auto_overrides(self) -> list[str]:
        """With recipe auto: the recipes whose converted generate refuses how this job
        decodes (--sample: the greedy-only OpenVINO ones) are left out of the search, instead
        of winning it and failing at warm-up."""
        from fastpipes.recipe.load import available, load_recipe

        if llama_ov.refusal(self.generate_options()) is None:
            return super().auto_overrides()
        recipes = {name: load_recipe(name) for name in available()}
        refused = sorted(name for name, rec in recipes.items()
                         if rec.family == "llama" and converts_llama(rec))
        return super().auto_overrides() + ([f"auto.exclude=[{','.join(refused)}]"]
                                           if refused else [])

    def generate_options(self) -> dict[str, Any]:
        """How this job decodes: the options every ``generate`` call of it gets."""
        options: dict[str, Any] = {"do_sample": self.sample}
        if self.sample:
            options.update(temperature=self.temperature, top_p=self.top_p)
        return options

    def context(self) -> int:
        """The model's max_position_embeddings (from its shape or config.json), read
        without building it; the bound's own maximum when the config does not say."""
        default = int(BOUNDS["prompt_tokens"].hi) + 1
        if self.random_weights:
            return int(LLAMA_SHAPES[self.model].get("max_position_embeddings", default))
        try:
            config = json.loads(read_capped(Path(self.model).expanduser() / "config.json",
                                            "config.json"))
            value = config.get("max_position_embeddings") or \
                (config.get("text_config") or {}).get("max_position_embeddings")
        except (InputError, ValueError, AttributeError):
            return default  # building the model says what is wrong with its config
        return int(value) if isinstance(value, int) and value > 1 else default

    def items(self) -> list[Item]:
        items, context = [], self.context()
        for n, entry in enumerate(read_prompts(self.prompts, PER_PROMPT)):
            payload = {"prompt": entry["prompt"], "line": entry["line"],
                       "name": f"line {entry['line']}",
                       "seed": entry.get("seed", self.seed + n),
                       "max_new_tokens": entry.get("max_new_tokens", self.max_new_tokens)}
            if entry.get("error"):
                payload["error"] = entry["error"]
            else:  # a bad setting fails its line before any work
                try:
                    check_int("seed", payload["seed"])
                    check_int("max_new_tokens", payload["max_new_tokens"], hi=context - 1,
                              extra=_context_note(context))
                except InputError as e:
                    payload["error"] = f"line {n + 1}: {e}"
            items.append(self.make_item(f"{n:05d}", payload))
        return items

    def build(self) -> LlamaPipe:
        if self.random_weights:
            model = self.build_pipeline(model=self.model, seed=self.seed)
            tok = ByteTokenizer(model.config.bos_token_id, model.config.eos_token_id)
        else:
            path = Path(self.model).expanduser()
            # a weight-only recipe on CPU: quantized layer by layer while the directory is read
            quantize = None if self.recipe in ("auto", "none") or self.device != "cpu" else \
                job_recipe(self).section("quantize")
            model = self.build_pipeline(model=str(path), quantize=quantize)
            tok = load_tokenizer(path)
            if tok is None:
                raise InputError(f"{path} has no tokenizer (tokenizer.json or "
                                 "tokenizer_config.json); fastpipes run llama needs one")
        return LlamaPipe(model.to(self.device), tok)

    def target(self, pipe: LlamaPipe) -> Any:
        return pipe.model

    def warm_up(self, pipe: LlamaPipe) -> None:
        self._generate(pipe, "Hello", seed=0, max_new_tokens=2)

    def process(self, pipe: LlamaPipe, item: Item) -> tuple[dict[str, bytes], dict]:
        p = item.payload
        n = p["max_new_tokens"]
        context = int(getattr(pipe.model.config, "max_position_embeddings", 0) or
                      BOUNDS["prompt_tokens"].hi + 1)
        check_int("max_new_tokens", n, hi=context - 1, extra=_context_note(context))
        n_prompt, new, secs = self._generate(pipe, p["prompt"], int(p["seed"]), n)
        eos = _ids(pipe.tokenizer.eos_token_id) | _ids(pipe.model.generation_config.eos_token_id)
        record = {"line": p["line"], "prompt": p["prompt"],
                  "completion": pipe.tokenizer.decode(new, skip_special_tokens=True),
                  "prompt_tokens": n_prompt, "new_tokens": len(new),
                  "finish": "eos" if new and new[-1] in eos else "length",
                  "seconds": secs, "tokens_per_s": len(new) / secs if secs > 0 else None,
                  "decoding": "sample" if self.sample else "greedy"}
        if self.sample:
            record.update(seed=p["seed"], temperature=self.temperature, top_p=self.top_p)
        return {}, record

    @torch.no_grad()
    def _generate(self, pipe: LlamaPipe, prompt: str, seed: int,
                  max_new_tokens: int) -> tuple[int, list[int], float]:
        enc = pipe.tokenizer(prompt, return_tensors="pt")
        context = int(getattr(pipe.model.config, "max_position_embeddings", 0) or
                      BOUNDS["prompt_tokens"].hi + 1)
        n_prompt = enc["input_ids"].shape[1]
        check_int("prompt_tokens", n_prompt, "the prompt's tokens",
                  hi=context - max_new_tokens,
                  extra=f" (the model's context is {context:,} tokens, {max_new_tokens:,} of "
                        "them kept for max_new_tokens)")
        ids = enc["input_ids"].to(self.device)  # [1, P]
        mask = enc["attention_mask"].to(self.device)
        model = pipe.model
        kwargs = self.generate_options()
        pad = pipe.tokenizer.pad_token_id
        if pad is None:  # Llama 3 has none; its generation config lists several eos ids
            pad = model.generation_config.pad_token_id
        if pad is None:
            pad = min(_ids(model.generation_config.eos_token_id), default=None)
        # sampling draws from torch's global generator: seed it, then put it back
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(seed)
            t0 = time.perf_counter()
            seq = model.generate(ids, attention_mask=mask, max_new_tokens=max_new_tokens,
                                 pad_token_id=pad, **kwargs)
            secs = time.perf_counter() - t0
        return ids.shape[1], seq[0, ids.shape[1]:].tolist(), secs

    def finalize(self, out: OutDir, records: Iterator[dict]) -> None:
        atomic_write_lines(out.root / self.result_file, (json.dumps(r) for r in records))


def _context_note(context: int) -> str:
    return f" (below the model's context of {context:,} tokens: max_position_embeddings)"


def _ids(value: int | list[int] | None) -> set[int]:
    """A token id setting (one id, a list of them, or None) as a set."""
    if value is None:
        return set()
    return {int(v) for v in value} if isinstance(value, (list, tuple)) else {int(value)}


def run_llama(prompts: str | Path, out: str | Path, *, model: str | None = None,
              random_weights: bool = False, max_new_tokens: int = 128, sample: bool = False,
              temperature: float = 0.8, top_p: float = 0.95, recipe: str = "auto",
              overrides: Sequence[str] = (), seed: int = 0, device: str = "cpu",
              engine: str = "local", actors: int = 1, cpus_per_actor: float | None = None,
              address: str | None = None, progress: bool = True) -> RunSummary:
    """Complete every prompt of `prompts` (lines or JSON lines) into `out`/completions.jsonl.

    `model` is a local Hugging Face directory (weights + tokenizer), or with
    `random_weights` a shape name (tiny, llama-3.2-1b, llama-2-7b) for trying the job out.

    >>> s = fastpipes.run_llama("prompts.txt", "out/", model="tiny", random_weights=True,
    ...                         recipe="llama_woq_int8")  # doctest: +SKIP
    """
    job = LlamaJob(out=str(out), prompts=str(prompts), model=model,
                   random_weights=random_weights, max_new_tokens=max_new_tokens, sample=sample,
                   temperature=temperature, top_p=top_p, recipe=recipe,
                   overrides=tuple(overrides), seed=seed, device=device)
    return run_job(job, engine, actors, cpus_per_actor, address, progress)
