"""A quantized-weight cache file whose tensor data was damaged (header intact) is never used
silently (issue 22): its content hash is checked, it is dropped with a warning and rewritten."""
import json
import struct

import pytest
import torch
import torch.nn as nn

import fastpipes
from fastpipes.errors import InputError
from fastpipes.passes.quantize import load_quantized, save_quantized


def _net() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(nn.Linear(128, 256), nn.ReLU(), nn.Linear(256, 128))


def _flip_data_bytes(path, tensor: str) -> None:
    """Flip bytes inside `tensor`'s data; the safetensors header stays as it was."""
    raw = bytearray(path.read_bytes())
    (n,) = struct.unpack("<Q", raw[:8])
    start, end = json.loads(raw[8:8 + n])[tensor]["data_offsets"]
    for i in range(8 + n + start + 3, 8 + n + min(end, start + 64), 7):
        raw[i] ^= 0x5A
    path.write_bytes(bytes(raw))


@pytest.mark.parametrize("dtype", ["int8", "int4"])
def test_a_cache_file_with_flipped_data_is_dropped_and_quantized_again(tmp_path, dtype):
    cfg = {"quantize": {"dtype": dtype, "group_size": 32, "min_features": 1,
                        "cache_dir": str(tmp_path)}}
    fastpipes.accelerate(_net(), cfg)
    (path,) = tmp_path.glob("*.safetensors")
    _flip_data_bytes(path, "0.weight")
    fresh, net = _net(), _net()
    fastpipes.accelerate(fresh, {"quantize": {**cfg["quantize"], "cache_dir": None}})
    report = fastpipes.accelerate(net, cfg)
    assert any("does not match the content hash" in w for w in report.warnings), report.warnings
    x = torch.randn(4, 128)
    with torch.no_grad():
        assert torch.equal(net(x), fresh(x))  # quantized again, not the damaged weights
    again = fastpipes.accelerate(_net(), cfg)  # the rewritten file is good again
    assert "loaded from" in " ".join(again.passes[0].changes) and not again.warnings


def test_load_quantized_refuses_damaged_data_and_a_file_without_a_hash(tmp_path):
    from safetensors import safe_open
    from safetensors.torch import save_file

    net = _net()
    fastpipes.accelerate(net, {"quantize": {"dtype": "int8", "min_features": 1}})
    path = tmp_path / "q.safetensors"
    save_quantized(net, path)
    with safe_open(str(path), framework="pt") as f:
        meta, tensors = f.metadata(), {k: f.get_tensor(k).clone() for k in f.keys()}
    _flip_data_bytes(path, "2.scales")
    target = _net()
    with pytest.raises(InputError, match="does not match the content hash in its header"):
        load_quantized(target, path)
    assert all(type(m) is nn.Linear for m in (target[0], target[2]))  # untouched
    old = {k: v for k, v in meta.items() if k != "content_sha256"}  # an older fastpipes' file
    save_file(tensors, str(path), metadata=old)
    with pytest.raises(InputError, match="no content hash"):
        load_quantized(target, path)
