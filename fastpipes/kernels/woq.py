"""Quantized Linear layers on PyTorch's CPU kernels (gpt-fast / torchao style).

- int8: symmetric, one scale per output channel; ``aten._weight_int8pack_mm(x, w_int8, scales)``.
- int4: asymmetric, group-wise along the input dim (group 32/64/128); the weight is packed by
  ``aten._convert_weight_to_int4pack_for_cpu`` and multiplied by
  ``aten._weight_int4pack_mm_for_cpu(x, packed, group_size, scales_and_zeros)``.
- int8 dynamic (W8A8): int8 weights as above, activations quantized per row at run time,
  ``aten._int_mm`` (int8 x int8 -> int32); for compute-bound layers, see
  :class:`Int8DynamicLinear`.

Decode is a GEMV per layer, bound by reading weights: int8 reads 1/4 and int4 1/8 of the
FP32 bytes. Activations run in ``act_dtype`` (the kernels need scales in the same dtype);
the output is cast back to the caller's dtype, so a quantized layer is a drop-in.

What the CPU kernels need, read from their source (aten/src/ATen/native/cpu/int8mm_kernel.cpp,
int4mm_kernel.cpp) and checked by tests/test_kernel_woq.py; breaking it reads out of bounds
(wrong numbers, or SIGSEGV) rather than raising:

- int8, BF16 activations: the AVX-512 loop steps K by 16 with no tail and uses *aligned*
  loads: the activation rows must start on 32 bytes, the weight rows on 16. So K is padded
  to a multiple of 16 (:data:`INT8_K_MULTIPLE`; zero weight columns, zero activation
  columns at run time), and a tensor that does not start on 64 bytes (a view, or a tensor
  memory-mapped from a file) is copied before it reaches the kernel.
- int4: N must be a multiple of 16 (it packs 16 output channels at a time; other layers are
  refused, see :meth:`Int4WeightOnlyLinear.unsupported`) and K a multiple of the group size:
  K is padded to it, as gpt-fast does. Its loads are unaligned.

>>> import torch
>>> lin = torch.nn.Linear(64, 32)
>>> q = Int8WeightOnlyLinear.from_linear(lin)
>>> q(torch.randn(2, 64)).shape
torch.Size([2, 32])
"""
from __future__ import annotations

import functools
import hashlib

import torch
import torch.nn as nn
import torch.nn.functional as F

from fastpipes.kernels import woq_prefill as prefill

ACT_DTYPES = {"float32": torch.float32, "bfloat16": torch.bfloat16}
INT4_GROUP_SIZES = (32, 64, 128)
INT8_K_MULTIPLE = 16  # the AVX-512 int8 kernel's K step (AVX2: 8)
INT4_N_MULTIPLE = 16  # the int4 packing's smallest block of output channels
ALIGN = 64  # bytes; what PyTorch's CPU allocator gives every fresh tensor


def padded(k: int, multiple: int) -> int:
    """`k` rounded up to a multiple of `multiple`."""
    return -(-k // multiple) * multiple


def pad_k(w: torch.Tensor, k_padded: int) -> torch.Tensor:
    """w: [N, K] -> [N, k_padded] with zero columns on the right (no copy if K fits)."""
    return w if w.shape[-1] == k_padded else F.pad(w, (0, k_padded - w.shape[-1]))


def aligned(t: torch.Tensor) -> torch.Tensor:
    """`t` itself if it starts on :data:`ALIGN` bytes, else an owned, aligned copy.

    Eager only: under torch.compile the check is skipped (Inductor allocates its own buffers).
    """
    if torch.compiler.is_compiling() or t.data_ptr() % ALIGN == 0:
        return t
    return t.clone(memory_format=torch.contiguous_format)


ROWS = 4096  # output channels quantized at a time: temporaries stay small (lm_head: 128k rows)
# A prompt (many rows) runs a dense GEMM the hardware accelerates instead of the row-wise
# packed kernels, which ran a 512-token Llama-3.2-1B prefill at or below FP32 speed: from how
# many rows, in which dtype, is decided once per layer when it is built
# (kernels/woq_prefill.py's prompt_plan), into its prompt_rows / prompt_dtype. Decode (1 row
# per sequence) keeps the packed kernels.


def quantize_int8(w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Symmetric per-output-channel int8. w: [N, K] -> (w_int8 [N, K], scales [N] fp32)."""
    n, k = w.shape
    w_int8, scales = torch.empty(n, k, dtype=torch.int8), torch.empty(n)
    for s in range(0, n, ROWS):
        blk = w[s:s + ROWS].detach().float()  # [rows, K]
        sc = (blk.abs().amax(dim=1) / 127.0).clamp(min=1e-8)  # [rows]
        w_int8[s:s + ROWS] = torch.round(blk / sc[:, None]).clamp_(-128, 127)
        scales[s:s + ROWS] = sc
    return w_int8, scales


def quantize_int4(w: torch.Tensor, group_size: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Asymmetric group-wise int4 (values 0..15).

    w: [N, K] -> (w_int [N, K] int32, scales_and_zeros [K // group_size, N, 2] fp32),
    laid out as the CPU int4 kernel wants: it computes (q - 8) * scale + zero, so
    zero = min + 8 * scale (gpt-fast's convention).
    """
    n, k = w.shape
    assert k % group_size == 0, "caller checks divisibility"
    g = k // group_size
    w_int, sz = torch.empty(n, k, dtype=torch.int32), torch.empty(n, g, 2)
    for s in range(0, n, ROWS):
        wg = w[s:s + ROWS].detach().float().reshape(-1, g, group_size)  # [rows, G, gs]
        lo = wg.amin(dim=-1, keepdim=True)
        hi = wg.amax(dim=-1, keepdim=True)
        scales = ((hi - lo) / 15.0).clamp(min=1e-6)  # [rows, G, 1]
        w_int[s:s + ROWS] = torch.round((wg - lo) / scales).clamp_(0, 15).reshape(-1, k)
        sz[s:s + ROWS] = torch.cat([scales, lo + 8.0 * scales], dim=-1)  # [rows, G, 2]
    return w_int, sz.transpose(0, 1).contiguous()  # [G, N, 2]


def dequantize_int4(w_int: torch.Tensor, sz: torch.Tensor, group_size: int) -> torch.Tensor:
    """Reference inverse of :func:`quantize_int4` (for tests): [N, K] fp32."""
    n, k = w_int.shape
    scales, zeros = sz[..., 0].t(), sz[..., 1].t()  # [N, G]
    wg = (w_int.reshape(n, k // group_size, group_size).float() - 8.0)
    return (wg * scales[..., None] + zeros[..., None]).reshape(n, k)


def _rows_apply(layer: nn.Module, x: torch.Tensor, matmul) -> torch.Tensor:
    """What every quantized layer does around its kernel: x [..., K] as rows [M, K],
    `matmul` -> [M, N], bias added, back to [..., N] in the caller's dtype."""
    shape = x.shape
    y = matmul(x.reshape(-1, shape[-1]))
    if layer.bias is not None:
        y = y + layer.bias
    return y.reshape(*shape[:-1], layer.out_features).to(x.dtype)


def _act_dtype(act_dtype: str | torch.dtype) -> torch.dtype:
    return ACT_DTYPES[act_dtype] if isinstance(act_dtype, str) else act_dtype


def _prompt(layer: nn.Module) -> str:
    return (f", prompts from {layer.prompt_rows} rows on a dense {layer.prompt_dtype} GEMM"
            if layer.prompt_rows else "")


def _kernel_input(x2: torch.Tensor, dtype: torch.dtype, k_padded: int) -> torch.Tensor:
    """x2 [M, K] -> [M, k_padded] in `dtype`, starting on an aligned address."""
    return aligned(pad_k(x2.to(dtype), k_padded))


@functools.lru_cache(maxsize=None)
def int4_packing() -> str:
    """What identifies this process's int4 packed layout: the torch version and a hash of
    the packing of a probe (two full 64-channel blocks, a 32- and a 16-channel tail, every
    4-bit value). The layout depends on the ISA the kernel was dispatched for (AVX-512 packs
    64 channels per block, AVX2 32), so a file of packed weights is read only where this
    string is the same."""
    n, k = 2 * 64 + 32 + 16, 64
    w = (torch.arange(n * k, dtype=torch.int32).reshape(n, k) * 7 + 3) % 16
    packed = torch.ops.aten._convert_weight_to_int4pack_for_cpu(w, 1)
    digest = hashlib.sha256(str(tuple(packed.shape)).encode())
    digest.update(packed.contiguous().view(torch.uint8).numpy().tobytes())
    return f"torch {torch.__version__}, packing {digest.hexdigest()[:16]}"


class Int8WeightOnlyLinear(nn.Module):
    """y = x @ (w_int8 * scale).T + b with the int8 weight read directly by the kernel.

    weight: [N, k_padded] int8, K rounded up to :data:`INT8_K_MULTIPLE` with zero columns.
    """

    # its scales and bias are in the kernel's activation dtype, and it casts its input and
    # output at the boundary: a later dtype cast of the model must leave them alone
    keeps_own_dtypes = True

    def __init__(self, in_features: int, out_features: int, bias: bool,
                 act_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.k_padded = padded(in_features, INT8_K_MULTIPLE)
        self.act_dtype = act_dtype
        self.prompt_rows, self.prompt_dtype = prefill.prompt_plan("int8", act_dtype)
        self.register_buffer("weight", torch.empty(out_features, self.k_padded, dtype=torch.int8))
        self.register_buffer("scales", torch.empty(out_features, dtype=act_dtype))
        self.register_buffer("bias", torch.empty(out_features, dtype=act_dtype) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear, act_dtype: str | torch.dtype = "bfloat16"):
        dt = _act_dtype(act_dtype)
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, dt)
        w_int8, scales = quantize_int8(linear.weight)
        q.weight, q.scales = pad_k(w_int8, q.k_padded).contiguous(), scales.to(dt)
        if linear.bias is not None:
            q.bias = linear.bias.detach().to(dt).clone()
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _rows_apply(self, x, self._matmul)

    def _matmul(self, x2: torch.Tensor) -> torch.Tensor:
        if self.prompt_rows and x2.shape[0] >= self.prompt_rows:  # a prompt: the dense GEMM
            return prefill.int8_dense(x2, self.weight, self.scales, self.in_features,
                                      self.prompt_dtype)
        return torch.ops.aten._weight_int8pack_mm(
            _kernel_input(x2, self.act_dtype, self.k_padded), aligned(self.weight), self.scales)

    def extra_repr(self) -> str:
        pad = f" (padded to {self.k_padded})" if self.k_padded != self.in_features else ""
        return (f"in_features={self.in_features}{pad}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, act_dtype={self.act_dtype}{_prompt(self)}")


class Int4WeightOnlyLinear(nn.Module):
    """Group-wise asymmetric int4 weights, packed for the CPU int4 kernel.

    K is padded to a multiple of the group size (``k_padded``): zero weight columns, and
    zero activation columns appended at run time (gpt-fast's approach), so a Llama
    down_proj with 704 inputs is quantized like the others instead of being left in FP32.
    """

    keeps_own_dtypes = True

    def __init__(self, in_features: int, out_features: int, bias: bool, group_size: int = 128,
                 act_dtype: torch.dtype = torch.bfloat16):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.group_size, self.act_dtype = group_size, act_dtype
        self.k_padded = padded(in_features, group_size)
        self.prompt_rows, self.prompt_dtype = prefill.prompt_plan("int4", act_dtype)
        # packed: two 4-bit values per byte, [N, k_padded // 2] uint8 (the kernel's own layout)
        self.register_buffer("weight", torch.empty(out_features, self.k_padded // 2,
                                                   dtype=torch.uint8))
        self.register_buffer("scales_and_zeros", torch.empty(
            self.k_padded // group_size, out_features, 2, dtype=act_dtype))
        self.register_buffer("bias", torch.empty(out_features, dtype=act_dtype) if bias else None)

    @staticmethod
    def unsupported(linear: nn.Linear) -> str | None:
        """Why the int4 kernel cannot take this layer, or None if it can (any K: padded)."""
        if linear.out_features % INT4_N_MULTIPLE:
            return (f"out_features {linear.out_features} is not a multiple of "
                    f"{INT4_N_MULTIPLE} (the CPU int4 kernel packs {INT4_N_MULTIPLE} "
                    "output channels at a time)")
        return None

    @classmethod
    def supports(cls, linear: nn.Linear, group_size: int = 128) -> bool:
        return cls.unsupported(linear) is None

    @classmethod
    def from_linear(cls, linear: nn.Linear, group_size: int = 128,
                    act_dtype: str | torch.dtype = "bfloat16"):
        assert cls.supports(linear), "caller checks unsupported()"
        dt = _act_dtype(act_dtype)
        q = cls(linear.in_features, linear.out_features, linear.bias is not None, group_size, dt)
        # ROWS output channels at a time (a multiple of every packing's channel block): the
        # int32 values of a 128256-row lm_head would be 1 GB at once
        for s in range(0, linear.out_features, ROWS):
            w_int, sz_rows = quantize_int4(pad_k(linear.weight[s:s + ROWS].detach(),
                                                 q.k_padded), group_size)
            q.weight[s:s + ROWS] = torch.ops.aten._convert_weight_to_int4pack_for_cpu(w_int, 1)
            q.scales_and_zeros[:, s:s + ROWS] = sz_rows
        if linear.bias is not None:
            q.bias = linear.bias.detach().to(dt).clone()
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _rows_apply(self, x, self._matmul)

    def _matmul(self, x2: torch.Tensor) -> torch.Tensor:
        if self.prompt_rows and x2.shape[0] >= self.prompt_rows:  # a prompt: the dense GEMM
            return prefill.int4_dense(x2, self.weight, self.scales_and_zeros, self.k_padded,
                                      self.group_size, self.prompt_dtype)
        return torch.ops.aten._weight_int4pack_mm_for_cpu(
            _kernel_input(x2, self.act_dtype, self.k_padded), self.weight, self.group_size,
            self.scales_and_zeros)

    def extra_repr(self) -> str:
        pad = f" (padded to {self.k_padded})" if self.k_padded != self.in_features else ""
        return (f"in_features={self.in_features}{pad}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, group_size={self.group_size}, "
                f"act_dtype={self.act_dtype}{_prompt(self)}")


class Int8DynamicLinear(nn.Module):
    """W8A8 dynamic: int8 weights (symmetric, per output channel) and int8 activations
    quantized per row at run time; the product is an int8 x int8 -> int32 GEMM
    (``aten._int_mm``), rescaled to FP32.

    For compute-bound layers (SAM's image encoder, a UNet at 512x512), where weight-only
    kernels gain nothing: on our Zen 4 ``aten._int_mm`` runs at 3.2-3.7x the FP32 GEMM
    (benchmarks/kernels_probe.py). Eager, the per-row quantize and the rescale are extra
    passes over the activations and eat most of that (1.15-1.7x per layer); under
    ``torch.compile`` Inductor fuses them, which is how the recipes use it. The price is
    activation rounding (a relative error of ~9e-3 per layer on random data), so recipes
    using it are judged by the stated quantized bars.
    """

    keeps_own_dtypes = True

    def __init__(self, in_features: int, out_features: int, bias: bool):
        super().__init__()
        self.in_features, self.out_features = in_features, out_features
        self.act_dtype = torch.float32  # the dtype it quantizes from and rescales to
        self.register_buffer("weight", torch.empty(out_features, in_features, dtype=torch.int8))
        self.register_buffer("scales", torch.empty(out_features, dtype=torch.float32))
        self.register_buffer("bias", torch.empty(out_features) if bias else None)

    @classmethod
    def from_linear(cls, linear: nn.Linear) -> "Int8DynamicLinear":
        q = cls(linear.in_features, linear.out_features, linear.bias is not None)
        q.weight, q.scales = quantize_int8(linear.weight)
        if linear.bias is not None:
            q.bias = linear.bias.detach().float().clone()
        return q

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return _rows_apply(self, x, self._matmul)

    def _matmul(self, x2: torch.Tensor) -> torch.Tensor:
        x2 = x2.float()
        x_scale = (x2.abs().amax(dim=1, keepdim=True) / 127.0).clamp(min=1e-8)  # [M, 1]
        x_int8 = torch.round(x2 / x_scale).clamp(-127, 127).to(torch.int8)
        acc = torch._int_mm(x_int8, self.weight.t())  # [M, N] int32
        return acc.float() * x_scale * self.scales

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, activations=int8 per row (dynamic)")


def weight_bytes(module: nn.Module) -> int:
    """Bytes of every parameter and buffer of `module` (what a decode step reads, roughly)."""
    seen, total = set(), 0
    for t in list(module.parameters()) + list(module.buffers()):
        if id(t) not in seen:
            seen.add(id(t))
            total += t.numel() * t.element_size()
    return total


__all__ = ["Int8WeightOnlyLinear", "Int4WeightOnlyLinear", "Int8DynamicLinear", "quantize_int8", "quantize_int4",
           "dequantize_int4", "weight_bytes", "ACT_DTYPES", "INT4_GROUP_SIZES", "INT8_K_MULTIPLE",
           "INT4_N_MULTIPLE", "aligned", "pad_k", "padded", "int4_packing"]
