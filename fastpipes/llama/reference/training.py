"""A small, deterministic training loop for the reference Llama models.

Next-token cross-entropy on random windows of one token stream, AdamW with a linear
warm-up and a cosine decay, gradient clipping, a fixed seed. Nothing here is specific to
the corpus or the model beyond ``model(input_ids).logits``.

>>> stats = train(model, stream, TrainConfig(steps=300, batch=16, context=256))  # doctest: +SKIP
"""
from __future__ import annotations

import math
import time
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Iterator

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastpipes.progress import Heartbeat, Lines, bar, terminal


@dataclass(frozen=True)
class TrainConfig:
    steps: int  # optimizer steps planned (a time budget may lower it, see train())
    batch: int  # windows per step
    context: int  # tokens per window (each window predicts `context` next tokens)
    lr: float = 3e-3
    min_lr_ratio: float = 0.1  # the cosine decays to lr * this
    warmup: float = 0.05  # share of the steps with a linear warm-up
    weight_decay: float = 0.1  # on matrices only (not norms, not biases)
    grad_clip: float = 1.0
    seed: int = 0


def lr_at(step: int, total: int, cfg: TrainConfig) -> float:
    """Learning rate of optimizer step `step` (0-based) out of `total`."""
    warm = max(1, round(cfg.warmup * total))
    if step < warm:
        return cfg.lr * (step + 1) / warm
    t = (step - warm) / max(1, total - warm)
    return cfg.lr * (cfg.min_lr_ratio + (1 - cfg.min_lr_ratio) * 0.5 * (1 + math.cos(math.pi * t)))


def sample_batch(stream: torch.Tensor, batch: int, context: int,
                 gen: torch.Generator) -> torch.Tensor:
    """`batch` random windows of `context` tokens from stream [T] -> [batch, context]."""
    starts = torch.randint(0, stream.numel() - context + 1, (batch,), generator=gen)
    return stream[starts[:, None] + torch.arange(context)[None, :]].long()


def next_token_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Mean cross-entropy of logits [B, S, V] read from tokens [B, S] at predicting
    tokens[:, 1:] (the last position predicts nothing we know)."""
    return F.cross_entropy(logits[:, :-1].float().reshape(-1, logits.shape[-1]),
                           tokens[:, 1:].reshape(-1))


def train(model: nn.Module, stream: torch.Tensor, cfg: TrainConfig,
          max_seconds: float | None = None, progress: bool = True) -> dict:
    """Train `model` in place on windows of `stream` ([T] token ids); returns what happened.

    With `max_seconds`, the step count is re-planned once, after a few steps have shown
    how fast this machine is, so the cosine schedule still ends at its minimum; a machine
    that slows down later is stopped at 1.25x the budget. Without it the run is fully
    determined by `cfg` (same seed and steps: the same losses on the same machine).
    """
    gen = torch.Generator().manual_seed(cfg.seed)
    decay = [p for p in model.parameters() if p.dim() >= 2]
    other = [p for p in model.parameters() if p.dim() < 2]
    opt = torch.optim.AdamW([{"params": decay, "weight_decay": cfg.weight_decay},
                             {"params": other, "weight_decay": 0.0}],
                            lr=cfg.lr, betas=(0.9, 0.95), eps=1e-8)
    total, losses, t0, stopped = cfg.steps, [], time.perf_counter(), ""
    model.train()
    with _progress(progress, total) as bar:
        step = 0
        while step < total:
            for group in opt.param_groups:
                group["lr"] = lr_at(step, total, cfg)
            x = sample_batch(stream, cfg.batch, cfg.context, gen)  # [B, S]
            loss = next_token_loss(model(input_ids=x).logits, x)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(model.parameters(), cfg.grad_clip)
            opt.step()
            losses.append(loss.item())
            step += 1
            elapsed = time.perf_counter() - t0
            if step == ETA_AFTER and total > ETA_AFTER:
                bar.note(f"{step} steps took {elapsed:.1f} s ({elapsed / step:.2f} s/step on "
                         f"this machine): about {_eta(elapsed / step * total)} for "
                         f"{total} steps")
            if max_seconds is not None and step == 3 and total > 3:
                fit = max(4, int(max_seconds / (elapsed / step)))
                if fit < total:
                    total = fit
                    stopped = (f"time budget {max_seconds:.0f} s: planned {cfg.steps} steps, "
                               f"{elapsed / step:.2f} s/step here -> {total} steps")
            if max_seconds is not None and elapsed > 1.25 * max_seconds and step < total:
                stopped = f"stopped at step {step} of {total}: past 1.25x the time budget"
                total = step
            bar.update(step, total, losses[-1], elapsed, step * cfg.batch * cfg.context)
    model.eval()
    tail = losses[-max(1, min(10, len(losses))):]
    return {"steps": step, "steps_planned": cfg.steps, "seconds": time.perf_counter() - t0,
            "tokens": step * cfg.batch * cfg.context,
            "train_loss": sum(tail) / len(tail), "first_loss": losses[0], "budget": stopped}


# ---- progress ---------------------------------------------------------------------------

ETA_AFTER = 3  # steps timed before the ETA is said (the first one also warms up)


def _eta(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.0f} min"


class _Quiet:
    def update(self, step: int, total: int, loss: float, elapsed: float, tokens: int) -> None:
        ...

    def note(self, text: str) -> None:
        ...


class _Lines(_Quiet):
    """Plain lines (logs, CI): about every 10 s and at the end (fastpipes.progress), also
    within a step that outlasts that (a heartbeat repeats the last step's line)."""

    def __init__(self, total: int):
        self.lines = Lines("train")
        self.text = f"step 0/{total}: the first step (it also warms up)"

    def note(self, text):
        self.lines.note(text)

    def update(self, step, total, loss, elapsed, tokens):
        self.text = (f"step {step}/{total}  loss {loss:.3f}  {tokens / elapsed:,.0f} tokens/s  "
                     f"ETA {elapsed / step * (total - step):.0f} s")
        if step == total:
            self.lines.say(self.text)
        else:
            self.lines.tick(self.text)


class _Rich(_Quiet):
    def __init__(self, progress, total):
        self.p = progress
        self.task = progress.add_task("training", total=total, loss=float("nan"), tok_s=0.0)

    def note(self, text):
        self.p.console.print(f"[train] {text}")

    def update(self, step, total, loss, elapsed, tokens):
        self.p.update(self.task, completed=step, total=total, loss=loss, tok_s=tokens / elapsed)


@contextmanager
def _progress(enabled: bool, total: int) -> Iterator[_Quiet]:
    if not enabled:
        yield _Quiet()
        return
    console = terminal()
    if console is None:
        lines = _Lines(total)
        beat = Heartbeat(lines.lines, lambda: lines.text).start()
        try:
            yield lines
        finally:
            beat.stop()
        return
    from rich.progress import (BarColumn, MofNCompleteColumn, TextColumn, TimeElapsedColumn,
                               TimeRemainingColumn)

    with bar(console, TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
             TextColumn("loss {task.fields[loss]:.3f}"),
             TextColumn("{task.fields[tok_s]:,.0f} tok/s"), TimeElapsedColumn(),
             TextColumn("ETA"), TimeRemainingColumn()) as progress:
        yield _Rich(progress, total)
