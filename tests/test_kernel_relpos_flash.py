"""fastpipes' native rel-pos flash-attention kernel (kernels/relpos_flash.py) against FP32
math and against upstream segment-anything Attention, its build cache, and the recipe.

Tolerance: the kernel computes in BF16 (FP32 accumulation): relative L2 error of the output
<= 1e-2 against FP32 math on BF16 inputs (measured ~2e-3: the output's BF16 rounding).
The fast (AVX512-BF16) path runs only where the CPU has it; the portable path everywhere a
C++ compiler is found.
"""
import pytest
import torch

from fastpipes.kernels import native
from fastpipes.kernels.relpos_flash import relpos_attention, why_unavailable
from fastpipes.passes.attention_sites.sam import SamSdpaAttention
from fastpipes.sam.pipeline import sam_modeling

try:
    native.compiler()
    NO_COMPILER = None
except native.NativeUnavailable as e:
    NO_COMPILER = str(e)
pytestmark = pytest.mark.skipif(NO_COMPILER is not None, reason=f"{NO_COMPILER}")
FAST = NO_COMPILER is None and why_unavailable() is None
PATHS = [True] + ([False] if FAST else [])  # portable, then fast where this CPU has it


def math_reference(q, k, v, rel_h, rel_w, scale):
    B, N, L, C = q.shape
    attn = (q.float() * scale) @ k.float().transpose(-1, -2)
    if rel_h is not None:
        attn = attn + (rel_h[..., :, None] + rel_w[..., None, :]).reshape(B, N, L, L)
    return (attn.softmax(-1) @ v.float()).transpose(1, 2)  # [B, L, N, C]


def rel_err(got, want):
    return ((got.float() - want).norm() / want.norm()).item()


@pytest.mark.parametrize("portable", PATHS)
@pytest.mark.parametrize("B,N,H,W,C", [(1, 2, 8, 8, 64), (2, 3, 5, 7, 8), (1, 1, 9, 9, 80),
                                       (1, 2, 3, 13, 24), (2, 2, 14, 14, 64),
                                       # the fast path's other bias forms: W a multiple of
                                       # 16 (one grid row per 16 keys), W > 16 (general)
                                       (1, 2, 4, 32, 64), (1, 1, 17, 20, 16)])
def test_matches_fp32_math(portable, B, N, H, W, C):
    torch.manual_seed(0)
    L = H * W
    q, k, v = (torch.randn(B, N, L, C).to(torch.bfloat16) for _ in range(3))
    rel_h, rel_w = torch.randn(B, N, L, H), torch.randn(B, N, L, W)
    got = relpos_attention(q, k, v, rel_h, rel_w, C ** -0.5, W, portable=portable)
    assert got.shape == (B, L, N, C) and got.dtype == torch.bfloat16
    assert rel_err(got, math_reference(q, k, v, rel_h, rel_w, C ** -0.5)) <= 1e-2
    # the bias is really added: without it the result is far off
    assert rel_err(got, math_reference(q, k, v, None, None, C ** -0.5)) > 0.1


@pytest.mark.parametrize("portable", PATHS)
def test_no_bias_and_strided_inputs(portable):
    torch.manual_seed(1)
    B, L, N, C = 2, 36, 4, 16
    qkv = torch.randn(B, L, 3, N, C).to(torch.bfloat16).permute(2, 0, 3, 1, 4)  # as SAM's
    q, k, v = qkv.unbind(0)
    assert not q.is_contiguous()
    got = relpos_attention(q, k, v, None, None, 0.3, 6, portable=portable)
    assert rel_err(got, math_reference(q, k, v, None, None, 0.3)) <= 1e-2


@pytest.mark.skipif(not FAST, reason=f"fast path unavailable: {why_unavailable()}")
def test_fast_and_portable_paths_agree():
    torch.manual_seed(2)
    q, k, v = (torch.randn(1, 2, 100, 32).to(torch.bfloat16) for _ in range(3))
    rel_h, rel_w = torch.randn(1, 2, 100, 10), torch.randn(1, 2, 100, 10)
    fast = relpos_attention(q, k, v, rel_h, rel_w, 0.2, 10).float()
    slow = relpos_attention(q, k, v, rel_h, rel_w, 0.2, 10, portable=True).float()
    assert (fast - slow).abs().max().item() <= 2e-2  # one BF16 rounding of O(1) outputs


@pytest.mark.parametrize("portable", PATHS)
def test_large_bias_moves_the_running_max(portable):
    # a bias growing along the keys makes each key block's max far above the last one's, so
    # the running max (and with it O and the row sums) is rescaled many times per row
    torch.manual_seed(3)
    B, N, H, W, C = 1, 2, 12, 12, 32
    L = H * W
    q, k, v = (torch.randn(B, N, L, C).to(torch.bfloat16) for _ in range(3))
    rel_h = torch.linspace(-40, 40, H).expand(B, N, L, H).contiguous()
    rel_w = torch.randn(B, N, L, W) * 3
    got = relpos_attention(q, k, v, rel_h, rel_w, C ** -0.5, W, portable=portable)
    assert torch.isfinite(got.float()).all()
    assert rel_err(got, math_reference(q, k, v, rel_h, rel_w, C ** -0.5)) <= 1e-2


def upstream_attention(dim=64, heads=4, size=(8, 8)):
    Attention = sam_modeling().image_encoder.Attention
    torch.manual_seed(0)
    attn = Attention(dim, num_heads=heads, qkv_bias=True, use_rel_pos=True, input_size=size)
    with torch.no_grad():
        attn.rel_pos_h.normal_(0, 0.5)
        attn.rel_pos_w.normal_(0, 0.5)
    return attn.eval()


@pytest.mark.skipif(not FAST, reason=f"fast path unavailable: {why_unavailable()}")
@pytest.mark.parametrize("hw", [(8, 8), (3, 3)])
def test_sam_attention_native_matches_upstream(hw):
    ref = upstream_attention(size=hw)
    ours = SamSdpaAttention(ref, 0, native=True)
    x = torch.randn(2, *hw, 64)
    with torch.no_grad():
        want = ref(x)
        got = ours(x)
    assert got.dtype == x.dtype and got.shape == want.shape
    assert rel_err(got, want) <= 1e-2


@pytest.mark.skipif(not FAST, reason=f"fast path unavailable: {why_unavailable()}")
def test_compiles_as_one_opaque_op():
    ref = upstream_attention()
    ours = SamSdpaAttention(ref, 0, native=True)
    x = torch.randn(1, 8, 8, 64)
    torch._dynamo.reset()
    compiled = torch.compile(ours, fullgraph=True)  # fullgraph: no graph break at the op
    with torch.no_grad():
        assert rel_err(compiled(x), ref(x)) <= 1e-2


def test_library_is_built_once_into_the_cache(tmp_path, monkeypatch):
    from fastpipes.cache_clear import plan_clear

    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(tmp_path))
    native.library.cache_clear()
    try:
        native.library("relpos_attention")
        built = sorted((tmp_path / "kernels").glob("relpos_attention-*.so"))
        assert len(built) == 1
        stamp = built[0].stat().st_mtime_ns
        native.library.cache_clear()
        native.library("relpos_attention")  # a new process: read, not built again
        assert built[0].stat().st_mtime_ns == stamp
        remove, keep = plan_clear(["kernels"])
        assert built[0] in remove or built[0].parent in remove, keep
    finally:
        native.library.cache_clear()


def test_a_changed_header_builds_a_new_library(tmp_path, monkeypatch):
    csrc = tmp_path / "csrc"
    csrc.mkdir()
    (csrc / "probe.cpp").write_text('#include "probe.h"\nextern "C" int probe() { return X; }\n')
    monkeypatch.setenv("FASTPIPES_CACHE_DIR", str(tmp_path / "cache"))
    monkeypatch.setattr(native, "CSRC", csrc)
    try:
        for value in (1, 2):
            (csrc / "probe.h").write_text(f"#define X {value}\n")
            native.library.cache_clear()
            assert native.library("probe").probe() == value
        assert len(list((tmp_path / "cache" / "kernels").glob("probe-*.so"))) == 2
    finally:
        native.library.cache_clear()


def test_no_compiler_is_a_clear_error(monkeypatch):
    monkeypatch.setenv("CXX", "/nonexistent/c++")
    monkeypatch.setattr(native.shutil, "which", lambda name: None)
    with pytest.raises(native.NativeUnavailable, match="no C\\+\\+ compiler"):
        native.compiler()


def test_preflight_refuses_native_where_it_cannot_run(monkeypatch):
    import fastpipes
    import fastpipes.passes.attention as attention
    from fastpipes.errors import PreflightError
    from fastpipes.sam.pipeline import build_sam

    monkeypatch.setattr(attention, "native_unavailable", lambda: "this CPU lacks AVX512-BF16")
    sam = build_sam("tiny")
    before = {n: type(m) for n, m in sam.named_modules()}
    with pytest.raises(PreflightError, match="backend 'native' is unavailable.*AVX512-BF16"):
        fastpipes.accelerate(sam, "sam_bf16_native", ["requires.native_bf16=false"])
    assert {n: type(m) for n, m in sam.named_modules()} == before
