"""Fidelity of a model (and of a recipe applied to it) on a reference model's held-out
text: teacher-forced logits, perplexity, and top-1 agreement with a reference's logits.

>>> tokens = heldout_batches(heldout_tokens(path), seq_len=256, n=32)   # doctest: +SKIP
>>> ref, out = teacher_forced(fp32_model, tokens), teacher_forced(model, tokens)  # +SKIP
>>> perplexity(out, tokens) / perplexity(ref, tokens) - 1, top1_agreement(ref, out)  # +SKIP
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn as nn

from fastpipes.errors import InputError
from fastpipes.llama.reference.corpus import encode
from fastpipes.llama.reference.training import next_token_loss


def heldout_tokens(path: str | Path) -> torch.Tensor:
    """The held-out text of a reference directory (its heldout.bin) as token ids [T]."""
    file = Path(path) / "heldout.bin"
    if not file.is_file():
        raise InputError(f"{path} has no heldout.bin; expected a reference model directory "
                         "(python -m fastpipes.llama.reference build)")
    return encode(file.read_bytes())


def heldout_batches(tokens: torch.Tensor, seq_len: int = 256, n: int | None = None) -> torch.Tensor:
    """The first `n` (default: all) non-overlapping windows of `seq_len`: [n, seq_len]."""
    fit = tokens.numel() // seq_len
    n = fit if n is None else n
    if not 0 < n <= fit:
        raise InputError(f"{tokens.numel()} held-out tokens hold {fit} windows of {seq_len}; "
                         f"asked for {n}")
    return tokens[: n * seq_len].view(n, seq_len)


@torch.no_grad()
def teacher_forced(model: nn.Module, batches: torch.Tensor, chunk: int = 8) -> torch.Tensor:
    """logits [n, S, V] (float32) of `model` reading batches [n, S], `chunk` rows at a time."""
    device = next(model.parameters()).device
    out = [model(input_ids=batches[i: i + chunk].to(device), use_cache=False).logits.float()
           for i in range(0, batches.shape[0], chunk)]
    return torch.cat(out)


def perplexity(logits: torch.Tensor, tokens: torch.Tensor) -> float:
    """exp(mean next-token cross-entropy) of logits [n, S, V] read from tokens [n, S]
    (position i predicts token i + 1; for bytes: e ** nats-per-byte)."""
    return math.exp(next_token_loss(logits, tokens).item())


def top1_agreement(ref_logits: torch.Tensor, logits: torch.Tensor) -> float:
    """Share of positions where two logits [n, S, V] pick the same next token."""
    return (ref_logits.argmax(-1) == logits.argmax(-1)).float().mean().item()
