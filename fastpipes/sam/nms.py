"""Box area and (batched) non-maximum suppression in plain torch.

segment-anything's automatic mask generator takes these from torchvision, whose PyPI wheels
are CUDA builds that do not import beside the CPU torch; these follow torchvision's
semantics (XYXY boxes, a box is dropped when its IoU with a kept, higher-scoring box is
*greater* than the threshold, kept indices in decreasing score order).

>>> boxes = torch.tensor([[0., 0., 10., 10.], [1., 1., 10., 10.], [20., 20., 30., 30.]])
>>> nms(boxes, torch.tensor([0.9, 0.8, 0.7]), iou_threshold=0.5).tolist()
[0, 2]
"""
from __future__ import annotations

import torch


def box_area(boxes: torch.Tensor) -> torch.Tensor:
    """Areas of XYXY boxes. boxes: [N, 4] -> [N]."""
    return (boxes[:, 2] - boxes[:, 0]) * (boxes[:, 3] - boxes[:, 1])


def _iou_one_to_many(box: torch.Tensor, others: torch.Tensor) -> torch.Tensor:
    # box: [4], others: [M, 4] -> [M]; a zero union (two empty boxes) counts as no overlap
    lt = torch.maximum(box[:2], others[:, :2])
    rb = torch.minimum(box[2:], others[:, 2:])
    inter = (rb - lt).clamp(min=0).prod(dim=1)
    union = box_area(box[None])[0] + box_area(others) - inter
    return torch.where(union > 0, inter / union.clamp_min(1e-12), torch.zeros_like(inter))


def nms(boxes: torch.Tensor, scores: torch.Tensor, iou_threshold: float) -> torch.Tensor:
    """Greedy NMS. boxes: [N, 4] XYXY, scores: [N] -> int64 indices kept, best first.

    Equal scores keep their input order (a stable sort), so results are reproducible.
    Cost: one vectorised IoU row per kept box, O(kept x N) time and O(N) memory.
    """
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    boxes = boxes.float()
    remaining = torch.sort(scores, descending=True, stable=True).indices
    keep = []
    while remaining.numel():
        best, rest = remaining[0], remaining[1:]
        keep.append(best)
        if rest.numel() == 0:
            break
        remaining = rest[_iou_one_to_many(boxes[best], boxes[rest]) <= iou_threshold]
    return torch.stack(keep)


def batched_nms(boxes: torch.Tensor, scores: torch.Tensor, idxs: torch.Tensor,
                iou_threshold: float) -> torch.Tensor:
    """NMS within each category of `idxs` ([N] ints); boxes of different categories never
    suppress each other. Kept indices in decreasing score order."""
    if boxes.numel() == 0:
        return torch.empty(0, dtype=torch.int64, device=boxes.device)
    boxes = boxes.float()
    # shift each category to its own region of the plane: no IoU across categories
    span = boxes.max() - boxes.min() + 1
    shifted = boxes - boxes.min() + (idxs.to(boxes) * span)[:, None]
    return nms(shifted, scores, iou_threshold)
