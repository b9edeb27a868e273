"""segment-anything (SAM): model builders that work without torchvision, and the adapter
(components, attention sites, example inputs, fidelity and its bars per precision class).

segment-anything's package ``__init__`` imports its predictor, which imports torchvision;
its modeling code needs only torch. :func:`sam_modeling` imports ``segment_anything`` the
normal way when it works and otherwise loads ``segment_anything.modeling`` alone.

>>> sam = build_sam("tiny")                         # random seeded weights, SAM-shaped
>>> report = fastpipes.accelerate(sam, {"attention": {"backend": "sdpa"}})  # doctest: +SKIP
"""
from __future__ import annotations

import importlib
import importlib.util
import sys
import types
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import torch
import torch.nn as nn

from fastpipes.errors import FastpipesError, InputError
from fastpipes.fidelity import Bar, relative_error
from fastpipes.pipelines.base import Adapter, AttentionSite
from fastpipes.recipe.schema import PrecisionClass
from fastpipes.sam.inputs import click, decode_masks, mask_iou, sam_inputs, seeded_features, smooth_images
from fastpipes.sam.predictor import SamPredictor as OurPredictor


# ----------------------------------------------------------------------------- loading
def _torchvision_ok() -> bool:
    return importlib.util.find_spec("torchvision") is not None


def sam_modeling() -> types.ModuleType:
    """``segment_anything.modeling``, imported without running the package ``__init__``
    when torchvision is missing or broken."""
    return sam_submodule("modeling")


def sam_submodule(name: str) -> types.ModuleType:
    """``segment_anything.<name>`` (e.g. ``utils.amg``, whose helpers need only numpy and
    torch), imported without running the package ``__init__`` when torchvision is missing
    or broken."""
    full = f"segment_anything.{name}"
    if full in sys.modules:
        return sys.modules[full]
    spec = importlib.util.find_spec("segment_anything")
    if spec is None or not spec.submodule_search_locations:
        raise FastpipesError("SAM needs the segment-anything package: "
                             "pip install 'fastpipes[sam]' (segment-anything>=1.0)")
    if _torchvision_ok():
        try:
            return importlib.import_module(full)
        except Exception:  # torchvision present but broken (e.g. a CUDA wheel on CPU torch)
            sys.modules.pop("segment_anything", None)
    # A bare package object with __path__ lets Python find the subpackage without
    # executing segment_anything/__init__.py; it is removed again afterwards so a later
    # `import segment_anything` (e.g. once torchvision works) runs the real __init__.
    bare = types.ModuleType("segment_anything")
    bare.__path__ = list(spec.submodule_search_locations)
    bare.__spec__ = spec
    sys.modules["segment_anything"] = bare
    try:
        return importlib.import_module(full)
    finally:
        if sys.modules.get("segment_anything") is bare:
            del sys.modules["segment_anything"]


@dataclass(frozen=True)
class SamShape:
    """Shapes of a SAM model (upstream build_sam.py values for vit_b/l/h)."""

    embed_dim: int
    depth: int
    num_heads: int
    global_attn_indexes: tuple[int, ...]
    image_size: int = 1024
    patch_size: int = 16
    window_size: int = 14
    prompt_embed_dim: int = 256
    decoder_mlp_dim: int = 2048
    decoder_heads: int = 8
    mask_in_chans: int = 16

    @classmethod
    def from_name(cls, name: str) -> "SamShape":
        if name not in SAM_SHAPES:
            raise InputError(f"unknown SAM model {name!r}; allowed: {', '.join(SAM_SHAPES)}")
        return SAM_SHAPES[name]


SAM_SHAPES: dict[str, SamShape] = {
    "vit_b": SamShape(768, 12, 12, (2, 5, 8, 11)),
    "vit_l": SamShape(1024, 24, 16, (5, 11, 17, 23)),
    "vit_h": SamShape(1280, 32, 16, (7, 15, 23, 31)),
    # tests: 128 px -> 8x8 tokens, window 3 (so windows are padded), 2 global blocks
    "tiny": SamShape(64, 4, 4, (1, 3), image_size=128, window_size=3, prompt_embed_dim=32,
                     decoder_mlp_dim=64, decoder_heads=2, mask_in_chans=4),
}


def _randomize(sam: nn.Module, seed: int) -> None:
    """Seeded random values for the parameters upstream zero-initialises (rel-pos tables,
    absolute position embedding), so every term of the model matters in tests."""
    g = torch.Generator().manual_seed(seed + 1)
    with torch.no_grad():
        for name, p in sam.named_parameters():
            if name.endswith(("rel_pos_h", "rel_pos_w")):
                p.copy_(torch.randn(p.shape, generator=g) * 0.5)
            elif name.endswith("pos_embed"):
                p.copy_(torch.randn(p.shape, generator=g) * 0.02)


def build_sam(model: str = "vit_b", checkpoint: str | Path | None = None, seed: int = 0,
              map_location: str = "cpu", device: str | torch.device = "cpu") -> nn.Module:
    """A segment-anything ``Sam`` in FP32 eval mode: random seeded weights, or a checkpoint.

    `model` is vit_b, vit_l, vit_h or tiny. A checkpoint is read with
    ``torch.load(weights_only=True)`` and must match the model's shapes.

    >>> sam = build_sam("tiny", seed=0)
    >>> sam.image_encoder.img_size
    128
    """
    cfg = SamShape.from_name(model)
    m = sam_modeling()
    torch.manual_seed(seed)  # upstream layers draw from the global generator
    emb = cfg.image_size // cfg.patch_size
    with torch.device(device):  # parameters are made and initialised where they will run
        sam = _make_sam(m, cfg, emb)
    sam.to(device)  # upstream's pixel_mean/std use torch.Tensor(list), which ignores the context
    if checkpoint is not None:
        load_sam_checkpoint(sam, model, checkpoint, map_location)
    else:
        _randomize(sam, seed)
    return sam.eval()


def _make_sam(m: Any, cfg: "SamShape", emb: int) -> nn.Module:
    return m.Sam(
        image_encoder=m.ImageEncoderViT(
            depth=cfg.depth, embed_dim=cfg.embed_dim, img_size=cfg.image_size, mlp_ratio=4,
            norm_layer=partial(torch.nn.LayerNorm, eps=1e-6), num_heads=cfg.num_heads,
            patch_size=cfg.patch_size, qkv_bias=True, use_rel_pos=True,
            global_attn_indexes=cfg.global_attn_indexes, window_size=cfg.window_size,
            out_chans=cfg.prompt_embed_dim),
        prompt_encoder=m.PromptEncoder(
            embed_dim=cfg.prompt_embed_dim, image_embedding_size=(emb, emb),
            input_image_size=(cfg.image_size, cfg.image_size), mask_in_chans=cfg.mask_in_chans),
        mask_decoder=m.MaskDecoder(
            num_multimask_outputs=3,
            transformer=m.TwoWayTransformer(depth=2, embedding_dim=cfg.prompt_embed_dim,
                                            mlp_dim=cfg.decoder_mlp_dim,
                                            num_heads=cfg.decoder_heads),
            transformer_dim=cfg.prompt_embed_dim, iou_head_depth=3,
            iou_head_hidden_dim=cfg.prompt_embed_dim),
        pixel_mean=[123.675, 116.28, 103.53],
        pixel_std=[58.395, 57.12, 57.375],
    )


EXPECTED = ("a segment-anything state dict: a .pth from its releases (sam_vit_b_01ec64.pth, ...) "
            "or torch.save(sam.state_dict()), or a .safetensors file")


def _read_state_dict(path: Path, map_location: str) -> dict[str, torch.Tensor]:
    """The tensors of a checkpoint file, never running pickled code; InputError if it is not
    a state dict."""
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            state = load_file(str(path), device=map_location)
        else:  # weights_only: plain tensors and containers, no code execution
            state = torch.load(path, map_location=map_location, weights_only=True)
    except Exception as e:  # noqa: BLE001  (text, empty, truncated, pickled objects...)
        why = f"{type(e).__name__}: {e}".strip().splitlines()[0][:200]
        raise InputError(f"SAM checkpoint {path} cannot be read ({why}); expected {EXPECTED}") from None
    if not isinstance(state, dict) or not all(isinstance(v, torch.Tensor) for v in state.values()):
        raise InputError(f"SAM checkpoint {path} holds a {type(state).__name__}, not a mapping "
                         f"of names to tensors; expected {EXPECTED}")
    return state


def _size_of(state: dict[str, torch.Tensor]) -> str | None:
    """Which SAM size a state dict is for, from its embedding width and depth."""
    width = state.get("image_encoder.pos_embed", torch.empty(0)).shape[-1:]
    depth = len({k.split(".")[2] for k in state if k.startswith("image_encoder.blocks.")})
    for name, shape in SAM_SHAPES.items():
        if width and width[0] == shape.embed_dim and depth == shape.depth:
            return name
    return None


def load_sam_checkpoint(sam: nn.Module, model: str, checkpoint: str | Path,
                        map_location: str = "cpu") -> None:
    """Load a checkpoint into `sam` (built as `model`); InputError naming the file and what
    does not fit, e.g. a vit_h checkpoint given for vit_b."""
    path = Path(checkpoint).expanduser()
    if not path.is_file():
        raise InputError(f"SAM checkpoint not found: {path} (expected {EXPECTED})")
    state = _read_state_dict(path, map_location)
    own = sam.state_dict()
    wrong = [f"{k}: {tuple(v.shape)} in the file, {tuple(own[k].shape)} in {model}"
             for k, v in state.items() if k in own and v.shape != own[k].shape]
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    if wrong or missing or unexpected:
        size = _size_of(state)
        hint = (f"; it is a {size} checkpoint: pass model={size!r} (--model {size})"
                if size and size != model else "")
        parts = [f"{len(wrong)} tensors of another shape (e.g. {wrong[0]})" if wrong else "",
                 f"{len(missing)} missing (e.g. {missing[0]})" if missing else "",
                 f"{len(unexpected)} unexpected (e.g. {unexpected[0]})" if unexpected else ""]
        raise InputError(f"SAM checkpoint {path} does not fit SAM {model!r}: "
                         f"{', '.join(p for p in parts if p)}{hint}")
    sam.load_state_dict(state)


# ----------------------------------------------------------------------------- adapter
def _is_sam(obj: Any) -> bool:
    t = type(obj)
    return t.__name__ == "Sam" and t.__module__.startswith("segment_anything")


def _upstream(obj: Any, *names: str) -> bool:
    t = type(obj)
    return t.__name__ in names and t.__module__.startswith("segment_anything")


def sam_of(obj: Any) -> nn.Module | None:
    """The ``Sam`` model inside `obj` (a Sam, our predictor, upstream SamPredictor or
    SamAutomaticMaskGenerator), or None."""
    if _is_sam(obj):
        return obj
    if isinstance(obj, OurPredictor) or _upstream(obj, "SamPredictor"):
        return obj.model
    if _upstream(obj, "SamAutomaticMaskGenerator"):
        return obj.predictor.model
    return None


# ----------------------------------------------------------------------------- fidelity
_IOU, _ERR = "mask IoU min", "embedding rel. error"
# Fidelity bars vs FP32 eager, stated per precision class before any run (docs/fidelity.md
# says why): the smallest IoU of the masks decoded from the same prompts (each
# configuration decoding its own embeddings), and the relative L2 error of the embeddings.
# - exact: only the order of summation changes (issue 5's bars);
# - bf16 (and fp16): rounding to 8 significant bits (~2e-3 per op) through 12-32 blocks
#   gives ~1e-2 at the embeddings; 2e-2 leaves room for vit_h's 32 blocks;
# - int8: activations rounded to 8 bits at every Linear (a 30 dB signal-to-error ratio);
# - int4: group-wise 4-bit weights, twice int8's allowance.
SAM_BARS = {
    PrecisionClass.exact: (Bar("mask_iou_min", ">=", 0.99, _IOU), Bar("embedding_rel_err", "<=", 1e-3, _ERR)),
    PrecisionClass.fp16: (Bar("mask_iou_min", ">=", 0.97, _IOU), Bar("embedding_rel_err", "<=", 2e-2, _ERR)),
    PrecisionClass.bf16: (Bar("mask_iou_min", ">=", 0.97, _IOU), Bar("embedding_rel_err", "<=", 2e-2, _ERR)),
    PrecisionClass.int8: (Bar("mask_iou_min", ">=", 0.95, _IOU), Bar("embedding_rel_err", "<=", 3e-2, _ERR)),
    PrecisionClass.int4: (Bar("mask_iou_min", ">=", 0.90, _IOU), Bar("embedding_rel_err", "<=", 6e-2, _ERR)),
}


# ----------------------------------------------------------------------------- adapter
class SamAdapter(Adapter):
    """segment-anything: ``Sam``, ``SamPredictor``, ``SamAutomaticMaskGenerator`` or
    :class:`fastpipes.sam.predictor.SamPredictor`.

    Its call is the image encoder on a batch (>99% of SAM's FLOPs); fidelity compares the
    embeddings and the masks each configuration decodes from them for the same prompts.
    """

    name = "sam"
    family = "sam"
    description = "segment-anything Sam / SamPredictor / SamAutomaticMaskGenerator"
    priority = 10
    BARS = SAM_BARS

    @classmethod
    def matches(cls, obj: Any) -> bool:
        return sam_of(obj) is not None

    @property
    def sam(self) -> nn.Module:
        return sam_of(self.obj)

    def components(self) -> dict[str, nn.Module]:
        s = self.sam
        return {"image_encoder": s.image_encoder, "prompt_encoder": s.prompt_encoder,
                "mask_decoder": s.mask_decoder}

    def default_components(self, pass_name: str) -> list[str]:
        # the image encoder is >99% of SAM's FLOPs; the decoder runs per prompt and is tiny
        return {
            "compile": ["image_encoder"],
            "memory_format": ["image_encoder"],  # patch-embed conv and the neck convs
            "precision": ["image_encoder", "mask_decoder"],
            "quantize": ["image_encoder"],
            "attention": ["image_encoder"],
        }.get(pass_name, list(self.components()))

    def set_component(self, name: str, module: nn.Module) -> None:
        if name not in self.components():
            raise FastpipesError(f"SAM has no component {name!r}")
        setattr(self.sam, name, module)

    def state_objects(self) -> list[Any]:
        objs = [self.obj]
        if _upstream(self.obj, "SamAutomaticMaskGenerator"):
            objs.append(self.obj.predictor)
        return objs

    def attention_sites(self) -> list[AttentionSite]:
        enc = self.sam.image_encoder
        mods = [(name, m) for name, m in enc.named_modules()
                if type(m).__name__ == "Attention" and hasattr(m, "qkv") and hasattr(m, "proj")]
        return [AttentionSite("sam_relpos", "image_encoder", mods)] if mods else []

    def entry_points(self) -> list[tuple[str, nn.Module]]:
        return list(self.components().items())

    # -- exercising and judging (recipe="auto", the benchmark) ------------------------------
    def example_inputs(self) -> dict[str, torch.Tensor]:
        """One smooth random image at the encoder's size and one point prompt."""
        sam = self.sam
        return sam_inputs(sam, smooth_images(1, sam.image_encoder.img_size, 0), 1, 0,
                          str(sam.pixel_mean.device))

    def describe_inputs(self, inputs: dict[str, torch.Tensor]) -> str:
        b, _, h, w = inputs["images"].shape
        n = inputs["point_coords"].shape[1]
        return f"{b} image(s) of {h}x{w} (encoder input), {n} point prompt(s) per image"

    def call(self, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
        with torch.inference_mode():
            return self.sam.image_encoder(inputs["images"])  # [B, 256, 64, 64]

    def waited_calls(self, inputs: dict[str, torch.Tensor]) -> dict[str, Any]:
        """A predictor's (or mask generator's) users wait on each click, not only on the
        encoder: ``click`` (prompt encoder + mask decoder on a set embedding, 3 masks). A
        bare ``Sam`` has none: how it is called is the user's."""
        if _is_sam(self.obj):
            return {}
        sam, emb = self.sam, seeded_features(self.sam, 0)
        return {"click": lambda: click(sam, emb, inputs)}

    def fidelity_view(self, inputs: dict[str, torch.Tensor], output: torch.Tensor,
                      reference: dict | None = None) -> dict:
        return {"embeddings": output, "masks": decode_masks(self.sam, output, inputs)}

    def fidelity_metrics(self, reference: dict, view: dict) -> dict[str, float]:
        ious = [mask_iou(r, g) for r, g in zip(reference["masks"].flatten(0, 1),
                                                view["masks"].flatten(0, 1))]
        return {"mask_iou_min": min(ious), "mask_iou_mean": sum(ious) / len(ious),
                "embedding_rel_err": relative_error(reference["embeddings"], view["embeddings"])}
