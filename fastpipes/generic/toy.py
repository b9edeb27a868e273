"""The generic family's own pipeline: a tiny seeded conv + MLP (``fastpipes bench toy``),
built in a fraction of a second with no model library."""
from __future__ import annotations

import torch
import torch.nn as nn

# size -> (channels, image side, hidden width)
SIZES = {"tiny": (8, 16, 64), "small": (32, 64, 256), "full": (64, 128, 1024)}


class ToyNet(nn.Module):
    def __init__(self, channels: int, side: int, hidden: int, classes: int = 10):
        super().__init__()
        self.conv1 = nn.Conv2d(3, channels, 3, padding=1)
        self.conv2 = nn.Conv2d(channels, channels, 3, padding=1, stride=2)
        self.mlp = nn.Sequential(nn.Linear(channels * (side // 2) ** 2, hidden), nn.GELU(),
                                 nn.Linear(hidden, classes))

    graph_break = False  # set by the workload's graph_break option

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # x: [B, 3, H, W]
        x = torch.relu(self.conv2(torch.relu(self.conv1(x))))  # [B, C, H/2, W/2]
        if self.graph_break:
            torch._dynamo.graph_break()
        return self.mlp(x.flatten(1))  # [B, classes]


def build_toy(size: str = "tiny", seed: int = 0, device: str | torch.device = "cpu",
              dtype: torch.dtype = torch.float32) -> ToyNet:
    """A ToyNet in eval mode with weights seeded by `seed`, on `device`.

    >>> build_toy("tiny")(torch.zeros(1, 3, 16, 16)).shape
    torch.Size([1, 10])
    """
    torch.manual_seed(seed)
    return ToyNet(*SIZES[size]).eval().to(device=device, dtype=dtype)
