"""Weight-only int8 / int4 Linear layers on CUDA (the CPU ones are in woq.py).

What PyTorch offers on CUDA, read from its source (aten/src/ATen/native/cuda/int4mm.cu,
int8mm.cu; native_functions.yaml):

- int4: ``aten._convert_weight_to_int4pack(w_uint8 [N, K/2], inner_k_tiles)`` packs nibbles
  (high nibble = even column) into the tensor-core layout of the "tinygemm" kernel, and
  ``aten._weight_int4pack_mm(x_bf16 [M, K], packed, group_size, scales_and_zeros)`` with
  scales_and_zeros [K/group, N, 2] BF16 computes ``(q - 8) * scale + zero``: the same
  convention as the CPU kernel (gpt-fast / torchao ``int4_weight_only``). It needs compute
  capability 8.0+ (the H100/H200 are 9.0), BF16 activations, N a multiple of 8 and K a
  multiple of ``inner_k_tiles * 16``; group sizes 32, 64, 128, 256.
- int8: ``aten._weight_int8pack_mm`` has a CUDA kernel only in recent releases (int8mm.cu:
  one warp per output element, FP32 accumulation, activations converted to FP32 first). We
  use gpt-fast's form instead, ``F.linear(x, w_int8.to(x.dtype)) * scales``, which works on
  every torch with CUDA: eager it converts the weight per call (slower than BF16), compiled
  (the recipes compile the decode step) Inductor fuses the conversion into the GEMV, so a
  decode step reads the int8 bytes once.

:func:`unavailable` answers, by trying the kernel once on a tiny problem, whether this
torch and device can run a layer kind, so the quantize pass refuses with the reason
instead of failing inside the first generate.
"""
from __future__ import annotations

import functools

import torch
import torch.nn as nn
import torch.nn.functional as F

INT4_CUDA_GROUP_SIZES = (32, 64, 128, 256)
INNER_K_TILES = 8  # tinygemm's widest K tile: K must be a multiple of 8 * 16 = 128
INT4_CUDA_K_MULTIPLE = INNER_K_TILES * 16
INT4_CUDA_N_MULTIPLE = 8


def _padded(k: int, multiple: int) -> int:
    return -(-k // multiple) * multiple


def _pad_k(w: torch.Tensor, k: int) -> torch.Tensor:
    return w if w.shape[-1] == k else F.pad(w, (0, k - w.shape[-1]))


def _finish(layer: nn.Module, x: torch.Tensor, y2: torch.Tensor) -> torch.Tensor:
    if layer.bias is not None:
        y2 = y2 + layer.bias
    return y2.reshape(*x.shape[:-1], layer.out_features).to(x.dtype)


class CudaInt8WeightOnlyLinear(nn.Module):
    """Symmetric per-output-channel int8 weights on a CUDA device (gpt-fast's form)."""

    keeps_own_dtypes = True

    def __init__(self, in_features: int, out_features: int, bias: bool,
                 act_dtype: torch.dtype = torch.bfloat16, device: str | torch.device = "cuda"):
        super().__init__()
        self.in_features, self.out_features, self.act_dtype = in_features, out_features, act_dtype
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8,
                                                   device=device))
        self.register_buffer("scales", torch.empty(out_features, dtype=act_dtype, device=device))
        self.register_buffer("bias", torch.empty(out_features, dtype=act_dtype, device=device)
                             if bias else None)

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, act_dtype: torch.dtype = torch.bfloat16):
        w = linear.weight.detach()
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, act_dtype,
                w.device)
        wf = w.float()
        scales = (wf.abs().amax(dim=1) / 127.0).clamp(min=1e-8)  # [N]
        q.weight.copy_(torch.round(wf / scales[:, None]).clamp_(-128, 127))
        q.scales.copy_(scales)
        if linear.bias is not None:
            q.bias.copy_(linear.bias.detach())
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = x.reshape(-1, self.in_features).to(self.act_dtype)
        return _finish(self, x, F.linear(x2, self.weight.to(self.act_dtype)) * self.scales)

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, act_dtype={self.act_dtype}, device=cuda")


class CudaInt4WeightOnlyLinear(nn.Module):
    """Group-wise asymmetric int4 weights in tinygemm's layout (``aten._weight_int4pack_mm``)."""

    keeps_own_dtypes = True

    def __init__(self, in_features: int, out_features: int, bias: bool, group_size: int = 128):
        super().__init__()
        self.in_features, self.out_features, self.group_size = in_features, out_features, group_size
        self.act_dtype = torch.bfloat16  # the only activation dtype the CUDA kernel takes
        self.k_padded = _padded(in_features, max(group_size, INT4_CUDA_K_MULTIPLE))
        for name in ("weight", "scales_and_zeros", "bias"):  # set by from_linear
            self.register_buffer(name, None)  # weight: tinygemm's packed int32 layout

    @staticmethod
    def unsupported(linear: nn.Linear) -> str | None:
        if linear.out_features % INT4_CUDA_N_MULTIPLE:
            return (f"out_features {linear.out_features} is not a multiple of "
                    f"{INT4_CUDA_N_MULTIPLE} (the CUDA int4 kernel's tile)")
        return None

    @classmethod
    @torch.no_grad()
    def from_linear(cls, linear: nn.Linear, group_size: int = 128):
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, group_size)
        w_int, sz = quantize_int4_on_device(_pad_k(linear.weight.detach(), q.k_padded), group_size)
        nibbles = ((w_int[:, 0::2] << 4) | w_int[:, 1::2]).to(torch.uint8)  # [N, K/2]
        q.weight = torch.ops.aten._convert_weight_to_int4pack(nibbles.contiguous(), INNER_K_TILES)
        q.scales_and_zeros = sz.to(torch.bfloat16)
        if linear.bias is not None:
            q.bias = linear.bias.detach().to(torch.bfloat16).clone()
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x2 = _pad_k(x.reshape(-1, self.in_features).to(torch.bfloat16), self.k_padded)
        y2 = torch.ops.aten._weight_int4pack_mm(x2.contiguous(), self.weight, self.group_size,
                                                self.scales_and_zeros)
        return _finish(self, x, y2)

    def extra_repr(self) -> str:
        pad = f" (padded to {self.k_padded})" if self.k_padded != self.in_features else ""
        return (f"in_features={self.in_features}{pad}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, group_size={self.group_size}, device=cuda")


def quantize_int4_on_device(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """woq.quantize_int4's arithmetic where `w` lives: (w_int [N, K] int32 0..15,
    scales_and_zeros [K/group, N, 2] fp32), zero = min + 8 * scale."""
    n, k = w.shape
    wg = w.float().reshape(n, k // group_size, group_size)
    lo, hi = wg.amin(dim=-1, keepdim=True), wg.amax(dim=-1, keepdim=True)
    scales = ((hi - lo) / 15.0).clamp(min=1e-6)
    w_int = torch.round((wg - lo) / scales).clamp_(0, 15).to(torch.int32).reshape(n, k)
    sz = torch.cat([scales, lo + 8.0 * scales], dim=-1)  # [N, G, 2]
    return w_int, sz.transpose(0, 1).contiguous()


@functools.lru_cache(maxsize=None)
def unavailable(kind: str, device: str = "cuda") -> str:
    """'' when `kind` (int8 | int4) weight-only layers run on `device`, else why not."""
    dev = torch.device(device)
    if dev.type != "cuda":
        return f"{device} is not a CUDA device"
    if not torch.cuda.is_available():
        return f"torch {torch.__version__} sees no CUDA device"
    major, minor = torch.cuda.get_device_capability(dev)
    if kind == "int4" and major < 8:
        return (f"the CUDA int4 kernel (tinygemm) needs compute capability 8.0 or newer; "
                f"{torch.cuda.get_device_name(dev)} is {major}.{minor}")
    lin = nn.Linear(256, 64, bias=True, device=dev)
    try:
        q = (CudaInt8WeightOnlyLinear.from_linear(lin) if kind == "int8"
             else CudaInt4WeightOnlyLinear.from_linear(lin, 128))
        y = q(torch.randn(2, 256, device=dev))
        torch.cuda.synchronize(dev)
    except (RuntimeError, NotImplementedError, AttributeError) as e:
        first = (str(e).strip().splitlines() or [""])[0][:200]
        return f"torch {torch.__version__} cannot run the CUDA {kind} kernel: {type(e).__name__}: {first}"
    if y.shape != (2, 64) or not torch.isfinite(y).all():
        return f"the CUDA {kind} kernel returned a wrong result on a probe"
    return ""


def quantize_linear_cuda(linear: nn.Linear, dtype: str, group_size: int) -> nn.Module:
    """One CUDA weight-only layer: `dtype` int8 or int4."""
    if dtype == "int8":
        return CudaInt8WeightOnlyLinear.from_linear(linear)
    return CudaInt4WeightOnlyLinear.from_linear(linear, group_size)


__all__ = ["CudaInt8WeightOnlyLinear", "CudaInt4WeightOnlyLinear", "quantize_linear_cuda",
           "quantize_int4_on_device", "unavailable", "INT4_CUDA_GROUP_SIZES"]
