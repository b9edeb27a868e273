"""``fastpipes run sdxl``: one image per prompt of a prompt file, seeded and resumable.

Outputs under ``--out``: ``images/<n>.png`` (n = the prompt's line, from 00000) and
``settings.json`` with every image's prompt, seed, steps, guidance and size, so any image
can be made again.

>>> summary = fastpipes.run_sdxl("prompts.txt", "out/", model="/models/sdxl-base",
...                              steps=30, recipe="sdxl_bf16")  # doctest: +SKIP
"""
from __future__ import annotations

import io
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, Iterator, Sequence

import torch

from fastpipes.bounds import BOUNDS, check_float, check_int
from fastpipes.errors import InputError
from fastpipes.progress import detail
from fastpipes.run.base import Flag, Item, Job
from fastpipes.run.jobs import RunSummary, run_job
from fastpipes.run.outdir import OutDir
from fastpipes.run.prompts import read_prompts
from fastpipes.sdxl.build import SIZES

PER_PROMPT = {"seed", "steps", "guidance", "width", "height", "negative_prompt"}


SIZE_HELP = ("pixels, a multiple of 8 (default: the model's: 1024 for SDXL and --random-weights "
             "full, 256 for small, 64 for tiny)")


@dataclass(frozen=True, kw_only=True)
class SdxlJob(Job):
    """Generate an image per prompt. Sizes default to the model's own (1024 for SDXL
    base); the seed of prompt n is ``seed + n`` unless its JSON line gives one."""

    prompts: str = ""  # a file: one prompt per line, or JSON lines (keys: PER_PROMPT)
    steps: int = 30
    guidance: float = 5.0
    width: int | None = None
    height: int | None = None
    negative_prompt: str = ""

    family: ClassVar[str] = "sdxl"
    result_file: ClassVar[str] = "settings.json"
    input_fields: ClassVar[tuple[str, ...]] = ("prompts",)
    SUMMARY: ClassVar[str] = "generate an image per prompt"
    MODEL_HELP: ClassVar[str] = ("a local diffusers SDXL directory (with --random-weights: "
                                 "tiny, small or full)")
    FLAGS: ClassVar[tuple[Flag, ...]] = (
        Flag("--prompts", required=True, metavar="FILE",
             help="one prompt per line, or JSON lines with prompt and optional seed, steps, "
                  "guidance, width, height, negative_prompt"),
        Flag("--steps", type=int, default=30,
             help="denoising steps per image (default 30; fewer is faster and rougher)"),
        Flag("--guidance", type=float, default=5.0,
             help="classifier-free guidance scale (default 5.0)"),
        Flag("--width", type=int, help=SIZE_HELP),
        Flag("--height", type=int, help=SIZE_HELP),
        Flag("--negative-prompt", default=""))

    @classmethod
    def run_cli(cls, flags: dict[str, Any], common: dict[str, Any]) -> RunSummary:
        return run_sdxl(**flags, **common)

    def check(self) -> None:
        self.check_model(SIZES, "a local diffusers SDXL directory with model_index.json")
        _check_settings(self.steps, self.guidance, self.width, self.height,
                        self.negative_prompt, self.seed)

    def items(self) -> list[Item]:
        items = []
        for n, entry in enumerate(read_prompts(self.prompts, PER_PROMPT)):
            settings = {"seed": self.seed + n, "steps": self.steps, "guidance": self.guidance,
                        "width": self.width, "height": self.height,
                        "negative_prompt": self.negative_prompt}
            settings.update({k: v for k, v in entry.items() if k not in ("prompt", "line")})
            if not settings.get("error"):  # a bad setting fails its line before any work
                try:
                    _check_settings(*(settings[k] for k in ("steps", "guidance", "width",
                                                            "height", "negative_prompt",
                                                            "seed")))
                except InputError as e:
                    settings["error"] = f"line {entry['line']}: {e}"
            items.append(self.make_item(f"{n:05d}", {"prompt": entry["prompt"], "line": entry["line"],
                                                     "name": f"line {entry['line']}", **settings}))
        return items

    def build(self) -> Any:
        if self.random_weights:
            pipe = self.build_pipeline(size=self.model, seed=self.seed)
        else:
            pipe = self.build_pipeline(model=str(Path(self.model).expanduser()))
        pipe.set_progress_bar_config(disable=True)  # the job shows its own progress
        return pipe.to(self.device)

    def modules(self, pipe: Any) -> dict[str, Any]:
        return {k: m for k, m in pipe.components.items() if isinstance(m, torch.nn.Module)}

    def warm_up(self, pipe: Any) -> None:
        # same size and guidance (CFG doubles the UNet batch) as the real calls: the
        # compiled graphs of the first item are then already built
        self._generate(pipe, "warm-up", {"seed": 0, "steps": min(self.steps, 2),
                                         "guidance": self.guidance, "width": self.width,
                                         "height": self.height, "negative_prompt": ""})

    def process(self, pipe: Any, item: Item) -> tuple[dict[str, bytes], dict]:
        p = item.payload
        _check_settings(p["steps"], p["guidance"], p["width"], p["height"],
                        p["negative_prompt"], p["seed"])
        image = self._generate(pipe, p["prompt"], p)
        buf = io.BytesIO()
        image.save(buf, format="PNG")
        rel = f"images/{item.key}.png"
        settings = {k: p[k] for k in ("prompt", "line", "seed", "steps", "guidance",
                                      "negative_prompt")}
        return {rel: buf.getvalue()}, {"file": rel, **settings, "width": image.width,
                                       "height": image.height}

    @torch.no_grad()
    def _generate(self, pipe: Any, prompt: str, s: dict) -> Any:
        gen = torch.Generator(device=self.device).manual_seed(int(s["seed"]))
        steps = int(s["steps"])

        def step_done(pipe: Any, i: int, t: Any, tensors: dict) -> dict:
            # a CPU image takes minutes: the job's heartbeat line says how far it got
            detail(f"denoising step {i + 1}/{steps} done" if i + 1 < steps else
                   "denoised; decoding the image")
            return {}

        detail("encoding the prompt")
        out = pipe(prompt=prompt, negative_prompt=s.get("negative_prompt") or None,
                   num_inference_steps=steps, guidance_scale=float(s["guidance"]),
                   width=s.get("width"), height=s.get("height"), generator=gen,
                   output_type="pil", callback_on_step_end=step_done)
        return out.images[0]

    def finalize(self, out: OutDir, records: Iterator[dict]) -> None:
        out.write_json(self.result_file, {
            "family": "sdxl", "model": self.model, "random_weights": self.random_weights,
            "images": list(records)})


def _check_settings(steps: Any, guidance: Any, width: Any, height: Any,
                    negative_prompt: Any = "", seed: Any = 0) -> None:
    """InputError for a setting out of :data:`fastpipes.bounds.BOUNDS` (NaN included)."""
    check_int("steps", steps)
    check_float("guidance", guidance)
    for name, v in (("width", width), ("height", height)):
        if v is not None:  # None: the model's own size
            check_int(name, v)
    check_int("seed", seed)
    if not isinstance(negative_prompt, str) or \
            len(negative_prompt) > BOUNDS["prompt_chars"].hi:
        raise InputError(f"negative_prompt must be text of at most "
                         f"{int(BOUNDS['prompt_chars'].hi):,} characters")


def run_sdxl(prompts: str | Path, out: str | Path, *, model: str | None = None,
             random_weights: bool = False, steps: int = 30, guidance: float = 5.0,
             width: int | None = None, height: int | None = None, negative_prompt: str = "",
             recipe: str = "auto", overrides: Sequence[str] = (), seed: int = 0,
             device: str = "cpu", engine: str = "local", actors: int = 1,
             cpus_per_actor: float | None = None, address: str | None = None,
             progress: bool = True) -> RunSummary:
    """An image per line of `prompts` into `out` (resumable; see the module docstring).

    `model` is a local diffusers SDXL directory, or with `random_weights` a shape name
    (tiny, small, full) for trying the job out.

    >>> s = fastpipes.run_sdxl("prompts.txt", "out/", model="tiny", random_weights=True,
    ...                        steps=2, recipe="sdxl_fp32_fast")  # doctest: +SKIP
    """
    job = SdxlJob(out=str(out), prompts=str(prompts), model=model,
                  random_weights=random_weights, steps=steps, guidance=guidance, width=width,
                  height=height, negative_prompt=negative_prompt, recipe=recipe,
                  overrides=tuple(overrides), seed=seed, device=device)
    return run_job(job, engine, actors, cpus_per_actor, address, progress)


