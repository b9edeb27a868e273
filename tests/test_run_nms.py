"""The torch-only NMS that replaces torchvision's in automatic mask generation."""
import torch

from fastpipes.sam.nms import batched_nms, box_area, nms


def brute_force_nms(boxes, scores, thr):
    """Greedy NMS written out with Python loops: the reference."""
    order = sorted(range(len(boxes)), key=lambda i: -float(scores[i]))
    keep = []
    for i in order:
        ok = True
        for j in keep:
            x0, y0 = max(boxes[i][0], boxes[j][0]), max(boxes[i][1], boxes[j][1])
            x1, y1 = min(boxes[i][2], boxes[j][2]), min(boxes[i][3], boxes[j][3])
            inter = max(0.0, x1 - x0) * max(0.0, y1 - y0)
            a_i = (boxes[i][2] - boxes[i][0]) * (boxes[i][3] - boxes[i][1])
            a_j = (boxes[j][2] - boxes[j][0]) * (boxes[j][3] - boxes[j][1])
            union = a_i + a_j - inter
            if union > 0 and inter / union > thr:
                ok = False
                break
        if ok:
            keep.append(i)
    return keep


def random_boxes(n, seed):
    g = torch.Generator().manual_seed(seed)
    xy = torch.rand(n, 2, generator=g) * 100
    wh = torch.rand(n, 2, generator=g) * 40 + 1
    return torch.cat([xy, xy + wh], dim=1), torch.rand(n, generator=g)  # distinct scores


def test_nms_matches_brute_force_reference():
    for seed, thr in ((0, 0.5), (1, 0.3), (2, 0.7), (3, 0.0)):
        boxes, scores = random_boxes(200, seed)
        got = nms(boxes, scores, thr).tolist()
        assert got == brute_force_nms(boxes.tolist(), scores.tolist(), thr)
        assert 0 < len(got) < 200  # the cases really suppress something


def test_batched_nms_never_suppresses_across_categories():
    boxes, scores = random_boxes(150, 4)
    cats = torch.randint(0, 3, (150,), generator=torch.Generator().manual_seed(5))
    got = set(batched_nms(boxes, scores, cats, 0.4).tolist())
    want = set()
    for c in range(3):
        idx = (cats == c).nonzero().flatten()
        want |= {int(idx[k]) for k in brute_force_nms(boxes[idx].tolist(), scores[idx].tolist(), 0.4)}
    assert got == want
    # the same boxes in one category suppress more
    assert len(batched_nms(boxes, scores, torch.zeros(150), 0.4)) < len(got)


def test_box_area_and_edge_cases():
    boxes = torch.tensor([[0.0, 0.0, 4.0, 3.0], [1.0, 1.0, 1.0, 5.0]])
    assert box_area(boxes).tolist() == [12.0, 0.0]
    assert nms(torch.zeros(0, 4), torch.zeros(0), 0.5).tolist() == []
    # equal scores: input order decides (stable), identical boxes suppress each other
    same = torch.tensor([[0.0, 0.0, 2.0, 2.0]] * 3)
    assert nms(same, torch.ones(3), 0.5).tolist() == [0]
    # IoU exactly at the threshold is kept (suppression needs IoU > threshold)
    half = torch.tensor([[0.0, 0.0, 2.0, 1.0], [0.0, 0.0, 1.0, 1.0]])
    assert nms(half, torch.tensor([1.0, 0.5]), 0.5).tolist() == [0, 1]
