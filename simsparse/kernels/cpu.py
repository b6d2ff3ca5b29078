"""CPU sparse kernels (numba), XNNPACK-style: sparse weights × dense activations in NCHW.

Layout, shared by every kernel here (the layout of XNNPACK's sparse 1×1 convolution):

    Y[N, M] = W[N, K] · X[K, M]

with N = output channels (rows of W), K = input channels (reduction axis) and M = pixels
(or tokens). In the package's GEMM convention y[M, N] = x[M, K] · W[N, K]ᵀ this is the
transposed product: X = xᵀ and Y = yᵀ, so a channel-major (NCHW) activation is used as is.

Every sparse kernel walks the pixels in blocks of ``mb`` (the mapping's tile_m): for one
pixel block it runs over all output rows, and for each nonzero w[n, k] adds w · X[k, block]
into an L1-resident accumulator row — the structure of XNNPACK's f32-spmm micro-kernels
(Elsen et al., "Fast Sparse ConvNets", CVPR 2020), with the accumulator in L1 instead of in
registers (numba cannot pin a vector in registers). The inner loop is unit-stride over
pixels, so LLVM vectorises it to the host's SIMD width. Indices are computed unsigned so
numba emits no negative-index wrap-around test, which would block vectorisation.

Operands come from :mod:`simsparse.core.formats` encoders (CSR, BSR, NMCompressed,
Bitmap). ``dense_gemm`` is the baseline through numpy's BLAS. The ``prange`` over pixel
blocks runs on ``numba.get_num_threads()`` threads (the harness pins it to 1).
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

import numpy as np
from numba import njit, prange, uintp

from simsparse.core.formats import BSR, CSR, Bitmap, NMCompressed

# --- numba kernels (pure loops; the Python wrappers below check shapes) ------------------


@njit(parallel=True, fastmath=True, cache=True)
def _spmm_csr(vals, cols, rowptr, X, Y, mb):  # pragma: no cover - compiled
    n_rows = rowptr.size - 1
    m_tot = X.shape[1]
    xf = X.ravel()
    yf = Y.ravel()
    n_blocks = (m_tot + mb - 1) // mb
    for blk in prange(n_blocks):
        acc = np.empty(mb, X.dtype)
        m0 = blk * mb
        w = min(mb, m_tot - m0)
        for n in range(n_rows):
            j0 = rowptr[n]
            j1 = rowptr[n + 1]
            out = uintp(n) * uintp(m_tot) + uintp(m0)
            if j0 == j1:  # empty row: the output block is zero
                for i in range(w):
                    yf[out + uintp(i)] = 0.0
                continue
            v = vals[j0]  # the first nonzero initialises the accumulator (no zero pass)
            base = uintp(cols[j0]) * uintp(m_tot) + uintp(m0)
            if j1 == j0 + 1:  # a single nonzero: write the output block directly
                for i in range(w):
                    yf[out + uintp(i)] = v * xf[base + uintp(i)]
                continue
            for i in range(w):
                acc[i] = v * xf[base + uintp(i)]
            for j in range(j0 + 1, j1):
                v = vals[j]
                base = uintp(cols[j]) * uintp(m_tot) + uintp(m0)
                for i in range(w):
                    acc[i] += v * xf[base + uintp(i)]
            for i in range(w):
                yf[out + uintp(i)] = acc[i]


@njit(parallel=True, fastmath=True, cache=True)
def _spmm_bsr(vals, bcols, browptr, X, Y, mb):  # pragma: no cover - compiled
    n_out = Y.shape[0]
    m_tot = X.shape[1]
    bh = vals.shape[1]
    bw = vals.shape[2]
    n_brows = browptr.size - 1
    xf = X.ravel()
    yf = Y.ravel()
    n_blocks = (m_tot + mb - 1) // mb
    for blk in prange(n_blocks):
        acc = np.empty(bh * mb, X.dtype)
        m0 = blk * mb
        w = min(mb, m_tot - m0)
        for br in range(n_brows):
            for i in range(bh * mb):
                acc[i] = 0.0
            for b in range(browptr[br], browptr[br + 1]):
                k0 = uintp(bcols[b]) * uintp(bw)
                for r in range(bh):
                    arow = uintp(r) * uintp(mb)
                    for c in range(bw):
                        v = vals[b, r, c]
                        base = (k0 + uintp(c)) * uintp(m_tot) + uintp(m0)
                        for i in range(w):
                            acc[arow + uintp(i)] += v * xf[base + uintp(i)]
            for r in range(bh):
                n = br * bh + r
                if n < n_out:  # padded rows of the last block row are dropped
                    out = uintp(n) * uintp(m_tot) + uintp(m0)
                    arow = uintp(r) * uintp(mb)
                    for i in range(w):
                        yf[out + uintp(i)] = acc[arow + uintp(i)]


@njit(parallel=True, fastmath=True, cache=True)
def _spmm_nm(vals, idx, m, X, Y, mb):  # pragma: no cover - compiled
    n_rows = vals.shape[0]
    n_groups = vals.shape[1]
    keep = vals.shape[2]
    m_tot = X.shape[1]
    k_tot = X.shape[0]
    xf = X.ravel()
    yf = Y.ravel()
    n_blocks = (m_tot + mb - 1) // mb
    for blk in prange(n_blocks):
        acc = np.empty(mb, X.dtype)
        m0 = blk * mb
        w = min(mb, m_tot - m0)
        for n in range(n_rows):
            for i in range(w):
                acc[i] = 0.0
            for g in range(n_groups):
                for t in range(keep):  # exactly n values per group: no per-row length, no imbalance
                    c = g * m + idx[n, g, t]
                    if c < k_tot:  # padded tail group
                        v = vals[n, g, t]
                        base = uintp(c) * uintp(m_tot) + uintp(m0)
                        for i in range(w):
                            acc[i] += v * xf[base + uintp(i)]
            out = uintp(n) * uintp(m_tot) + uintp(m0)
            for i in range(w):
                yf[out + uintp(i)] = acc[i]


@njit(cache=True)
def _bitmap_row_starts(bitmap):  # pragma: no cover - compiled
    rows, nbytes = bitmap.shape
    starts = np.empty(rows + 1, np.int64)
    starts[0] = 0
    for r in range(rows):
        cnt = 0
        for q in range(nbytes):
            b = bitmap[r, q]
            while b:
                cnt += 1
                b &= b - 1
        starts[r + 1] = starts[r] + cnt
    return starts


@njit(parallel=True, fastmath=True, cache=True)
def _spmm_bitmap(bitmap, vals, starts, X, Y, mb):  # pragma: no cover - compiled
    n_rows = bitmap.shape[0]
    n_bytes = bitmap.shape[1]
    m_tot = X.shape[1]
    xf = X.ravel()
    yf = Y.ravel()
    n_blocks = (m_tot + mb - 1) // mb
    for blk in prange(n_blocks):
        acc = np.empty(mb, X.dtype)
        m0 = blk * mb
        w = min(mb, m_tot - m0)
        for n in range(n_rows):
            for i in range(w):
                acc[i] = 0.0
            p = starts[n]
            for q in range(n_bytes):  # scan every byte of the row's bitmap, set bits → work
                byte = bitmap[n, q]
                if byte == 0:
                    continue
                for t in range(8):
                    if byte & (128 >> t):  # np.packbits order: MSB = lowest column
                        v = vals[p]
                        p += 1
                        base = uintp(q * 8 + t) * uintp(m_tot) + uintp(m0)
                        for i in range(w):
                            acc[i] += v * xf[base + uintp(i)]
            out = uintp(n) * uintp(m_tot) + uintp(m0)
            for i in range(w):
                yf[out + uintp(i)] = acc[i]


@njit(parallel=True, fastmath=True, cache=True)
def _act_gemv(Wt, x, y, nb):  # pragma: no cover - compiled
    k_tot = Wt.shape[0]
    n_tot = Wt.shape[1]
    n_blocks = (n_tot + nb - 1) // nb
    for blk in prange(n_blocks):
        n0 = blk * nb
        w = min(nb, n_tot - n0)
        yb = y[n0:n0 + w]
        for i in range(w):
            yb[i] = 0.0
        for k in range(k_tot):  # skip the weight column of every zero activation
            xv = x[k]
            if xv != 0.0:
                wr = Wt[k, n0:n0 + w]
                for i in range(w):
                    yb[i] += xv * wr[i]


@njit(cache=True)
def _interior_cols(ow_tot, w, kw, stride, pad):  # pragma: no cover - compiled
    """[lo, hi): the output columns whose whole kw-wide window lies inside the image of width w."""
    lo = min(ow_tot, (pad + stride - 1) // stride)
    return lo, max(lo, min(ow_tot, (w - kw + pad) // stride + 1))


@njit(parallel=True, fastmath=True, cache=True)
def _dwconv_chw(X, Wt, Y, stride, pad):  # pragma: no cover - compiled
    c_tot = X.shape[0]
    h = X.shape[1]
    w = X.shape[2]
    kh = Wt.shape[1]
    kw = Wt.shape[2]
    oh_tot = Y.shape[1]
    ow_tot = Y.shape[2]
    xf = X.ravel()
    yf = Y.ravel()
    lo, hi = _interior_cols(ow_tot, w, kw, stride, pad)  # the edges outside [lo, hi) are scalar
    for c in prange(c_tot):
        for oh in range(oh_tot):
            yrow = (uintp(c) * uintp(oh_tot) + uintp(oh)) * uintp(ow_tot)
            for i in range(ow_tot):
                yf[yrow + uintp(i)] = 0.0
            for r in range(kh):
                ih = oh * stride + r - pad
                if ih < 0 or ih >= h:  # a tap row in the zero padding adds nothing
                    continue
                xrow = (uintp(c) * uintp(h) + uintp(ih)) * uintp(w)
                for ow in range(lo):  # left edge
                    for q in range(kw):
                        iw = ow * stride + q - pad
                        if 0 <= iw < w:
                            yf[yrow + uintp(ow)] += Wt[c, r, q] * xf[xrow + uintp(iw)]
                # the interior: all kw taps of the row in one pass over the output row
                y0 = yrow + uintp(lo)
                x0 = xrow + uintp(lo * stride - pad)
                n = hi - lo
                if kw == 3:
                    w0 = Wt[c, r, 0]
                    w1 = Wt[c, r, 1]
                    w2 = Wt[c, r, 2]
                    if stride == 1:
                        for i in range(n):
                            xi = x0 + uintp(i)
                            yf[y0 + uintp(i)] += w0 * xf[xi] + w1 * xf[xi + uintp(1)] + w2 * xf[xi + uintp(2)]
                    else:
                        for i in range(n):
                            xi = x0 + uintp(i) * uintp(stride)
                            yf[y0 + uintp(i)] += w0 * xf[xi] + w1 * xf[xi + uintp(1)] + w2 * xf[xi + uintp(2)]
                elif kw == 5:
                    w0 = Wt[c, r, 0]
                    w1 = Wt[c, r, 1]
                    w2 = Wt[c, r, 2]
                    w3 = Wt[c, r, 3]
                    w4 = Wt[c, r, 4]
                    if stride == 1:
                        for i in range(n):
                            xi = x0 + uintp(i)
                            yf[y0 + uintp(i)] += (w0 * xf[xi] + w1 * xf[xi + uintp(1)] + w2 * xf[xi + uintp(2)]
                                                  + w3 * xf[xi + uintp(3)] + w4 * xf[xi + uintp(4)])
                    else:
                        for i in range(n):
                            xi = x0 + uintp(i) * uintp(stride)
                            yf[y0 + uintp(i)] += (w0 * xf[xi] + w1 * xf[xi + uintp(1)] + w2 * xf[xi + uintp(2)]
                                                  + w3 * xf[xi + uintp(3)] + w4 * xf[xi + uintp(4)])
                else:  # other widths: one axpy per tap
                    for q in range(kw):
                        v = Wt[c, r, q]
                        for i in range(n):
                            yf[y0 + uintp(i)] += v * xf[x0 + uintp(i) * uintp(stride) + uintp(q)]
                for ow in range(hi, ow_tot):  # right edge
                    for q in range(kw):
                        iw = ow * stride + q - pad
                        if 0 <= iw < w:
                            yf[yrow + uintp(ow)] += Wt[c, r, q] * xf[xrow + uintp(iw)]


@njit(parallel=True, fastmath=True, cache=True)
def _maxpool_chw(X, Y, k, stride, pad):  # pragma: no cover - compiled
    h = X.shape[1]
    w = X.shape[2]
    oh_tot = Y.shape[1]
    ow_tot = Y.shape[2]
    xf = X.ravel()
    yf = Y.ravel()
    lo, hi = _interior_cols(ow_tot, w, k, stride, pad)
    for c in prange(X.shape[0]):
        row = np.empty(w, X.dtype)
        for oh in range(oh_tot):
            # the window's rows inside the image (padding is -inf): their column-wise maximum in one
            # unit-stride pass per row, then each output the maximum of its k columns of that row
            r0 = max(0, oh * stride - pad)
            r1 = min(h, oh * stride - pad + k)
            x0 = (uintp(c) * uintp(h) + uintp(r0)) * uintp(w)
            for q in range(w):
                row[uintp(q)] = xf[x0 + uintp(q)]
            for r in range(r0 + 1, r1):
                xr = (uintp(c) * uintp(h) + uintp(r)) * uintp(w)
                for q in range(w):
                    row[uintp(q)] = max(row[uintp(q)], xf[xr + uintp(q)])
            y0 = (uintp(c) * uintp(oh_tot) + uintp(oh)) * uintp(ow_tot)
            for ow in range(lo):  # left edge: windows reaching into the padding
                m = row[0]
                for q in range(1, min(w, ow * stride - pad + k)):
                    m = max(m, row[uintp(q)])
                yf[y0 + uintp(ow)] = m
            if k == 3:  # the interior, ResNet's 3x3 window unrolled
                for ow in range(lo, hi):
                    b = uintp(ow * stride - pad)
                    yf[y0 + uintp(ow)] = max(max(row[b], row[b + uintp(1)]), row[b + uintp(2)])
            else:
                for ow in range(lo, hi):
                    b = uintp(ow * stride - pad)
                    m = row[b]
                    for q in range(1, k):
                        m = max(m, row[b + uintp(q)])
                    yf[y0 + uintp(ow)] = m
            for ow in range(max(lo, hi), ow_tot):  # right edge
                q0 = ow * stride - pad
                m = row[uintp(q0)]
                for q in range(q0 + 1, min(w, q0 + k)):
                    m = max(m, row[uintp(q)])
                yf[y0 + uintp(ow)] = m

# --- Python entry points -----------------------------------------------------------------


def _check_x(x_km: np.ndarray, k: int, dtype: np.dtype) -> np.ndarray:
    if x_km.ndim != 2 or x_km.shape[0] != k:
        raise ValueError(f"x_km must be [K={k}, M], got shape {x_km.shape}")
    if not x_km.flags.c_contiguous or x_km.dtype != dtype:
        raise ValueError(f"x_km must be C-contiguous {dtype} (got {x_km.dtype}, "
                         f"contiguous={x_km.flags.c_contiguous})")
    return x_km


def _check_mb(mb: int) -> int:
    if not isinstance(mb, int | np.integer) or mb < 1:
        raise ValueError(f"mb must be a positive integer (pixels per block), got {mb!r}")
    return int(mb)


def _out(out: np.ndarray | None, n: int, m: int, dtype: np.dtype) -> np.ndarray:
    if out is None:
        return np.empty((n, m), dtype)
    if out.shape != (n, m) or out.dtype != dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous {dtype} [{n}, {m}], got {out.dtype} {out.shape}")
    return out


def spmm_csr(w: CSR, x_km: np.ndarray, mb: int = 1024, out: np.ndarray | None = None) -> np.ndarray:
    """Y[N, M] = W · X for CSR weights (unstructured sparsity), pixel block `mb`."""
    n, k = w.shape
    _check_x(x_km, k, w.values.dtype)
    y = _out(out, n, x_km.shape[1], w.values.dtype)
    _spmm_csr(w.values, w.col_idx, w.row_ptr, x_km, y, _check_mb(mb))
    return y


def spmm_bsr(w: BSR, x_km: np.ndarray, mb: int = 1024, out: np.ndarray | None = None) -> np.ndarray:
    """Y = W · X for block-sparse (BSR, bh×bw dense blocks) weights."""
    n, k = w.shape
    if k % w.bw:
        raise ValueError(f"K={k} must be a multiple of bw={w.bw} (encode without column padding)")
    _check_x(x_km, k, w.values.dtype)
    y = _out(out, n, x_km.shape[1], w.values.dtype)
    _spmm_bsr(w.values, w.block_col_idx, w.block_row_ptr, x_km, y, _check_mb(mb))
    return y


def spmm_nm(w: NMCompressed, x_km: np.ndarray, mb: int = 1024, out: np.ndarray | None = None) -> np.ndarray:
    """Y = W · X for N:M-compressed weights (n values + in-group positions per group of m)."""
    n, k = w.shape
    _check_x(x_km, k, w.values.dtype)
    y = _out(out, n, x_km.shape[1], w.values.dtype)
    _spmm_nm(w.values, w.indices, w.m, x_km, y, _check_mb(mb))
    return y


def bitmap_row_starts(w: Bitmap) -> np.ndarray:
    """Offset of each row's first value in `w.values` (prefix popcount of the bitmap)."""
    return _bitmap_row_starts(w.bitmap)


def spmm_bitmap(w: Bitmap, x_km: np.ndarray, mb: int = 1024, out: np.ndarray | None = None,
                starts: np.ndarray | None = None) -> np.ndarray:
    """Y = W · X for bitmap-encoded weights (one presence bit per element + packed values).

    `starts` (from :func:`bitmap_row_starts`) may be passed to reuse the row offsets; they
    belong to the encoded operand, like CSR's row pointer.
    """
    n, k = w.shape
    _check_x(x_km, k, w.values.dtype)
    y = _out(out, n, x_km.shape[1], w.values.dtype)
    starts = bitmap_row_starts(w) if starts is None else starts
    _spmm_bitmap(w.bitmap, w.values, starts, x_km, y, _check_mb(mb))
    return y


def act_sparse_gemv(w_kn: np.ndarray, x: np.ndarray, nb: int | None = None,
                    out: np.ndarray | None = None) -> np.ndarray:
    """y[N] = W[N, K] · x[K] reading only the weight columns of nonzero activations.

    `w_kn` is Wᵀ stored [K, N] (column-major W), so the column of one activation is
    contiguous — the layout TEAL / Deja Vu style kernels use. `nb` splits N across threads
    (default: one block).
    """
    if w_kn.ndim != 2 or x.shape != (w_kn.shape[0],):
        raise ValueError(f"need w_kn [K, N] and x [K]; got {w_kn.shape} and {x.shape}")
    n_tot = w_kn.shape[1]
    y = np.empty(n_tot, w_kn.dtype) if out is None else out
    _act_gemv(w_kn, x, y, _check_mb(nb or n_tot))
    return y


def dense_gemm(w: np.ndarray, x_km: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Dense baseline through numpy's BLAS (sgemm for fp32): Y = W · X."""
    return np.matmul(w, x_km, out=out)


def dense_gemv(w: np.ndarray, x: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
    """Dense GEMV baseline through numpy's BLAS (sgemv): y = W · x."""
    return np.matmul(w, x, out=out)


SPMM_KERNELS = ("cpu_dense_gemm", "cpu_csr", "cpu_bitmap", "cpu_bsr", "cpu_nm")
"""Kernels of Y[N, M] = W[N, K] · X[K, M] that encoder() / runner() prepare."""


def encoder(kernel: str, weight: Any = None) -> Callable[[np.ndarray], Any]:
    """The function that encodes a dense W[N, K] into `kernel`'s weight format; `weight` is the pattern
    (simsparse.core.sparsity) that gives the block (bh x bw) or N:M group sizes."""
    if kernel == "cpu_dense_gemm":
        return lambda w: w
    if kernel == "cpu_csr":
        return CSR.encode
    if kernel == "cpu_bitmap":
        return Bitmap.encode
    if kernel == "cpu_bsr":
        return functools.partial(BSR.encode, bh=weight.bh, bw=weight.bw)
    if kernel == "cpu_nm":
        return functools.partial(NMCompressed.encode, n=weight.n, m=weight.m)
    raise ValueError(f"kernel: got {kernel!r}; allowed: {', '.join(SPMM_KERNELS)}")


def runner(kernel: str, enc: Any, mb: int) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """run(x_km, out) = `kernel` on the encoded weights `enc` at pixel block `mb` (ignored by dense BLAS).
    A bitmap's row starts are computed here, once, not in the call."""
    if kernel == "cpu_dense_gemm":
        return lambda x, out: dense_gemm(enc, x, out=out)
    if kernel == "cpu_bitmap":
        starts = bitmap_row_starts(enc)
        return lambda x, out: spmm_bitmap(enc, x, mb, out=out, starts=starts)
    fn = {"cpu_csr": spmm_csr, "cpu_bsr": spmm_bsr, "cpu_nm": spmm_nm}.get(kernel)
    if fn is None:
        raise ValueError(f"kernel: got {kernel!r}; allowed: {', '.join(SPMM_KERNELS)}")
    return lambda x, out: fn(enc, x, mb, out=out)


def depthwise_conv2d(w: np.ndarray, x_chw: np.ndarray, stride: int = 1, pad: int = 0,
                     out: np.ndarray | None = None) -> np.ndarray:
    """Depthwise convolution in CHW layout: y[c] = w[c] ⋆ x[c] (cross-correlation, zero padding).

    `w` is [C, kh, kw], `x_chw` one image [C, H, W]. For each channel and output row, each tap
    row inside the image makes one pass over the row's interior columns with its kw taps fused
    (unit-stride loads at stride 1, a scalar loop at stride 2); the edge columns run scalar with a
    bounds test. The CHW layout is that of XNNPACK's dwconv2d-chw, which the sparse pipeline of
    Elsen et al. runs between its NCHW 1x1 layers; the output row stays in L1 instead of in
    registers. Channels run in parallel (``numba.get_num_threads()``).
    """
    if w.ndim != 3 or x_chw.ndim != 3 or w.shape[0] != x_chw.shape[0]:
        raise ValueError(f"need w [C, kh, kw] and x_chw [C, H, W] with the same C; got {w.shape} and {x_chw.shape}")
    c = x_chw.shape[0]
    oh, ow = _window_out(x_chw.shape, w.shape[1], w.shape[2], stride, pad)
    if not x_chw.flags.c_contiguous or x_chw.dtype != w.dtype or not w.flags.c_contiguous:
        raise ValueError(f"w and x_chw must be C-contiguous arrays of one dtype (got {w.dtype}, {x_chw.dtype})")
    if out is None:
        out = np.empty((c, oh, ow), x_chw.dtype)
    elif out.shape != (c, oh, ow) or out.dtype != x_chw.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous {x_chw.dtype} [{c}, {oh}, {ow}], got {out.dtype} {out.shape}")
    _dwconv_chw(x_chw, w, out, int(stride), int(pad))
    return out


def _window_out(shape: tuple[int, ...], kh: int, kw: int, stride: int, pad: int) -> tuple[int, int]:
    """Output (height, width) of a kh x kw window at `stride` over a [C, H, W] input padded by `pad`; a clear
    error for a bad stride, pad or a window larger than the padded input."""
    if not isinstance(stride, int | np.integer) or stride < 1:
        raise ValueError(f"stride must be a positive integer, got {stride!r}")
    if not isinstance(pad, int | np.integer) or pad < 0:
        raise ValueError(f"pad must be a non-negative integer, got {pad!r}")
    _, h, wd = shape
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    if oh < 1 or ow < 1:
        raise ValueError(f"kernel {kh}x{kw} is larger than the padded input {h + 2 * pad}x{wd + 2 * pad}")
    return oh, ow


def max_pool2d(x_chw: np.ndarray, k: int, stride: int = 1, pad: int = 0, out: np.ndarray | None = None) -> np.ndarray:
    """k x k max pooling of one CHW image (padding never wins: -inf), one pass over each window; channels in
    parallel (``numba.get_num_threads()``). ResNet's stem pool is k=3, stride 2, pad 1."""
    if x_chw.ndim != 3 or not x_chw.flags.c_contiguous:
        raise ValueError(f"x_chw must be a C-contiguous [C, H, W] array; got shape {x_chw.shape}")
    if not isinstance(k, int | np.integer) or k < 1:
        raise ValueError(f"k must be a positive integer, got {k!r}")
    if pad >= k:
        raise ValueError(f"pad must be smaller than k (a window wholly in the padding has no maximum); got pad={pad}, "
                         f"k={k}")
    oh, ow = _window_out(x_chw.shape, k, k, stride, pad)
    c = x_chw.shape[0]
    if out is None:
        out = np.empty((c, oh, ow), x_chw.dtype)
    elif out.shape != (c, oh, ow) or out.dtype != x_chw.dtype or not out.flags.c_contiguous:
        raise ValueError(f"out must be C-contiguous {x_chw.dtype} [{c}, {oh}, {ow}], got {out.dtype} {out.shape}")
    _maxpool_chw(x_chw, out, int(k), int(stride), int(pad))
    return out


def max_pool_reference(x_chw: np.ndarray, k: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """Plain numpy max pooling in float64: the elementwise maximum of the -inf-padded input's tap slices."""
    oh, ow, taps = _taps(x_chw, k, k, stride, pad, fill=-np.inf)
    y = np.full((x_chw.shape[0], oh, ow), -np.inf)
    for _, _, tap in taps:
        np.maximum(y, tap, out=y)
    return y


def _taps(x_chw: np.ndarray, kh: int, kw: int, stride: int, pad: int, fill: float = 0.0):
    """(output height, width, iterator of (r, q, slice)): per tap (r, q), the float64 input's slice, padded
    with `fill`, every output pixel reads at that tap (the references' one shared step)."""
    _, h, wd = x_chw.shape
    xp = np.pad(x_chw.astype(np.float64), ((0, 0), (pad, pad), (pad, pad)), constant_values=fill)
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    taps = ((r, q, xp[:, r:r + stride * (oh - 1) + 1:stride, q:q + stride * (ow - 1) + 1:stride])
            for r in range(kh) for q in range(kw))
    return oh, ow, taps


def depthwise_reference(w: np.ndarray, x_chw: np.ndarray, stride: int = 1, pad: int = 0) -> np.ndarray:
    """Plain numpy depthwise convolution in float64 (zero padding, cross-correlation): the check of
    depthwise_conv2d, one shifted and strided slice of the padded input per tap."""
    c, kh, kw = w.shape
    oh, ow, taps = _taps(x_chw, kh, kw, stride, pad)
    y = np.zeros((c, oh, ow))
    for r, q, tap in taps:
        y += w[:, r, q, None, None].astype(np.float64) * tap
    return y


def im2col(x_chw: np.ndarray, kh: int, kw: int, stride: int = 1, pad: int = 0) -> np.ndarray:
    """The column matrix of a dense convolution: cols[C*kh*kw, OH*OW], row (c, r, q) holding input channel c
    shifted by tap (r, q) at every output pixel. numpy builds it in two copies: the zero-padded image
    (np.pad, when `pad`), then the strided window view copied row by row: C*kh*kw*OH runs of OW elements,
    each element `stride` apart in the source (hwmodels.cpu.im2col_counts prices exactly these)."""
    if x_chw.ndim != 3:
        raise ValueError(f"x_chw must be [C, H, W]; got shape {x_chw.shape}")
    if min(kh, kw) < 1:
        raise ValueError(f"need kh, kw >= 1; got kh={kh}, kw={kw}")
    _window_out(x_chw.shape, kh, kw, stride, pad)
    c = x_chw.shape[0]
    xp = np.pad(x_chw, ((0, 0), (pad, pad), (pad, pad))) if pad else x_chw
    win = np.lib.stride_tricks.sliding_window_view(xp, (kh, kw), axis=(1, 2))[:, ::stride, ::stride]
    oh, ow = win.shape[1], win.shape[2]
    return np.ascontiguousarray(win.transpose(0, 3, 4, 1, 2)).reshape(c * kh * kw, oh * ow)


def conv2d_im2col(w: np.ndarray, x_chw: np.ndarray, stride: int = 1, pad: int = 0,
                  out: np.ndarray | None = None) -> np.ndarray:
    """Dense convolution of one CHW image by im2col + BLAS: y[N, OH*OW] = W[N, C*kh*kw] · cols.

    `w` is [N, C, kh, kw]. The columns are one copy of the padded input's sliding windows (im2col, numpy),
    then one sgemm through numpy's BLAS: the dense baseline of a KxK convolution on this machine."""
    if w.ndim != 4 or x_chw.ndim != 3 or w.shape[1] != x_chw.shape[0]:
        raise ValueError(f"need w [N, C, kh, kw] and x_chw [C, H, W] with the same C; got {w.shape} and {x_chw.shape}")
    n, c, kh, kw = w.shape
    cols = im2col(x_chw, kh, kw, stride, pad)
    return np.matmul(w.reshape(n, c * kh * kw), cols, out=out)


def conv2d_reference(w: np.ndarray, x_chw: np.ndarray, stride: int = 1, pad: int = 0) -> np.ndarray:
    """Plain numpy dense convolution in float64 (zero padding, cross-correlation), [N, OH, OW]: the check of
    conv2d_im2col, one channel contraction per tap of a shifted, strided slice (no column matrix)."""
    n, _, kh, kw = w.shape
    oh, ow, taps = _taps(x_chw, kh, kw, stride, pad)
    y = np.zeros((n, oh, ow))
    for r, q, tap in taps:
        y += np.tensordot(w[:, :, r, q].astype(np.float64), tap, axes=(1, 0))
    return y


KERNEL_FUNCS = {
    "cpu_csr": spmm_csr,
    "cpu_bsr": spmm_bsr,
    "cpu_nm": spmm_nm,
    "cpu_bitmap": spmm_bitmap,
    "cpu_act_gemv": act_sparse_gemv,
    "cpu_dense_gemm": dense_gemm,
    "cpu_dwconv": depthwise_conv2d,
}
"""Model kernel name (hwmodels.cpu.KERNELS) → the function here that implements it on the host."""
