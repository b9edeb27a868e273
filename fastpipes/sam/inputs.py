"""What SAM is called with and how its masks are compared: seeded inputs and embeddings, a
predictor click's model work, decoded masks and their IoU. Used by the adapter (recipe="auto"
and fidelity), the benchmarks and the tests."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn

from fastpipes.sam.predictor import preprocess_image


def mask_iou(a: torch.Tensor, b: torch.Tensor) -> float:
    """Intersection over union of two boolean masks (1.0 when both are empty)."""
    inter = (a & b).sum().item()
    union = (a | b).sum().item()
    return 1.0 if union == 0 else inter / union


def smooth_images(n: int, size: int, seed: int) -> list[np.ndarray]:
    """`n` seeded size x size x 3 uint8 pictures: blocky noise upsampled, so masks are not
    pure noise."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(n):
        small = rng.integers(0, 256, (8, 8, 3), dtype=np.uint8)
        out.append(np.kron(small, np.ones((size // 8, size // 8, 1), dtype=np.uint8)))
    return out


def sam_inputs(sam: nn.Module, images: list[np.ndarray], points: int, seed: int,
               device: str = "cpu") -> dict[str, torch.Tensor]:
    """The encoder batch of `images` and `points` positive point prompts per image.

    Made under inference_mode like SamPredictor's: torch.compile guards on a tensor's
    dispatch keys, so normal tensors here would compile a second graph for the predictor.
    """
    size = sam.image_encoder.img_size
    with torch.inference_mode():
        batch = torch.cat([preprocess_image(sam, im)[0] for im in images]).to(device)  # [B, 3, S, S]
    g = torch.Generator().manual_seed(seed)
    coords = torch.rand(len(images), points, 1, 2, generator=g) * size * 0.8 + size * 0.1
    return {"images": batch, "point_coords": coords.to(device),  # [B, n, 1, 2] encoder pixels
            "point_labels": torch.ones(len(images), points, 1, device=device)}


def decode_masks(sam: nn.Module, emb: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """Masks (bool, [B, n, 1, 256, 256] low-res > 0) from each image's point prompts."""
    out = []
    with torch.inference_mode():
        for i in range(emb.shape[0]):
            sparse, dense = sam.prompt_encoder(
                points=(inputs["point_coords"][i], inputs["point_labels"][i]), boxes=None,
                masks=None)
            low, _ = sam.mask_decoder(image_embeddings=emb[i:i + 1],
                                      image_pe=sam.prompt_encoder.get_dense_pe(),
                                      sparse_prompt_embeddings=sparse,
                                      dense_prompt_embeddings=dense, multimask_output=False)
            out.append(low.float() > sam.mask_threshold)
    return torch.stack(out)


def seeded_features(sam: nn.Module, seed: int) -> torch.Tensor:
    """[1, C, h', w'] unit-variance embedding (the neck ends in a LayerNorm2d, so encoder
    outputs are about unit scale per position), the same in every process."""
    c, (h, w) = sam.prompt_encoder.embed_dim, sam.prompt_encoder.image_embedding_size
    g = torch.Generator().manual_seed(seed)
    return torch.randn(1, c, h, w, generator=g).to(sam.pixel_mean.device)


def click(sam: nn.Module, emb: torch.Tensor, inputs: dict[str, torch.Tensor]) -> torch.Tensor:
    """One predictor click's model work on a set embedding: the first image's first point
    through the prompt encoder and the mask decoder, three masks (the predictor's default).
    What recipe="auto" times as a predictor's ``click``."""
    with torch.inference_mode():
        sparse, dense = sam.prompt_encoder(
            points=(inputs["point_coords"][0, :1], inputs["point_labels"][0, :1]), boxes=None,
            masks=None)
        low, _ = sam.mask_decoder(image_embeddings=emb, image_pe=sam.prompt_encoder.get_dense_pe(),
                                  sparse_prompt_embeddings=sparse,
                                  dense_prompt_embeddings=dense, multimask_output=True)
        return low
