"""Reference models: their specs, and their directories in the fastpipes cache, trained
and saved on first use.

A directory is a normal Hugging Face one (``$FASTPIPES_CACHE_DIR/models/llama-<name>/``)::

    config.json, generation_config.json, model.safetensors   (save_pretrained)
    tokenizer_config.json                                     (ByT5Tokenizer: byte b -> id b + 3)
    heldout.bin                                               (the held-out text, raw bytes)
    reference.json                                            (spec, corpus, losses, versions)

>>> path = reference_dir("trained-tiny")     # doctest: +SKIP  (minutes the first time)
"""
from __future__ import annotations

import json
import math
import os
import shutil
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path

import torch

from fastpipes.cache import part_dir, private_dir
from fastpipes.errors import InputError
from fastpipes.llama.reference.corpus import encode, stdlib_corpus
from fastpipes.llama.reference.fidelity import (heldout_batches, perplexity,
                                                          teacher_forced)
from fastpipes.llama.reference.training import TrainConfig, train
from fastpipes.progress import heartbeat

VOCAB = 272  # ByT5's 259 ids (3 special + 256 bytes), padded to a multiple of 16
# how a user makes the training shorter, said before it starts (callers such as the
# benchmark name their own option)
SHORTEN = ("build it first with fewer steps: python -m fastpipes.llama.reference "
           "build --steps N (or --max-minutes M)")
METADATA = "reference.json"  # written last: a directory without it is incomplete
HELDOUT_WINDOWS = 64  # windows of `context` bytes the stored held-out loss is measured on


@dataclass(frozen=True)
class ReferenceSpec:
    """Shape, training and corpus of one reference model. All of it goes into
    reference.json; a stored model of another spec is rebuilt, except that the number of
    steps it was trained for (``build --steps`` / ``--max-minutes``) is the user's choice."""

    hidden: int = 256
    layers: int = 4
    heads: int = 4
    kv_heads: int = 2
    # 704 is deliberately not a multiple of the int4 group size (128): the quantize pass
    # must pad K for the down_proj layers instead of leaving them FP32
    intermediate: int = 704
    context: int = 256
    steps: int = 180  # 16 x 256 x 180 = 737k bytes read: minutes on an idle 2-core machine
    batch: int = 16
    lr: float = 3e-3
    seed: int = 0
    train_bytes: int = 16 << 20  # caps on the text read (the stdlib has ~11 MB of .py)
    heldout_bytes: int = 256 << 10
    heldout_every: int = 20  # 1 file in ~20 is held out

    def llama_config(self):
        from transformers import LlamaConfig

        return LlamaConfig(
            hidden_size=self.hidden, num_hidden_layers=self.layers,
            num_attention_heads=self.heads, num_key_value_heads=self.kv_heads,
            intermediate_size=self.intermediate, vocab_size=VOCAB, tie_word_embeddings=True,
            max_position_embeddings=4 * self.context, rms_norm_eps=1e-5,
            rope_parameters={"rope_type": "default", "rope_theta": 10000.0},
            bos_token_id=None, eos_token_id=1, pad_token_id=0, attn_implementation="sdpa")

    def train_config(self) -> TrainConfig:
        return TrainConfig(steps=self.steps, batch=self.batch, context=self.context,
                           lr=self.lr, seed=self.seed)


REFERENCE_MODELS: dict[str, ReferenceSpec] = {"trained-tiny": ReferenceSpec()}


def spec_of(name: str) -> ReferenceSpec:
    if name not in REFERENCE_MODELS:
        raise InputError(f"unknown reference model {name!r}; allowed: {', '.join(REFERENCE_MODELS)}")
    return REFERENCE_MODELS[name]


def stored_dir(name: str) -> Path:
    """Where reference model `name` lives (built or not)."""
    return part_dir("models") / f"llama-{name}"


def read_metadata(path: str | Path) -> dict | None:
    """reference.json of a built reference directory, or None if there is none (yet)."""
    try:
        return json.loads((Path(path) / METADATA).read_text())
    except (OSError, ValueError):
        return None


def trained_for(meta: dict) -> str:
    """How many steps a stored model was really trained for, in words (its spec's
    ``steps`` is the plan; a time budget may have cut it)."""
    ran, planned = meta.get("steps"), meta.get("steps_planned")
    cut = f"; {meta['budget']}" if meta.get("budget") else ""
    secs = meta.get("seconds")
    took = f" in {secs:.0f} s" if isinstance(secs, (int, float)) else ""
    return f"trained for {ran} steps{took} (planned {planned}{cut})"


def _identity(spec: dict) -> dict:
    return {k: v for k, v in spec.items() if k != "steps"}


HASHED = ("model.safetensors", "heldout.bin")  # their sha256 is recorded in reference.json


def _file_hashes(path: Path) -> dict[str, str]:
    import hashlib

    out = {}
    for name in HASHED:
        with open(path / name, "rb") as f:
            out[name] = hashlib.file_digest(f, "sha256").hexdigest()
    return out


def is_current(path: str | Path, spec: ReferenceSpec) -> bool:
    """Whether `path` holds a complete model of `spec` (trained for any number of steps)
    whose files still hash as recorded: a damaged one is rebuilt, with a warning, never
    used silently (a directory from before the hashes has none to check)."""
    meta = read_metadata(path)
    if meta is None or _identity(meta.get("spec", {})) != _identity(asdict(spec)):
        return False
    try:
        damaged = "sha256" in meta and _file_hashes(Path(path)) != meta["sha256"]
    except OSError:
        damaged = True
    if damaged:
        print(f"fastpipes: the stored reference model {path} is damaged (its files do not "
              "match the hashes in reference.json); building it again", file=sys.stderr)
    return not damaged


def reference_dir(name: str = "trained-tiny", force: bool = False,
                  max_minutes: float | None = None, progress: bool = True,
                  steps: int | None = None, shorten: str = SHORTEN) -> Path:
    """The directory of reference model `name`, trained and saved on first use.

    Two processes never train it at once (a file lock: the second waits, then reuses the
    first one's); the directory appears complete or not at all (built under a temporary
    name, then renamed). A stored model of another spec is rebuilt; `force` rebuilds.
    When it is trained: `steps` replaces the spec's step count, and `max_minutes` fits
    the training into about that time (fewer steps; see train()). With `progress`, a
    training says so before it starts, with how to make it shorter (`shorten`), and
    its ETA once the first steps have been timed.
    """
    spec = spec_of(name)
    if steps is not None:
        if steps < 1:
            raise InputError(f"steps must be >= 1, got {steps}")
        spec = replace(spec, steps=steps)
    final = stored_dir(name)
    if not force and is_current(final, spec):
        return final
    from filelock import FileLock, Timeout  # third-party (a dependency of transformers)

    private_dir(final.parent)  # 0700, as every cache part (docs/caches.md)
    lock = FileLock(str(final.parent / f".llama-{name}.lock"))
    try:
        lock.acquire(timeout=0)
    except Timeout:
        print(f"waiting for another process that is building {final} ...", file=sys.stderr)
        lock.acquire()
    try:
        if not force and is_current(final, spec):  # built while we waited
            return final
        building = final.parent / ".building" / name  # ours alone while we hold the lock
        shutil.rmtree(building, ignore_errors=True)  # what a killed build left behind
        tmp = building / str(os.getpid())
        try:
            build_reference(spec, tmp, max_minutes=max_minutes, progress=progress, name=name,
                            shorten=shorten)
            if final.exists():
                os.rename(final, building / "old")
            os.rename(tmp, final)
        finally:
            shutil.rmtree(building, ignore_errors=True)
        return final
    finally:
        lock.release()


def build_reference(spec: ReferenceSpec, dest: str | Path, max_minutes: float | None = None,
                    progress: bool = True, name: str = "",
                    shorten: str = SHORTEN) -> tuple[torch.nn.Module, dict]:
    """Train a model to `spec` and write its directory at `dest`; returns the trained
    model (eval mode) and its metadata."""
    import transformers
    from transformers import ByT5Tokenizer, LlamaForCausalLM

    dest = Path(dest)
    with heartbeat("reference", "reading the training text (Python's standard library)",
                   enabled=progress):
        corpus = stdlib_corpus(spec.train_bytes, spec.heldout_bytes, spec.heldout_every,
                               min_bytes=spec.context + 1)
    torch.manual_seed(spec.seed)
    model = LlamaForCausalLM(spec.llama_config())
    n_params = sum(p.numel() for p in model.parameters())
    if progress:
        budget = f", fitted into about {max_minutes:g} min" if max_minutes else ""
        print(f"fastpipes: the reference Llama {name or 'model'} is not built yet: training it "
              f"now, once (later runs reuse it): {n_params / 1e6:.2f} M parameters, "
              f"{corpus.info['train_bytes'] / 2**20:.1f} MiB of stdlib text, {spec.steps} "
              f"steps of {spec.batch} x {spec.context} bytes{budget} -> {dest}. The ETA follows "
              f"the first steps; to shorten it, stop (Ctrl-C) and {shorten}", file=sys.stderr,
              flush=True)
    stats = train(model, corpus.train, spec.train_config(),
                  max_seconds=None if max_minutes is None else 60 * max_minutes,
                  progress=progress)
    tokens = heldout_batches(encode(corpus.heldout), spec.context,
                             min(HELDOUT_WINDOWS, len(corpus.heldout) // spec.context))
    with heartbeat("reference", f"held-out loss over {len(tokens)} windows", enabled=progress):
        heldout_loss = math.log(perplexity(teacher_forced(model, tokens), tokens))
    dest.mkdir(parents=True, exist_ok=True)
    model.generation_config.pad_token_id = 0
    model.save_pretrained(dest)  # config.json + model.safetensors
    ByT5Tokenizer(extra_ids=0).save_pretrained(dest)
    (dest / "heldout.bin").write_bytes(corpus.heldout)
    meta = {"name": name, "spec": asdict(spec), "parameters": n_params, "corpus": corpus.info,
            "heldout_file_names": corpus.heldout_files, **stats,
            "heldout_loss": heldout_loss, "heldout_positions": int(tokens[:, 1:].numel()),
            "loss_unit": "nats per byte", "threads": torch.get_num_threads(),
            "torch": torch.__version__, "transformers": transformers.__version__,
            "created": time.strftime("%Y-%m-%d %H:%M:%S"), "sha256": _file_hashes(dest)}
    (dest / METADATA).write_text(json.dumps(meta, indent=1) + "\n")
    if progress:
        print(f"done in {stats['seconds']:.0f} s: train loss {stats['train_loss']:.3f}, "
              f"held-out loss {heldout_loss:.3f} nats/byte"
              + (f" ({stats['budget']})" if stats["budget"] else ""), file=sys.stderr)
    return model, meta
