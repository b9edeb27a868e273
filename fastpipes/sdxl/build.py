"""SDXL (diffusers) builders: random-weight pipelines at the real architecture, or a local
diffusers directory. The adapter is in fastpipes.sdxl.pipeline.

Build a pipeline with seeded random weights (no hub access) or from a local directory::

    from fastpipes.sdxl.pipeline import build_sdxl
    pipe = build_sdxl("tiny")                      # seconds; for tests
    pipe = build_sdxl("full")                      # SDXL base shapes: 2.57 B-parameter UNet
    pipe = build_sdxl(model="/path/to/sdxl-base")  # from_pretrained(local_files_only=True)
    image = pipe("a photo", num_inference_steps=2, output_type="pt").images

diffusers and transformers are imported inside functions, so ``import fastpipes`` needs
neither.
"""
from __future__ import annotations

import inspect
import json
import math
import tempfile
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch
import torch.nn as nn

from fastpipes.errors import InputError
from fastpipes.pipelines.base import seeded_generator

SIZES = ("full", "small", "tiny")


# ---------------------------------------------------------------------------------------
# Shapes: one dataclass per size (gpt-fast's ModelArgs.from_name style)
# ---------------------------------------------------------------------------------------
@dataclass(frozen=True)
class SdxlShape:
    """Every number that differs between full / small / tiny SDXL builds."""

    block_out_channels: tuple[int, ...]
    transformer_layers: tuple[int, ...]
    attention_head_dim: tuple[int, ...]  # diffusers' name: it is the number of heads per block
    layers_per_block: int
    addition_time_embed_dim: int
    norm_num_groups: int
    te1: dict = field(default_factory=dict)  # CLIPTextConfig kwargs (ViT-L text tower)
    te2: dict = field(default_factory=dict)  # CLIPTextConfig kwargs (bigG text tower)
    vae_channels: tuple[int, ...] = (128, 256, 512, 512)
    vae_layers: int = 2
    vae_groups: int = 32
    vocab_size: int = 49408
    max_len: int = 77
    sample_size: int = 128  # latent side of the default image (x8 = 1024 px)

    @property
    def cross_attention_dim(self) -> int:
        # SDXL concatenates both encoders' penultimate hidden states
        return self.te1["hidden_size"] + self.te2["hidden_size"]

    @property
    def projection_class_embeddings_input_dim(self) -> int:
        # 6 micro-conditioning ids (size, crop, target size) + pooled text_encoder_2 output
        return 6 * self.addition_time_embed_dim + self.te2["projection_dim"]

    @classmethod
    def from_name(cls, size: str) -> "SdxlShape":
        if size not in SHAPES:
            raise InputError(f"unknown SDXL size {size!r}; allowed: {', '.join(SIZES)}")
        return SHAPES[size]


def _clip(hidden, inter, layers, heads, proj, act):
    return dict(hidden_size=hidden, intermediate_size=inter, num_hidden_layers=layers,
                num_attention_heads=heads, projection_dim=proj, hidden_act=act)


SHAPES = {
    # stabilityai/stable-diffusion-xl-base-1.0
    "full": SdxlShape(
        block_out_channels=(320, 640, 1280), transformer_layers=(1, 2, 10),
        attention_head_dim=(5, 10, 20), layers_per_block=2, addition_time_embed_dim=256,
        norm_num_groups=32,
        te1=_clip(768, 3072, 12, 12, 768, "quick_gelu"),  # CLIP ViT-L/14 text tower
        te2=_clip(1280, 5120, 32, 20, 1280, "gelu"),  # OpenCLIP ViT-bigG/14 text tower
    ),
    # same layout, narrower and shallower: a few hundred MB, for quick local checks
    "small": SdxlShape(
        block_out_channels=(128, 256, 512), transformer_layers=(1, 1, 2),
        attention_head_dim=(2, 4, 8), layers_per_block=2, addition_time_embed_dim=64,
        norm_num_groups=32,
        te1=_clip(256, 1024, 4, 4, 256, "quick_gelu"),
        te2=_clip(512, 2048, 4, 8, 512, "gelu"),
        vae_channels=(64, 128, 256, 256),
        sample_size=32,  # 256x256 images by default: quick checks, not SDXL's 1024
    ),
    # for tests: builds and runs in seconds
    "tiny": SdxlShape(
        block_out_channels=(32, 64), transformer_layers=(1, 1), attention_head_dim=(2, 4),
        layers_per_block=1, addition_time_embed_dim=8, norm_num_groups=8,
        te1=_clip(32, 64, 2, 4, 32, "quick_gelu"),
        te2=_clip(32, 64, 2, 4, 32, "gelu"),
        vae_channels=(8, 16, 16, 16), vae_layers=1, vae_groups=8,  # 4 blocks: 8x downsampling
        vocab_size=1000, sample_size=8,
    ),
}


# ---------------------------------------------------------------------------------------
# Fast seeded init
# ---------------------------------------------------------------------------------------
@contextmanager
def no_default_init():
    """Skip torch's default (kaiming) init while modules are built: it costs ~50 s for the
    UNet and :func:`seeded_init` overwrites every parameter anyway."""
    kinds = (nn.Linear, nn.Conv2d, nn.Embedding, nn.LayerNorm, nn.GroupNorm)
    saved = {k: k.reset_parameters for k in kinds}
    try:
        for k in kinds:
            k.reset_parameters = lambda self: None
        yield
    finally:
        for k, fn in saved.items():
            k.reset_parameters = fn


@torch.no_grad()
def seeded_init(module: nn.Module, seed: int) -> nn.Module:
    """Deterministic weights: N(0, 1/fan_in) for matrices and kernels (keeps activations near
    unit scale through deep stacks), ones for norm scales, zeros for biases."""
    gen = None
    for name, p in module.named_parameters():
        gen = gen or seeded_generator(seed, p.device)  # drawn where the weights live
        if p.dim() >= 2:
            p.normal_(0.0, 1.0 / math.sqrt(p[0].numel()), generator=gen)
        elif p.dim() == 1:
            p.fill_(0.0 if name.endswith("bias") else 1.0)
    return module


# ---------------------------------------------------------------------------------------
# Builders
# ---------------------------------------------------------------------------------------
def unet_config(shape: SdxlShape) -> dict:
    """UNet2DConditionModel kwargs; for "full" this is SDXL base's unet/config.json."""
    n = len(shape.block_out_channels)
    return dict(
        sample_size=shape.sample_size, in_channels=4, out_channels=4, center_input_sample=False,
        flip_sin_to_cos=True, freq_shift=0,
        down_block_types=("DownBlock2D",) + ("CrossAttnDownBlock2D",) * (n - 1),
        mid_block_type="UNetMidBlock2DCrossAttn",
        up_block_types=("CrossAttnUpBlock2D",) * (n - 1) + ("UpBlock2D",),
        only_cross_attention=False,
        block_out_channels=shape.block_out_channels,
        layers_per_block=shape.layers_per_block, downsample_padding=1, mid_block_scale_factor=1,
        act_fn="silu", norm_num_groups=shape.norm_num_groups, norm_eps=1e-5,
        cross_attention_dim=shape.cross_attention_dim,
        transformer_layers_per_block=shape.transformer_layers,
        attention_head_dim=shape.attention_head_dim,
        use_linear_projection=True, upcast_attention=False,
        addition_embed_type="text_time", addition_time_embed_dim=shape.addition_time_embed_dim,
        projection_class_embeddings_input_dim=shape.projection_class_embeddings_input_dim,
        resnet_time_scale_shift="default", time_embedding_type="positional",
        conv_in_kernel=3, conv_out_kernel=3,
    )


def vae_config(shape: SdxlShape) -> dict:
    """AutoencoderKL kwargs; for "full" this is SDXL's vae/config.json."""
    n = len(shape.vae_channels)
    return dict(
        in_channels=3, out_channels=3, latent_channels=4,
        down_block_types=("DownEncoderBlock2D",) * n, up_block_types=("UpDecoderBlock2D",) * n,
        block_out_channels=shape.vae_channels, layers_per_block=shape.vae_layers,
        act_fn="silu", norm_num_groups=shape.vae_groups, sample_size=1024,
        scaling_factor=0.13025, force_upcast=True,
    )


def scheduler_config() -> dict:
    """SDXL base's EulerDiscreteScheduler settings."""
    return dict(
        num_train_timesteps=1000, beta_start=0.00085, beta_end=0.012,
        beta_schedule="scaled_linear", prediction_type="epsilon", steps_offset=1,
        timestep_spacing="leading", interpolation_type="linear", use_karras_sigmas=False,
    )


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP's reversible byte -> printable unicode map (the byte-level alphabet)."""
    bs = (list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1))
          + list(range(ord("®"), ord("ÿ") + 1)))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, (chr(c) for c in cs)))


def clip_vocab(size: int) -> tuple[dict[str, int], list[tuple[str, str]]]:
    """A valid byte-level BPE vocab of exactly `size` entries and its merges.

    Layout as CLIP's: 256 byte symbols, the same with "</w>", merged pairs, then the two
    special tokens last (49406 <|startoftext|>, 49407 <|endoftext|> for size 49408). The
    merges are synthetic pairs of byte symbols: the text a token stands for does not
    matter with random weights, the id range and sequence shapes do.
    """
    chars = list(_bytes_to_unicode().values())
    vocab_list = chars + [c + "</w>" for c in chars]
    merges: list[tuple[str, str]] = []
    n_merges = size - len(vocab_list) - 2
    assert n_merges >= 0, f"vocab size {size} is below the 514 byte-level minimum"
    for a in chars:
        for b in chars:
            if len(merges) >= n_merges:
                break
            end = "</w>" if len(merges) % 2 else ""
            merges.append((a, b + end))
            vocab_list.append(a + b + end)
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    return {tok: i for i, tok in enumerate(vocab_list)}, merges


def build_tokenizer(vocab_size: int, pad_token: str = "<|endoftext|>", max_len: int = 77):
    """A CLIPTokenizer made locally (no hub): transformers 5 takes the vocab and merges in
    memory; older versions read them from files, written to a temporary directory."""
    from transformers import CLIPTokenizer

    vocab, merges = clip_vocab(vocab_size)
    params = inspect.signature(CLIPTokenizer.__init__).parameters
    if "vocab" in params:
        return CLIPTokenizer(vocab=vocab, merges=merges, pad_token=pad_token,
                             model_max_length=max_len)
    with tempfile.TemporaryDirectory() as d:  # transformers 4.x: files only
        (Path(d) / "vocab.json").write_text(json.dumps(vocab))
        lines = ["#version: 0.2"] + [" ".join(m) for m in merges]
        (Path(d) / "merges.txt").write_text("\n".join(lines) + "\n")
        return CLIPTokenizer(str(Path(d) / "vocab.json"), str(Path(d) / "merges.txt"),
                             pad_token=pad_token, model_max_length=max_len)


def _text_config(shape: SdxlShape, kw: dict):
    from transformers import CLIPTextConfig

    # bos 0 / eos 2 / pad 1 as in SDXL's configs: transformers then pools at argmax(ids),
    # which is the <|endoftext|> position since it has the highest id
    return CLIPTextConfig(vocab_size=shape.vocab_size, max_position_embeddings=shape.max_len,
                          bos_token_id=0, eos_token_id=2, pad_token_id=1, **kw)


def build_sdxl(size: str = "full", model: str | None = None, seed: int = 0,
               dtype: torch.dtype = torch.float32, device: str | torch.device = "cpu"):
    """A StableDiffusionXLPipeline in FP32 eager: seeded random weights at `size`, or the
    local diffusers directory `model` (never downloads), on `device`. Random weights are
    made and drawn on `device` (the 2.57 B-parameter UNet builds on a GPU in seconds).

    >>> pipe = build_sdxl("tiny")                                        # doctest: +SKIP
    >>> pipe("a cat", num_inference_steps=2, output_type="pt").images.shape  # doctest: +SKIP
    torch.Size([1, 3, 64, 64])
    """
    from diffusers import (AutoencoderKL, EulerDiscreteScheduler, StableDiffusionXLPipeline,
                           UNet2DConditionModel)
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    if model is not None:
        if not (Path(model) / "model_index.json").is_file():
            raise InputError(f"cannot load an SDXL pipeline from {model!r}: it has no "
                             "model_index.json (a local diffusers directory, e.g. from "
                             "pipe.save_pretrained(dir), is needed)")
        try:  # safetensors or weights_only torch files: diffusers never unpickles code here
            return StableDiffusionXLPipeline.from_pretrained(model, local_files_only=True,
                                                             torch_dtype=dtype).to(device)
        except Exception as e:  # noqa: BLE001  (missing, damaged or mismatched weights)
            first = (str(e).strip().splitlines() or [""])[0][:300]
            raise InputError(f"cannot load an SDXL pipeline from {model!r}: "
                             f"{type(e).__name__}: {first}") from e
    shape = SdxlShape.from_name(size)
    with no_default_init(), torch.device(device):
        unet = seeded_init(UNet2DConditionModel(**unet_config(shape)), seed)
        vae = seeded_init(AutoencoderKL(**vae_config(shape)), seed + 1)
        te1 = seeded_init(CLIPTextModel(_text_config(shape, shape.te1)), seed + 2)
        te2 = seeded_init(CLIPTextModelWithProjection(_text_config(shape, shape.te2)), seed + 3)
    pipe = StableDiffusionXLPipeline(
        vae=vae, text_encoder=te1, text_encoder_2=te2,
        tokenizer=build_tokenizer(shape.vocab_size, max_len=shape.max_len),
        tokenizer_2=build_tokenizer(shape.vocab_size, pad_token="!", max_len=shape.max_len),
        unet=unet, scheduler=EulerDiscreteScheduler(**scheduler_config()),
        add_watermarker=False,
    )
    for m in (unet, vae, te1, te2):
        m.eval().requires_grad_(False)
    pipe.set_progress_bar_config(disable=True)
    pipe.to(device)  # buffers made with a fixed device (if any) follow the modules
    return pipe if dtype == torch.float32 else pipe.to(dtype=dtype)
