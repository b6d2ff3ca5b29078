"""numba CPU kernels agree with numpy on operands from the core format encoders."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simsparse.core.formats import BSR, CSR, Bitmap, NMCompressed
from simsparse.core.sparsity import NM, Block, Unstructured
from simsparse.kernels import cpu as K

FAST = settings(max_examples=25, deadline=None)


def _w(mask: np.ndarray, seed: int = 0) -> np.ndarray:
    return (mask * np.random.default_rng(seed).standard_normal(mask.shape)).astype(np.float32)


def _x(k: int, m: int, seed: int = 1) -> np.ndarray:
    return np.random.default_rng(seed).standard_normal((k, m), dtype=np.float32)


def _close(a: np.ndarray, b: np.ndarray) -> None:
    np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)


@FAST
@given(n=st.integers(1, 40), k=st.integers(1, 70), m=st.integers(1, 150), d=st.floats(0.0, 1.0),
       mb=st.integers(1, 96))
def test_csr_matches_numpy(n, k, m, d, mb):
    w = _w(np.random.default_rng(2).random((n, k)) < d)
    x = _x(k, m)
    _close(K.spmm_csr(CSR.encode(w), x, mb), w @ x)


@FAST
@given(n=st.integers(1, 40), k=st.integers(1, 70), m=st.integers(1, 150), d=st.floats(0.0, 1.0),
       mb=st.integers(1, 96))
def test_bitmap_matches_numpy(n, k, m, d, mb):
    w = _w(np.random.default_rng(3).random((n, k)) < d)
    x = _x(k, m)
    _close(K.spmm_bitmap(Bitmap.encode(w), x, mb), w @ x)


@pytest.mark.parametrize("bh,bw", [(4, 1), (1, 4), (2, 2), (8, 1)])
@pytest.mark.parametrize("density", [0.05, 0.3, 1.0])
def test_bsr_matches_numpy(bh, bw, density):
    n, k, m = 32, 48, 77
    w = _w(Block(bh, bw, density).mask((n, k), seed=4))
    x = _x(k, m)
    _close(K.spmm_bsr(BSR.encode(w, bh=bh, bw=bw), x, mb=32), w @ x)


def test_bsr_padded_rows():
    # N not a multiple of bh: the padded rows of the last block row are dropped
    w = _w(np.random.default_rng(5).random((10, 16)) < 0.3)
    x = _x(16, 40)
    _close(K.spmm_bsr(BSR.encode(w, bh=4, bw=1, pad=True), x, mb=16), w @ x)


@pytest.mark.parametrize("nm", [(2, 4), (1, 4), (1, 8), (4, 8)])
def test_nm_matches_numpy(nm):
    n, k, m = 24, 64, 50
    w = _w(NM(*nm).mask((n, k), seed=6))
    x = _x(k, m)
    _close(K.spmm_nm(NMCompressed.encode(w, n=nm[0], m=nm[1]), x, mb=20), w @ x)


def test_nm_padded_tail_group():
    w = _w(NM(2, 4).mask((8, 12), seed=7))[:, :10].copy()  # K=10: last group of 4 is padded
    x = _x(10, 9)
    _close(K.spmm_nm(NMCompressed.encode(w, n=2, m=4, pad=True), x, mb=4), w @ x)


@pytest.mark.parametrize("density", [0.0, 0.1, 0.5, 1.0])
def test_act_gemv_matches_numpy(density):
    rng = np.random.default_rng(8)
    w = rng.standard_normal((96, 130), dtype=np.float32)
    x = (rng.random(130) < density) * rng.standard_normal(130)
    x = x.astype(np.float32)
    _close(K.act_sparse_gemv(np.ascontiguousarray(w.T), x), w @ x)
    _close(K.act_sparse_gemv(np.ascontiguousarray(w.T), x, nb=32), w @ x)


def test_dense_baselines():
    w = _w(np.ones((16, 24), bool))
    x = _x(24, 10)
    _close(K.dense_gemm(w, x), w @ x)
    _close(K.dense_gemv(w, x[:, 0].copy()), w @ x[:, 0])


def test_out_buffer_is_used_and_checked():
    w = _w(Unstructured(0.3).mask((8, 16), seed=9))
    x = _x(16, 12)
    out = np.empty((8, 12), np.float32)
    assert K.spmm_csr(CSR.encode(w), x, 8, out=out) is out
    with pytest.raises(ValueError, match="out must be"):
        K.spmm_csr(CSR.encode(w), x, 8, out=np.empty((8, 11), np.float32))
    with pytest.raises(ValueError, match="x_km must be"):
        K.spmm_csr(CSR.encode(w), x[:, ::2], 8)
    with pytest.raises(ValueError, match="mb must be"):
        K.spmm_csr(CSR.encode(w), x, 0)
