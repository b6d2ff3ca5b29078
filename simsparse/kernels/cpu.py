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


KERNEL_FUNCS = {
    "cpu_csr": spmm_csr,
    "cpu_bsr": spmm_bsr,
    "cpu_nm": spmm_nm,
    "cpu_bitmap": spmm_bitmap,
    "cpu_act_gemv": act_sparse_gemv,
    "cpu_dense_gemm": dense_gemm,
}
"""Model kernel name (hwmodels.cpu.KERNELS) → the function here that implements it on the host."""
