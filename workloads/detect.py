"""Which sparsity pattern does a measured weight mask follow? (numpy only)

A weight is seen as the GEMM operand W[N, K] (rows = output features, cols = the reduction
axis K); a conv weight [C_out, C_in/g, kh, kw] is viewed as [C_out, (C_in/g)·kh·kw] — the
im2col rule of ConvGeom.gemm_view with the groups stacked along the rows (group j owns rows
j·C_out/g … (j+1)·C_out/g - 1), so N:M groups along K never cross a conv group.

`detect(mask)` returns the most specific Sparsity the mask satisfies, with measured
per-row / per-tile nonzero counts attached (SparsityStats.from_mask). Order of the tests:
dense → channel (rows, then cols) → N:M (smallest m whose groups all hold n < m and almost
all exactly n; a group as long as the row only for m ≤ 16) → block / vector (largest
all-or-nothing tile) → constant fan-in → unstructured.
"""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

from simsparse.core.sparsity import (
    NM,
    Block,
    Channel,
    ConstantFanIn,
    Dense,
    Group,
    Sparsity,
    SparsityStats,
    Unstructured,
)

NM_MAX_M = 256  # largest N:M group searched (NM's own limit)
NM_UNIFORM_FRACTION = 0.95
NM_WHOLE_ROW_MAX = 16  # an n:m group may span a whole row only up to this m (else: constant fan-in)  # share of groups that must hold exactly n nonzeros to call it n:m
BLOCK_SIDES = (1, 2, 4, 8, 16, 32, 64, 128)  # block heights / widths searched
DEFAULT_TILE = (64, 64)


def weight_matrix(weight: np.ndarray) -> np.ndarray:
    """The GEMM view W[N, K] of a weight: linear [N, K] as is, conv [C_out, …] → [C_out, rest]."""
    w = np.asarray(weight)
    if w.ndim == 1:
        return w.reshape(1, -1)
    return w.reshape(w.shape[0], -1)


def nm_fit(mask: np.ndarray, m: int) -> tuple[int, float]:
    """(n, share of groups holding exactly n) for groups of m along the last axis; n = max count."""
    rows, cols = mask.shape
    counts = mask.reshape(rows, cols // m, m).sum(axis=2, dtype=np.int32)
    n = int(counts.max())
    return n, float((counts == n).mean())


def _could_be_uniform(density: float, m: int) -> bool:
    """A mask with ≥ NM_UNIFORM_FRACTION of its m-groups at exactly n (rest fewer) has density
    in [NM_UNIFORM_FRACTION·n/m, n/m]; is there such an integer n < m?"""
    n = int(np.ceil(density * m - 1e-9))
    return 0 < n < m and density >= NM_UNIFORM_FRACTION * n / m - 1e-9


def find_nm(mask: np.ndarray) -> NM | None:
    """Smallest-m N:M pattern (n < m) the mask follows along K, or None."""
    rows, cols = mask.shape
    density = float(mask.mean())
    sample = mask[: min(rows, 16)]
    for m in range(2, min(cols, NM_MAX_M) + 1):
        # one group spanning a whole long row is constant fan-in, not a hardware N:M group
        if m == cols and m > NM_WHOLE_ROW_MAX:
            break
        if cols % m or not _could_be_uniform(density, m):
            continue
        n, share = nm_fit(sample, m)  # cheap rejection on a few rows first
        if not (0 < n < m and share >= NM_UNIFORM_FRACTION / 2):
            continue
        n, share = nm_fit(mask, m)
        if 0 < n < m and share >= NM_UNIFORM_FRACTION:
            return NM(n, m)
    return None


def is_transposable(mask: np.ndarray, n: int, m: int, rows_per_group: int | None = None) -> bool:
    """True when the mask is n:m along K *and* along N (so Wᵀ, used by bwd_data, is n:m too)."""
    mask = np.asarray(mask, bool)
    rows, cols = mask.shape
    per = rows_per_group or rows
    if cols % m or per % m or rows % m:
        return False
    return nm_fit(mask, m)[0] <= n and nm_fit(np.ascontiguousarray(mask.T), m)[0] <= n


def _constant_run(mask: np.ndarray, axis: int) -> int:
    """Largest side s in BLOCK_SIDES dividing the axis such that the mask is constant on
    aligned runs of s elements along that axis."""
    best = 1
    length = mask.shape[axis]
    for s in BLOCK_SIDES[1:]:
        if length % s:
            break
        if axis == 0:
            runs = mask.reshape(length // s, s, mask.shape[1]).sum(axis=1)
        else:
            runs = mask.reshape(mask.shape[0], length // s, s).sum(axis=2)
        if np.all((runs == 0) | (runs == s)):
            best = s
        else:
            break
    return best


def find_block(mask: np.ndarray) -> Sparsity | None:
    """All-or-nothing bh×bw tiles (largest found); Group(g) when bh = 1 (vectors along K)."""
    bh = _constant_run(mask, 0)
    bw = _constant_run(mask, 1)
    if bh * bw < 2:
        return None
    density = float(mask.mean())
    # constant along vertical runs of bh and horizontal runs of bw ⇒ constant on bh×bw tiles
    if bh == 1:
        return Group(bw, density)
    return Block(bh, bw, density)


def detect(mask: np.ndarray, tile_shape: tuple[int, int] = DEFAULT_TILE, stats: bool = True) -> Sparsity:
    """The most specific Sparsity a 2-D mask W[N, K] follows (True = nonzero / kept)."""
    mask = np.asarray(mask, bool)
    if mask.ndim != 2:
        mask = weight_matrix(mask)
    st = SparsityStats.from_mask(mask, tile_shape) if stats else None
    sp = _pattern(mask)
    return attach_stats(sp, st) if st is not None and not sp.is_dense else sp


def attach_stats(sp: Sparsity, stats: SparsityStats | None) -> Sparsity:
    """`sp` with measured stats attached (works for every pattern class, whatever its __init__)."""
    out = copy.copy(sp)
    object.__setattr__(out, "stats", stats)
    return out


def _pattern(mask: np.ndarray) -> Sparsity:
    rows, cols = mask.shape
    nnz = int(mask.sum())
    if nnz == mask.size:
        return Dense()
    # an all-zero weight has no pattern; keep the smallest representable density
    density = max(nnz, 1) / mask.size
    row_any, row_all = mask.any(axis=1), mask.all(axis=1)
    if np.all(row_any == row_all) and rows > 1:
        return Channel(density, axis=0)
    col_any, col_all = mask.any(axis=0), mask.all(axis=0)
    if np.all(col_any == col_all) and cols > 1:
        return Channel(density, axis=1)
    if nnz == 0:
        return Unstructured(density)
    nm = find_nm(mask)
    if nm is not None:
        return nm
    blk = find_block(mask)
    if blk is not None:
        return blk
    row_nnz = mask.sum(axis=1)
    if rows > 1 and np.all(row_nnz == row_nnz[0]):
        return ConstantFanIn(int(row_nnz[0]), cols)
    return Unstructured(density)


def analyse(weight_or_mask: np.ndarray, rows_per_group: int | None = None,
            tile_shape: tuple[int, int] = DEFAULT_TILE) -> tuple[Sparsity, dict[str, Any]]:
    """detect() plus facts for op.meta: exact density, transposability, per-column nonzeros."""
    mask = weight_matrix(np.asarray(weight_or_mask) != 0)
    sp = detect(mask, tile_shape)
    meta: dict[str, Any] = {}
    if not sp.is_dense:
        meta["weight_density"] = float(mask.mean())
        meta["weight_col_nnz"] = [int(v) for v in mask.sum(axis=0)]
    if isinstance(sp, NM):
        meta["weight_transposable"] = is_transposable(mask, sp.n, sp.m, rows_per_group)
    return sp, meta
