"""BF16 Linear on oneDNN-packed weights, with the packed copy kept out of compiled graphs.

oneDNN runs a BF16 matmul fastest on a weight reordered into its blocked layout for this
CPU: 1.07-1.16x over ``F.linear`` at SAM vit_b's shapes and 2.3x for one row (a decode
step) on avx512-bf16 (benchmarks/RESULTS.md [P1]). Inductor can reorder weights itself
(``cpp.weight_prepack``), but its reordered weights are MKLDNN tensors that its FX-graph
cache cannot pickle, so such a graph is compiled again in every process. Here the packed
copy lives on a :class:`PackedLinear` module instead, and a graph only holds the call
``torch.ops.fastpipes.linear_packed(x, weight, bias)`` with the plain weight: the op finds
the packed copy by the weight's address. The graph stays cacheable.

The copy is made when the module is built and again when its weight or bias changes in
place (their version counters move, e.g. after ``load_state_dict``). The op called with a
weight no live PackedLinear owns computes the same product with ``F.linear`` (correct,
just not packed) and counts it in :data:`STATS`.

>>> layer = PackedLinear(torch.nn.Linear(64, 32))  # doctest: +SKIP
>>> layer(torch.randn(4, 64)).dtype  # doctest: +SKIP
torch.float32
"""
from __future__ import annotations

import weakref

import torch
import torch.nn as nn
import torch.nn.functional as F

_OWNERS: dict[int, "weakref.ref[PackedLinear]"] = {}  # weight.data_ptr() -> its packer
STATS = {"packed": 0, "unowned": 0}  # calls of the op by path (tests read it)


def why_unavailable() -> str | None:
    """None when oneDNN can pack and run BF16 weights here, else why not."""
    if not torch.backends.mkldnn.is_available():
        return "this torch build has no oneDNN (mkldnn)"
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        return "oneDNN has no BF16 kernels on this CPU"
    return None


def _versions(layer: "PackedLinear") -> tuple[int, int]:
    return layer.weight._version, -1 if layer.bias is None else layer.bias._version


class PackedLinear(nn.Module):
    """Drop-in for ``nn.Linear`` (same ``weight`` / ``bias`` parameters, same state-dict
    keys) computing in BF16 on a packed copy of the weight. The output is BF16 under CPU
    autocast (as autocast's own linear) and the input's dtype otherwise."""

    def __init__(self, linear: nn.Linear):
        super().__init__()
        self.in_features, self.out_features = linear.in_features, linear.out_features
        self.weight, self.bias = linear.weight, linear.bias
        self._pack()

    def _pack(self) -> None:
        with torch.no_grad():
            self._packed = torch.ops.mkldnn._reorder_linear_weight(
                self.weight.detach().to(torch.bfloat16), None)
            self._bias16 = None if self.bias is None else self.bias.detach().to(torch.bfloat16)
        self._packed_at = _versions(self)
        ptr = self.weight.data_ptr()

        def forget(ref, ptr=ptr):  # the module is gone: drop its entry unless replaced
            if _OWNERS.get(ptr) is ref:
                del _OWNERS[ptr]

        _OWNERS[ptr] = weakref.ref(self, forget)

    def packed(self) -> tuple[torch.Tensor, torch.Tensor | None]:
        """The packed weight and BF16 bias, re-made if either parameter changed in place."""
        if _versions(self) != self._packed_at:
            self._pack()
        return self._packed, self._bias16

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = torch.ops.fastpipes.linear_packed.default(x.to(torch.bfloat16), self.weight,
                                                        self.bias)
        return out if torch.is_autocast_enabled(x.device.type) else out.to(x.dtype)

    def __getstate__(self):  # MKLDNN tensors do not pickle or deep-copy: re-pack instead
        state = self.__dict__.copy()
        for key in ("_packed", "_bias16", "_packed_at"):
            state.pop(key, None)
        return state

    def __setstate__(self, state) -> None:
        self.__dict__.update(state)
        self._pack()

    def extra_repr(self) -> str:
        return (f"in_features={self.in_features}, out_features={self.out_features}, "
                f"bias={self.bias is not None}, weight=BF16 packed by oneDNN")


def _owner(weight: torch.Tensor, bias: torch.Tensor | None) -> PackedLinear | None:
    ref = _OWNERS.get(weight.data_ptr())
    layer = ref() if ref is not None else None
    # the owner's weight must still be at this address: one whose data was replaced (e.g.
    # module.to(...)) leaves a stale entry, and the address may since hold another tensor
    if layer is None or layer.weight.data_ptr() != weight.data_ptr() or (
            layer.weight.shape != weight.shape) or ((bias is None) != (layer.bias is None)) or (
            bias is not None and bias.data_ptr() != layer.bias.data_ptr()):
        return None
    return layer


def linear_packed(x: torch.Tensor, weight: torch.Tensor,
                  bias: torch.Tensor | None) -> torch.Tensor:
    """``F.linear`` in BF16 (x, weight, bias cast), on `weight`'s packed copy when a
    PackedLinear owns it. Returns BF16. (The CPU kernel of ``torch.ops.fastpipes.linear_packed``.)"""
    layer = _owner(weight, bias)
    if x.dtype != torch.bfloat16:
        x = x.to(torch.bfloat16)
    if layer is None:
        STATS["unowned"] += 1
        return F.linear(x, weight.to(torch.bfloat16),
                        None if bias is None else bias.to(torch.bfloat16))
    STATS["packed"] += 1
    packed, bias16 = layer.packed()
    return torch.ops.mkldnn._linear_pointwise(x, packed, bias16, "none", [], "")


# Defined with torch.library.Library rather than @custom_op: the op runs once per Linear per
# call, and custom_op's wrapper costs about 6 us more per call (tiny SAM encoder: 20 calls)
_LIB = torch.library.Library("fastpipes", "FRAGMENT")
_LIB.define("linear_packed(Tensor x, Tensor weight, Tensor? bias) -> Tensor")
_LIB.impl("linear_packed", linear_packed, "CPU")


@torch.library.register_fake("fastpipes::linear_packed")
def _(x, weight, bias):
    return x.new_empty(*x.shape[:-1], weight.shape[0], dtype=torch.bfloat16)


def pack_linears(module: nn.Module, min_size: int = 0) -> tuple[int, int, int]:
    """Swap every ``nn.Linear`` (exactly that type: subclasses and quantized layers are left
    alone) with at least `min_size` weight elements under `module` for a PackedLinear;
    returns (layers swapped, bytes packed, smaller layers left alone)."""
    made: dict[int, PackedLinear] = {}  # a Linear shared by two parents is packed once
    small: set[int] = set()
    for parent in list(module.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is not nn.Linear:
                continue
            if child.weight.numel() < min_size:
                small.add(id(child))
                continue
            if id(child) not in made:
                made[id(child)] = PackedLinear(child)
            setattr(parent, name, made[id(child)])
    return len(made), sum(m.weight.numel() * 2 for m in made.values()), len(small)


__all__ = ["PackedLinear", "linear_packed", "pack_linears", "why_unavailable", "STATS"]
