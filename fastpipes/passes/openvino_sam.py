"""SAM's prompt encoder and mask decoder in a form OpenVINO converts, and the forwards that
call the converted models with the upstream signatures.

The prompt encoder does not convert as written: ``point_embedding[labels == -1] = 0.0`` and
the ``+=`` writes after it are boolean index writes (``aten::index_put_``). As in upstream's
ONNX export wrapper (``segment_anything/utils/onnx.py``), :class:`PromptPoints` computes them
as arithmetic masks, and a box is given as its two corners with labels 2 and 3. The mask
decoder is converted through ``predict_masks`` (all masks); ``multimask_output`` selects
from them in Python, as ``MaskDecoder.forward`` does, so one model serves both.

>>> sparse = PromptPoints(sam.prompt_encoder)(coords, labels)   # doctest: +SKIP
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn as nn

Run = Callable[..., list[torch.Tensor]]  # a compiled OpenVINO model: tensors in, tensors out


class PromptPoints(nn.Module):
    """The sparse prompt embeddings of points (labels -1 pad, 0 negative, 1 positive) and box
    corners (labels 2, 3): ``PromptEncoder._embed_points`` / ``_embed_boxes`` without writes."""

    def __init__(self, prompt_encoder: nn.Module):
        super().__init__()
        self.pe = prompt_encoder

    def forward(self, coords: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        # coords: [B, N, 2] input-image pixels; labels: [B, N]
        pe = self.pe
        h, w = pe.input_image_size
        xy = (coords + 0.5) / torch.tensor([w, h], dtype=coords.dtype)
        emb = pe.pe_layer._pe_encoding(xy)  # [B, N, C]
        lab = labels.unsqueeze(-1)  # [B, N, 1]
        emb = emb * (lab != -1).to(emb.dtype)
        emb = emb + pe.not_a_point_embed.weight * (lab == -1).to(emb.dtype)
        for i in range(pe.num_point_embeddings):  # 0/1: points, 2/3: box corners
            emb = emb + pe.point_embeddings[i].weight * (lab == i).to(emb.dtype)
        return emb


class DecoderCore(nn.Module):
    """``MaskDecoder.predict_masks``: every mask and its IoU prediction."""

    def __init__(self, mask_decoder: nn.Module):
        super().__init__()
        self.decoder = mask_decoder

    def forward(self, image_embeddings, image_pe, sparse, dense):
        return self.decoder.predict_masks(image_embeddings=image_embeddings, image_pe=image_pe,
                                          sparse_prompt_embeddings=sparse,
                                          dense_prompt_embeddings=dense)


def prompt_example(prompt_encoder: nn.Module) -> tuple[torch.Tensor, torch.Tensor]:
    """One point and its padding, as the predictor's single click makes them."""
    h, w = prompt_encoder.input_image_size
    coords = torch.tensor([[[w * 0.5, h * 0.5], [0.0, 0.0]]])  # [1, 2, 2]
    return coords, torch.tensor([[1.0, -1.0]])


def decoder_example(prompt_encoder: nn.Module) -> tuple[torch.Tensor, ...]:
    """Inputs of one decoder call for one point prompt (random image embedding)."""
    c = prompt_encoder.embed_dim
    h, w = prompt_encoder.image_embedding_size
    g = torch.Generator().manual_seed(0)
    with torch.no_grad():
        sparse, dense = prompt_encoder(points=prompt_example(prompt_encoder), boxes=None,
                                       masks=None)
        pe = prompt_encoder.get_dense_pe()
    return torch.randn(1, c, h, w, generator=g), pe, sparse, dense


def prompt_encoder_forward(pe: nn.Module, run: Run) -> Callable:
    """``PromptEncoder.forward(points, boxes, masks)`` with the sparse embeddings from the
    converted :class:`PromptPoints`; a mask prompt's downscaling convs stay on PyTorch."""

    def forward(points, boxes, masks):
        bs = pe._get_batch_size(points, boxes, masks)
        coords, labels = [], []
        if points is not None:
            c, lab = points
            coords.append(c.float())
            labels.append(lab.float())
            if boxes is None:  # upstream pads point prompts with one "not a point"
                coords.append(torch.zeros(c.shape[0], 1, 2))
                labels.append(-torch.ones(c.shape[0], 1))
        if boxes is not None:
            corners = boxes.float().reshape(-1, 2, 2)  # [B, 2, 2]
            coords.append(corners)
            labels.append(torch.tensor([[2.0, 3.0]]).expand(corners.shape[0], 2))
        if coords:
            sparse = run(torch.cat(coords, 1), torch.cat(labels, 1))[0]
        else:
            sparse = torch.empty((bs, 0, pe.embed_dim), device=pe._get_device())
        if masks is not None:
            dense = pe._embed_masks(masks)
        else:
            h, w = pe.image_embedding_size
            dense = pe.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w)
        return sparse, dense

    return forward


def mask_decoder_forward(run: Run) -> Callable:
    """``MaskDecoder.forward`` with ``predict_masks`` converted."""

    def forward(image_embeddings, image_pe, sparse_prompt_embeddings, dense_prompt_embeddings,
                multimask_output: bool):
        masks, iou_pred = run(image_embeddings, image_pe, sparse_prompt_embeddings,
                              dense_prompt_embeddings)
        pick = slice(1, None) if multimask_output else slice(0, 1)
        return masks[:, pick, :, :], iou_pred[:, pick]

    return forward
