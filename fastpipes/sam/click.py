"""SAM click benchmark: one predictor click (prompt encoder + mask decoder + postprocess)
from a fixed, seeded image embedding, as people use SAM interactively (set the image once,
then click, click, click).

``fastpipes bench sam --workload click --iters 30`` times ``SamPredictor.predict`` per
configuration; its extras break a click into its parts (prompt encoder, mask decoder, and
for a decoder that runs eagerly in PyTorch its two-way transformer and upscaling,
postprocess) with the Python overhead as the wall time minus the parts, and time the other
click kinds (single / multimask, box) of the same configuration. Fidelity: mask IoU against FP32 eager's masks
decoded from the same embedding for the same prompts.
"""
from __future__ import annotations

import statistics
import time
from typing import Any, Callable

import numpy as np
import torch

from fastpipes.errors import BenchmarkError
from fastpipes.fidelity import Fidelity, judge
from fastpipes.sam.click_casts import weight_casts_per_call
from fastpipes.sam.inputs import mask_iou, seeded_features
from fastpipes.sam.pipeline import SAM_BARS, SamShape
from fastpipes.sam.predictor import SamPredictor
from fastpipes.recipe.schema import PrecisionClass

PROMPTS = ("point", "points", "box")


def click_prompts(kind: str, height: int, width: int, seed: int, n: int = 1) -> list[dict]:
    """`n` seeded click prompts of `kind` (point: one foreground point; points: two
    foreground and one background point; box: one XYXY box) in original-image pixels."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        xy = rng.uniform(0.1, 0.9, (3, 2)) * (width, height)
        if kind == "point":
            out.append({"point_coords": xy[:1], "point_labels": np.array([1])})
        elif kind == "points":
            out.append({"point_coords": xy, "point_labels": np.array([1, 1, 0])})
        else:
            lo, hi = np.minimum(xy[0], xy[1]), np.maximum(xy[0], xy[1])
            out.append({"box": np.concatenate([lo, hi])})
    return out


def seeded_features(sam: torch.nn.Module, seed: int) -> torch.Tensor:
    """[1, C, h', w'] unit-variance embedding (the neck ends in a LayerNorm2d, so encoder
    outputs are about unit scale per position), the same in every process."""
    c, (h, w) = sam.prompt_encoder.embed_dim, sam.prompt_encoder.image_embedding_size
    return torch.randn(1, c, h, w, generator=torch.Generator().manual_seed(seed))


class _PartTimer:
    """Times the predictor's click parts by shadowing its part methods on the instance (the
    model's modules are untouched: a compiled decoder sees no new hooks, no recompile)."""

    PARTS = ("prompt_encoder", "mask_decoder", "postprocess")

    def __init__(self, pred: SamPredictor):
        self.pred, self.times = pred, {p: [] for p in self.PARTS}

    def _timed(self, part: str, fn: Callable) -> Callable:
        def call(*args, **kwargs):
            t0 = time.perf_counter()
            out = fn(*args, **kwargs)
            self.times[part].append(time.perf_counter() - t0)
            return out
        return call

    def __enter__(self) -> "_PartTimer":
        for part in self.PARTS:
            setattr(self.pred, f"_{part}", self._timed(part, getattr(self.pred, f"_{part}")))
        return self

    def __exit__(self, *exc) -> None:
        for part in self.PARTS:
            delattr(self.pred, f"_{part}")


def _decoder_split(pred: SamPredictor, click: Callable[[], Any], iters: int) -> dict[str, float]:
    """Median ms of the eager decoder's two-way transformer and output upscaling (forward
    hooks); {} for a decoder that runs as one graph, where these parts are not PyTorch calls:
    compiled (torch.compile fuses them), or converted (the openvino pass replaces the
    decoder's ``forward`` with a call of its OpenVINO model)."""
    md = pred.model.mask_decoder
    if getattr(md, "_compiled_call_impl", None) is not None or "forward" in vars(md):
        return {}
    times: dict[str, list[float]] = {"transformer": [], "upscaling": []}
    handles = []
    for name, mod in (("transformer", md.transformer), ("upscaling", md.output_upscaling)):
        start: list[float] = []
        handles.append(mod.register_forward_pre_hook(lambda *_, s=start: s.append(time.perf_counter())))
        handles.append(mod.register_forward_hook(
            lambda *_, s=start, n=name: times[n].append(time.perf_counter() - s.pop())))
    try:
        for _ in range(iters):
            click()
    finally:
        for h in handles:
            h.remove()
    # a part that never ran as a module (another pass replaced it) has no time to report
    return {f"click_{k}_ms": statistics.median(v) * 1e3 for k, v in times.items() if v}


def click_breakdown(pred: SamPredictor, prompt: dict, multimask: bool, iters: int) -> dict[str, float]:
    """Median ms of a click's wall time and parts; Python overhead = wall minus the parts."""
    def click():
        return pred.predict(**prompt, multimask_output=multimask)

    walls = []
    with _PartTimer(pred) as timer:
        for _ in range(iters):
            t0 = time.perf_counter()
            click()
            walls.append(time.perf_counter() - t0)
    out = {"click_wall_ms": statistics.median(walls) * 1e3,
           "click_wall_min_ms": min(walls) * 1e3, "click_wall_max_ms": max(walls) * 1e3}
    parts = {f"click_{p}_ms": statistics.median(v) * 1e3 for p, v in timer.times.items()}
    out.update(parts)
    out["click_python_overhead_ms"] = out["click_wall_ms"] - sum(parts.values())
    out.update(_decoder_split(pred, click, iters))
    return out


def median_click_ms(pred: SamPredictor, prompt: dict, multimask: bool, iters: int) -> float:
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        pred.predict(**prompt, multimask_output=multimask)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) * 1e3


class ClickMixin:
    """The click workload's methods, mixed into the SAM workload class (sam.py) so both
    share its options, builder and checks."""

    unit = "clicks"

    def _click_setup(self) -> None:
        kind = str(self.spec.options.get("prompt", "point"))
        if kind not in PROMPTS:
            raise BenchmarkError(f"sam option prompt must be one of {', '.join(PROMPTS)}, "
                                 f"got {kind!r}")
        self.prompt_kind, self.multimask = kind, bool(self.spec.options.get("multimask", True))
        size = SamShape.from_name(self.model_name).image_size
        self.original_size = (size * 3 // 4, size)  # a 4:3 landscape picture

    def describe(self) -> str:
        h, w = self.original_size
        masks = "3 masks (multimask)" if self.multimask else "1 mask"
        return (f"SAM {self.model_name} click: prompt encoder + mask decoder + postprocess, "
                f"{self.prompt_kind} prompt, {masks}, {w}x{h} picture, fixed seeded embedding")

    def build(self) -> SamPredictor:
        return SamPredictor(super().build())

    def inputs(self, pipe: SamPredictor) -> dict[str, Any]:
        pipe.set_features(seeded_features(pipe.model, self.spec.seed), self.original_size)
        h, w = self.original_size
        return {"prompt": click_prompts(self.prompt_kind, h, w, self.spec.seed)[0],
                "fidelity": [p for k in PROMPTS for p in click_prompts(k, h, w, self.spec.seed + 1, 3)]}

    def run(self, pipe: SamPredictor, inputs: dict[str, Any]) -> np.ndarray:
        return pipe.predict(**inputs["prompt"], multimask_output=self.multimask)[0]

    def items(self, inputs: Any) -> int:
        return 1

    def view(self, pipe: SamPredictor, inputs: dict[str, Any], output: np.ndarray,
             reference: Any = None) -> dict:
        """The timed click's masks and those of 9 more clicks (points and boxes, both
        mask modes), all from the same fixed embedding."""
        masks = [torch.from_numpy(output)]
        for i, prompt in enumerate(inputs["fidelity"]):
            masks.append(torch.from_numpy(pipe.predict(**prompt, multimask_output=i % 2 == 0)[0]))
        return {"masks": masks}

    def compare(self, pipe: Any, reference: dict, view: dict,
                klass: PrecisionClass | str) -> Fidelity:
        klass = PrecisionClass(klass)
        ious = [mask_iou(r[i], g[i]) for r, g in zip(reference["masks"], view["masks"])
                for i in range(r.shape[0])]
        metrics = {"mask_iou_min": min(ious), "mask_iou_mean": sum(ious) / len(ious)}
        bars = tuple(b for b in SAM_BARS[klass] if b.metric.startswith("mask_iou"))
        return judge(metrics, bars, klass, note="clicks decoded from one fixed embedding")

    def flops(self, pipe: SamPredictor, inputs: dict[str, Any]) -> float | None:
        from torch.utils.flop_counter import FlopCounterMode

        counter = FlopCounterMode(display=False)
        with counter:
            self.run(pipe, inputs)
        return float(counter.get_total_flops())

    def extra_metrics(self, pipe: SamPredictor, inputs: dict[str, Any]) -> dict[str, float]:
        iters = 10
        out = click_breakdown(pipe, inputs["prompt"], self.multimask, iters)
        if getattr(pipe.model.mask_decoder, "_compiled_call_impl", None) is None:
            # eager decoders only: a dispatch mode around a compiled one would recompile it
            out["click_weight_casts"] = float(weight_casts_per_call(
                pipe.model.mask_decoder,
                lambda: pipe.predict(**inputs["prompt"], multimask_output=self.multimask)))
        h, w = self.original_size
        for kind in PROMPTS:  # every click kind of this configuration, both mask modes
            prompt = click_prompts(kind, h, w, self.spec.seed)[0]
            for multimask in (False, True):
                key = f"click_{kind}_{'multi' if multimask else 'single'}_ms"
                pipe.predict(**prompt, multimask_output=multimask)  # a new graph compiles here
                out[key] = median_click_ms(pipe, prompt, multimask, iters)
        return out
