"""Sparse storage formats of a 2-D weight matrix: encode, decode, exact byte counts.

The matrix is W[rows, cols]. For a GEMM y = x·Wᵀ, rows = N output features and
cols = K input features, the reduction axis; N:M groups run along cols.

Byte counts are exact: value bytes + index bytes at the declared index widths.
Bit-packed arrays (N:M metadata, sub-byte values such as int4 with
``value_bytes=0.5``) are rounded up to whole bytes once, at the end of each
array. Indices are unsigned, so a 16-bit index holds 0..65535.

Every format has
- a frozen dataclass holding its arrays, with ``encode`` (classmethod),
  ``to_dense`` (decode) and ``nbytes`` (exact, from the arrays);
- a closed-form ``*_nbytes`` function of shape, nnz and the format's parameters
  only; cost models call it with expected nnz, which may be fractional or a
  numpy array (the result is then rounded up to whole bytes per array);
- an entry in ``FORMATS``, so ``format_nbytes(name, rows, cols, density=…,
  value_bytes=…, **params)`` dispatches by name.

Floor 0: imports numpy and the standard library only.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np

INDEX_BITS_ALLOWED = (16, 32, 64)
_INDEX_DTYPES = {16: np.uint16, 32: np.uint32, 64: np.uint64}
TILED_CSL_POSITION_BITS = 16  # Flash-LLM in-tile position: uint16
TILED_CSL_OFFSET_BITS = 32  # Flash-LLM per-tile offsets: int32
TILED_CSL_TILE_AREA_MAX = 1 << TILED_CSL_POSITION_BITS
TILED_CSL_NNZ_MAX = 2**31 - 1

Count = int | float | np.ndarray
"""An item or byte count: exact (int) or expected (float, or a numpy array of points)."""


# --- validation -------------------------------------------------------------------


def _check_int(field: str, value: Any, minimum: int = 0) -> int:
    """A shape or format parameter that must be an integer >= minimum (4096.0 counts as 4096)."""
    if isinstance(value, float | np.floating) and float(value).is_integer():
        value = int(value)
    if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
        raise ValueError(f"{field} must be an integer >= {minimum}, got {value!r}")
    return int(value)


def _check_index_bits(field: str, bits: Any) -> int:
    """Width of an index array: 16, 32 or 64 bits."""
    if isinstance(bits, bool) or bits not in INDEX_BITS_ALLOWED:
        raise ValueError(f"{field} must be one of {INDEX_BITS_ALLOWED}, got {bits!r}")
    return int(bits)


def _check_fits(field: str, bits: int, largest: int, what: str) -> None:
    """An unsigned bits-wide index must hold the largest value it stores."""
    if largest > (1 << bits) - 1:
        raise ValueError(
            f"{field}={bits} cannot hold {what} = {largest}: a {bits}-bit unsigned index "
            f"holds at most {(1 << bits) - 1}; allowed: a wider {field} from {INDEX_BITS_ALLOWED}"
        )


def _value_bits(value_bytes: Any) -> int:
    """Bits per stored value; fractional value_bytes for sub-byte types (int4 = 0.5)."""
    ok = isinstance(value_bytes, int | float | np.integer | np.floating) and not isinstance(
        value_bytes, bool
    )
    bits = float(value_bytes) * 8 if ok else math.nan
    if not (math.isfinite(bits) and bits > 0 and bits.is_integer()):
        raise ValueError(
            f"value_bytes must be a positive whole number of bits / 8 "
            f"(e.g. 4 fp32, 2 fp16/bf16, 1 fp8/int8, 0.5 int4), got {value_bytes!r}"
        )
    return int(bits)


def _check_count(field: str, count: Count, largest: float) -> None:
    """An (expected) count: finite and within [0, largest]; scalar or numpy array."""
    try:
        arr = np.asarray(count, dtype=np.float64)
    except (TypeError, ValueError):
        raise ValueError(f"{field} must be a number or numeric array, got {count!r}") from None
    if arr.size and not (np.all(np.isfinite(arr)) and arr.min() >= 0 and arr.max() <= largest):
        raise ValueError(f"{field} must lie in [0, {largest}], got {count!r}")


def _grid(field: str, length: int, step_field: str, step: int, pad: bool) -> int:
    """Number of step-sized pieces along one axis; a ragged end needs pad=True (zero-padded)."""
    if length % step and not pad:
        raise ValueError(
            f"{field}={length} is not a multiple of {step_field}={step}; allowed: a multiple, "
            f"or pad=True to zero-pad to {-(-length // step) * step} (decode trims the padding)"
        )
    return -(-length // step)


def _as_matrix(dense: Any) -> np.ndarray:
    """The matrix to encode: a 2-D numeric numpy array."""
    a = np.asarray(dense)
    if a.ndim != 2:
        raise ValueError(f"dense must be a 2-D matrix, got shape {a.shape}")
    if a.dtype.kind not in "biufc":
        raise ValueError(
            f"dense must have a numeric dtype (bool/int/uint/float/complex), got {a.dtype}"
        )
    return a


def _matrix_value_bytes(a: np.ndarray, value_bytes: float | None) -> float:
    """Bytes per value: the array's itemsize unless overridden (bf16=2, fp8=1, int4=0.5)."""
    value_bytes = a.dtype.itemsize if value_bytes is None else value_bytes
    _value_bits(value_bytes)
    return value_bytes


def _expected_nnz(rows: int, cols: int, density: Count) -> Count:
    """Expected nonzeros of a rows×cols matrix at the given density."""
    rows, cols = _check_int("rows", rows), _check_int("cols", cols)
    _check_count("density", density, 1)
    return density * (rows * cols)


# --- byte arithmetic --------------------------------------------------------------


def _ceil(x: Count) -> int | np.ndarray:
    """Round a count up to a whole number, forgiving float noise of density × size (0.3·10 → 3)."""
    if isinstance(x, int | np.integer):
        return int(x)
    c = np.ceil(np.round(np.asarray(x, dtype=np.float64), 6))
    return int(c) if c.ndim == 0 else c.astype(np.int64)


def _whole_bytes(bits: Count) -> int | np.ndarray:
    """Bytes of an array of `bits` bits packed back to back, rounded up once at its end."""
    if isinstance(bits, int | np.integer):
        return -(-int(bits) // 8)
    return _ceil(np.asarray(bits, dtype=np.float64) / 8)


def _zero_pad(a: np.ndarray, rows: int, cols: int) -> np.ndarray:
    """a zero-padded at the bottom/right to rows × cols."""
    if a.shape == (rows, cols):
        return a
    return np.pad(a, ((0, rows - a.shape[0]), (0, cols - a.shape[1])))


def _pointer(counts: np.ndarray, dtype: Any) -> np.ndarray:
    """Prefix-sum pointer array [0, c0, c0+c1, …] of len(counts) + 1 entries."""
    return np.concatenate(([0], np.cumsum(counts, dtype=np.int64))).astype(dtype)


# --- dense ------------------------------------------------------------------------


def dense_nbytes(rows: int, cols: int, value_bytes: float) -> int:
    """Dense storage: every element, value_bytes each."""
    rows, cols = _check_int("rows", rows), _check_int("cols", cols)
    return _whole_bytes(rows * cols * _value_bits(value_bytes))


@dataclass(frozen=True, eq=False)
class DenseMatrix:
    """Dense row-major storage, the baseline every sparse format is compared with."""

    shape: tuple[int, int]
    values: np.ndarray  # [rows, cols]
    value_bytes: float

    name: ClassVar[str] = "dense"

    def __post_init__(self) -> None:
        _value_bits(self.value_bytes)
        if self.values.shape != tuple(self.shape):
            raise ValueError(f"values must have shape {self.shape}, got {self.values.shape}")

    @classmethod
    def encode(cls, dense: Any, *, value_bytes: float | None = None) -> DenseMatrix:
        a = _as_matrix(dense)
        return cls(a.shape, a.copy(), _matrix_value_bytes(a, value_bytes))

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.values))

    @property
    def nbytes(self) -> int:
        return _whole_bytes(self.values.size * _value_bits(self.value_bytes))

    def to_dense(self) -> np.ndarray:
        return self.values.copy()

    @classmethod
    def nbytes_at(cls, rows: int, cols: int, *, density: Count, value_bytes: float) -> int:
        """Closed-form bytes; density is validated but does not change dense storage."""
        _expected_nnz(rows, cols, density)
        return dense_nbytes(rows, cols, value_bytes)


# --- CSR --------------------------------------------------------------------------


def _check_csr_widths(cols: int, max_nnz: int, index_bits: Any, ptr_bits: Any) -> tuple[int, int]:
    """CSR column indices must hold cols - 1; the row pointer must hold nnz."""
    index_bits = _check_index_bits("index_bits", index_bits)
    ptr_bits = _check_index_bits("ptr_bits", ptr_bits)
    _check_fits("index_bits", index_bits, cols - 1, "the largest column index (cols - 1)")
    _check_fits("ptr_bits", ptr_bits, max_nnz, "the last row-pointer entry (nnz)")
    return index_bits, ptr_bits


def csr_nbytes(
    rows: int, cols: int, nnz: Count, value_bytes: float, index_bits: int = 32, ptr_bits: int = 32
) -> Count:
    """CSR bytes: nnz values + nnz column indices + (rows + 1) row-pointer entries."""
    rows, cols = _check_int("rows", rows), _check_int("cols", cols)
    _check_count("nnz", nnz, rows * cols)
    index_bits, ptr_bits = _check_csr_widths(cols, _ceil(np.max(nnz)), index_bits, ptr_bits)
    return (
        _whole_bytes(nnz * _value_bits(value_bytes))
        + _whole_bytes(nnz * index_bits)
        + _whole_bytes((rows + 1) * ptr_bits)
    )


@dataclass(frozen=True, eq=False)
class CSR:
    """Compressed sparse rows: nonzero values, their column indices, a row pointer."""

    shape: tuple[int, int]
    values: np.ndarray  # [nnz], row-major order
    col_idx: np.ndarray  # [nnz], unsigned, index_bits wide
    row_ptr: np.ndarray  # [rows + 1], unsigned, ptr_bits wide
    value_bytes: float
    index_bits: int = 32
    ptr_bits: int = 32

    name: ClassVar[str] = "csr"

    def __post_init__(self) -> None:
        _value_bits(self.value_bytes)
        rows, cols = self.shape
        _check_csr_widths(cols, self.values.size, self.index_bits, self.ptr_bits)
        if self.values.ndim != 1 or self.col_idx.shape != self.values.shape:
            raise ValueError(
                f"col_idx must have shape {self.values.shape}, got {self.col_idx.shape}"
            )
        if self.row_ptr.shape != (rows + 1,):
            raise ValueError(f"row_ptr must have shape ({rows + 1},), got {self.row_ptr.shape}")

    @classmethod
    def encode(
        cls,
        dense: Any,
        *,
        index_bits: int = 32,
        ptr_bits: int = 32,
        value_bytes: float | None = None,
    ) -> CSR:
        a = _as_matrix(dense)
        mask = a != 0
        index_bits, ptr_bits = _check_csr_widths(
            a.shape[1], int(np.count_nonzero(mask)), index_bits, ptr_bits
        )
        _, col = np.nonzero(mask)
        return cls(
            a.shape,
            a[mask],
            col.astype(_INDEX_DTYPES[index_bits]),
            _pointer(mask.sum(axis=1), _INDEX_DTYPES[ptr_bits]),
            _matrix_value_bytes(a, value_bytes),
            index_bits,
            ptr_bits,
        )

    @property
    def nnz(self) -> int:
        return self.values.size

    @property
    def nbytes(self) -> int:
        return (
            _whole_bytes(self.values.size * _value_bits(self.value_bytes))
            + _whole_bytes(self.col_idx.size * self.index_bits)
            + _whole_bytes(self.row_ptr.size * self.ptr_bits)
        )

    def to_dense(self) -> np.ndarray:
        out = np.zeros(self.shape, dtype=self.values.dtype)
        row = np.repeat(np.arange(self.shape[0]), np.diff(self.row_ptr.astype(np.int64)))
        out[row, self.col_idx.astype(np.intp)] = self.values
        return out

    @classmethod
    def nbytes_at(
        cls,
        rows: int,
        cols: int,
        *,
        density: Count,
        value_bytes: float,
        index_bits: int = 32,
        ptr_bits: int = 32,
    ) -> Count:
        """Closed-form bytes at an expected element density."""
        nnz = _expected_nnz(rows, cols, density)
        return csr_nbytes(rows, cols, nnz, value_bytes, index_bits, ptr_bits)


# --- BSR --------------------------------------------------------------------------


def _check_bsr_widths(
    block_cols: int, max_blocks: int, index_bits: Any, ptr_bits: Any
) -> tuple[int, int]:
    """BSR block-column indices must hold block_cols - 1; the block-row pointer must hold n_blocks."""
    index_bits = _check_index_bits("index_bits", index_bits)
    ptr_bits = _check_index_bits("ptr_bits", ptr_bits)
    _check_fits("index_bits", index_bits, block_cols - 1, "the largest block-column index")
    _check_fits("ptr_bits", ptr_bits, max_blocks, "the last block-row-pointer entry (n_blocks)")
    return index_bits, ptr_bits


def _bsr_grid(rows: int, cols: int, bh: Any, bw: Any, pad: bool) -> tuple[int, int]:
    """Block rows and block columns of a rows×cols matrix cut into bh×bw blocks."""
    bh, bw = _check_int("bh", bh, 1), _check_int("bw", bw, 1)
    return _grid("rows", rows, "bh", bh, pad), _grid("cols", cols, "bw", bw, pad)


def bsr_nbytes(
    rows: int,
    cols: int,
    n_blocks: Count,
    bh: int,
    bw: int,
    value_bytes: float,
    index_bits: int = 32,
    ptr_bits: int = 32,
    pad: bool = False,
) -> Count:
    """BSR bytes: n_blocks dense bh×bw blocks + n_blocks block-column indices + (block_rows + 1) pointers."""
    rows, cols = _check_int("rows", rows), _check_int("cols", cols)
    block_rows, block_cols = _bsr_grid(rows, cols, bh, bw, pad)
    _check_count("n_blocks", n_blocks, block_rows * block_cols)
    index_bits, ptr_bits = _check_bsr_widths(
        block_cols, _ceil(np.max(n_blocks)), index_bits, ptr_bits
    )
    return (
        _whole_bytes(n_blocks * (bh * bw * _value_bits(value_bytes)))
        + _whole_bytes(n_blocks * index_bits)
        + _whole_bytes((block_rows + 1) * ptr_bits)
    )


@dataclass(frozen=True, eq=False)
class BSR:
    """Block CSR: every bh×bw block holding a nonzero, stored dense, with block-column
    indices and a block-row pointer. Shapes that bh/bw do not divide need pad=True at
    encode: the matrix is zero-padded at the bottom/right and decode trims it back."""

    shape: tuple[int, int]  # of the original (unpadded) matrix
    bh: int
    bw: int
    values: np.ndarray  # [n_blocks, bh, bw], blocks in row-major block order
    block_col_idx: np.ndarray  # [n_blocks], unsigned, index_bits wide
    block_row_ptr: np.ndarray  # [block_rows + 1], unsigned, ptr_bits wide
    value_bytes: float
    index_bits: int = 32
    ptr_bits: int = 32

    name: ClassVar[str] = "bsr"

    def __post_init__(self) -> None:
        _value_bits(self.value_bytes)
        block_rows, block_cols = _bsr_grid(*self.shape, self.bh, self.bw, pad=True)
        _check_bsr_widths(block_cols, self.n_blocks, self.index_bits, self.ptr_bits)
        if self.values.shape != (self.n_blocks, self.bh, self.bw):
            raise ValueError(f"values must have shape (n_blocks, bh, bw), got {self.values.shape}")
        if self.block_col_idx.shape != (self.n_blocks,):
            raise ValueError(
                f"block_col_idx must have shape ({self.n_blocks},), got {self.block_col_idx.shape}"
            )
        if self.block_row_ptr.shape != (block_rows + 1,):
            raise ValueError(
                f"block_row_ptr must have shape ({block_rows + 1},), got {self.block_row_ptr.shape}"
            )

    @classmethod
    def encode(
        cls,
        dense: Any,
        *,
        bh: int,
        bw: int,
        pad: bool = False,
        index_bits: int = 32,
        ptr_bits: int = 32,
        value_bytes: float | None = None,
    ) -> BSR:
        a = _as_matrix(dense)
        block_rows, block_cols = _bsr_grid(*a.shape, bh, bw, pad)
        blocks = (
            _zero_pad(a, block_rows * bh, block_cols * bw)
            .reshape(block_rows, bh, block_cols, bw)
            .transpose(0, 2, 1, 3)
        )
        occupied = blocks.any(axis=(2, 3))
        index_bits, ptr_bits = _check_bsr_widths(
            block_cols, int(np.count_nonzero(occupied)), index_bits, ptr_bits
        )
        _, block_col = np.nonzero(occupied)
        return cls(
            a.shape,
            bh,
            bw,
            blocks[occupied],
            block_col.astype(_INDEX_DTYPES[index_bits]),
            _pointer(occupied.sum(axis=1), _INDEX_DTYPES[ptr_bits]),
            _matrix_value_bytes(a, value_bytes),
            index_bits,
            ptr_bits,
        )

    @property
    def n_blocks(self) -> int:
        return self.values.shape[0]

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.values))

    @property
    def nbytes(self) -> int:
        return (
            _whole_bytes(self.values.size * _value_bits(self.value_bytes))
            + _whole_bytes(self.block_col_idx.size * self.index_bits)
            + _whole_bytes(self.block_row_ptr.size * self.ptr_bits)
        )

    def to_dense(self) -> np.ndarray:
        block_rows, block_cols = _bsr_grid(*self.shape, self.bh, self.bw, pad=True)
        blocks = np.zeros((block_rows, block_cols, self.bh, self.bw), dtype=self.values.dtype)
        block_row = np.repeat(np.arange(block_rows), np.diff(self.block_row_ptr.astype(np.int64)))
        blocks[block_row, self.block_col_idx.astype(np.intp)] = self.values
        padded = blocks.transpose(0, 2, 1, 3).reshape(block_rows * self.bh, block_cols * self.bw)
        return padded[: self.shape[0], : self.shape[1]].copy()

    @classmethod
    def nbytes_at(
        cls,
        rows: int,
        cols: int,
        *,
        density: Count,
        value_bytes: float,
        bh: int,
        bw: int,
        pad: bool = False,
        index_bits: int = 32,
        ptr_bits: int = 32,
    ) -> Count:
        """Closed-form bytes; density here is the fraction of bh×bw blocks that hold a nonzero
        (equal to element density only for block-aligned patterns with dense blocks)."""
        rows, cols = _check_int("rows", rows), _check_int("cols", cols)
        block_rows, block_cols = _bsr_grid(rows, cols, bh, bw, pad)
        _check_count("density", density, 1)
        n_blocks = density * (block_rows * block_cols)
        return bsr_nbytes(rows, cols, n_blocks, bh, bw, value_bytes, index_bits, ptr_bits, pad)


# --- bitmap -----------------------------------------------------------------------


def bitmap_nbytes(rows: int, cols: int, nnz: Count, value_bytes: float) -> Count:
    """Bitmap bytes: one bit per element, each row padded to whole bytes, + nnz values."""
    rows, cols = _check_int("rows", rows), _check_int("cols", cols)
    _check_count("nnz", nnz, rows * cols)
    return rows * -(-cols // 8) + _whole_bytes(nnz * _value_bits(value_bytes))


@dataclass(frozen=True, eq=False)
class Bitmap:
    """One presence bit per element (rows packed to whole bytes, MSB first as np.packbits)
    plus the nonzero values in row-major order."""

    shape: tuple[int, int]
    bitmap: np.ndarray  # uint8 [rows, ceil(cols / 8)]
    values: np.ndarray  # [nnz], row-major order
    value_bytes: float

    name: ClassVar[str] = "bitmap"

    def __post_init__(self) -> None:
        _value_bits(self.value_bytes)
        rows, cols = self.shape
        if self.bitmap.shape != (rows, -(-cols // 8)) or self.bitmap.dtype != np.uint8:
            raise ValueError(
                f"bitmap must be uint8 of shape {(rows, -(-cols // 8))}, "
                f"got {self.bitmap.dtype} {self.bitmap.shape}"
            )
        if self.values.ndim != 1:
            raise ValueError(f"values must be 1-D, got shape {self.values.shape}")

    @classmethod
    def encode(cls, dense: Any, *, value_bytes: float | None = None) -> Bitmap:
        a = _as_matrix(dense)
        mask = a != 0
        return cls(a.shape, np.packbits(mask, axis=1), a[mask], _matrix_value_bytes(a, value_bytes))

    @property
    def nnz(self) -> int:
        return self.values.size

    @property
    def nbytes(self) -> int:
        return self.bitmap.size + _whole_bytes(self.values.size * _value_bits(self.value_bytes))

    def to_dense(self) -> np.ndarray:
        mask = np.unpackbits(self.bitmap, axis=1, count=self.shape[1]).astype(bool)
        out = np.zeros(self.shape, dtype=self.values.dtype)
        out[mask] = self.values
        return out

    @classmethod
    def nbytes_at(cls, rows: int, cols: int, *, density: Count, value_bytes: float) -> Count:
        """Closed-form bytes at an expected element density."""
        return bitmap_nbytes(rows, cols, _expected_nnz(rows, cols, density), value_bytes)


# --- N:M compressed ---------------------------------------------------------------


def nm_index_bits(m: int) -> int:
    """Bits of one kept value's position inside its group of m: ceil(log2 m) (2 for 2:4)."""
    return (_check_int("m", m, 1) - 1).bit_length()


def _check_nm(n: Any, m: Any) -> tuple[int, int]:
    """An N:M pattern keeps 1 <= n <= m values of every m."""
    m = _check_int("m", m, 1)
    if isinstance(n, bool) or not isinstance(n, int | np.integer) or not 1 <= n <= m:
        raise ValueError(f"n must be an integer with 1 <= n <= m (m={m}), got {n!r}")
    return int(n), m


def nm_nbytes(rows: int, cols: int, n: int, m: int, value_bytes: float, pad: bool = False) -> int:
    """N:M compressed bytes (cuSPARSELt layout): rows·cols/m·n values + as many ceil(log2 m)-bit indices."""
    rows, cols = _check_int("rows", rows), _check_int("cols", cols)
    n, m = _check_nm(n, m)
    kept = rows * _grid("cols", cols, "m", m, pad) * n
    return _whole_bytes(kept * _value_bits(value_bytes)) + _whole_bytes(kept * nm_index_bits(m))


@dataclass(frozen=True, eq=False)
class NMCompressed:
    """N:M compressed, as sparse Tensor Cores / cuSPARSELt store it: along cols, in groups
    of m, exactly n values kept (a group with fewer nonzeros keeps stored zeros) and one
    ceil(log2 m)-bit position per kept value. Cols that m does not divide need pad=True."""

    shape: tuple[int, int]  # of the original (unpadded) matrix
    n: int
    m: int
    values: np.ndarray  # [rows, groups, n]
    indices: np.ndarray  # [rows, groups, n], position inside the group, ascending
    value_bytes: float

    name: ClassVar[str] = "nm"

    def __post_init__(self) -> None:
        _value_bits(self.value_bytes)
        _check_nm(self.n, self.m)
        rows, cols = self.shape
        expected = (rows, -(-cols // self.m), self.n)
        if self.values.shape != expected or self.indices.shape != expected:
            raise ValueError(
                f"values and indices must have shape {expected}, "
                f"got {self.values.shape} and {self.indices.shape}"
            )
        if self.indices.size and int(self.indices.max()) >= self.m:
            raise ValueError(f"indices must lie in [0, m={self.m}), got {int(self.indices.max())}")

    @classmethod
    def encode(
        cls, dense: Any, *, n: int, m: int, pad: bool = False, value_bytes: float | None = None
    ) -> NMCompressed:
        a = _as_matrix(dense)
        n, m = _check_nm(n, m)
        rows, cols = a.shape
        groups = _grid("cols", cols, "m", m, pad)
        g = _zero_pad(a, rows, groups * m).reshape(rows, groups, m)
        nonzero = g != 0
        counts = nonzero.sum(axis=-1)
        bad = np.argwhere(counts > n)
        if bad.size:
            r, q = (int(v) for v in bad[0])
            raise ValueError(
                f"dense violates {n}:{m} sparsity: row {r}, group {q} (cols {q * m}..{q * m + m - 1}) "
                f"has {int(counts[r, q])} nonzeros, n={n} allowed ({len(bad)} groups violate)"
            )
        # keep every nonzero, fill the remaining slots with the lowest-position zeros
        rank = np.where(nonzero, 0, m) + np.arange(m)
        idx = np.sort(np.argsort(rank, axis=-1, kind="stable")[..., :n], axis=-1)
        return cls(
            a.shape,
            n,
            m,
            np.take_along_axis(g, idx, axis=-1),
            idx.astype(np.min_scalar_type(m - 1)),
            _matrix_value_bytes(a, value_bytes),
        )

    @property
    def index_bits(self) -> int:
        return nm_index_bits(self.m)

    @property
    def nnz(self) -> int:
        return int(np.count_nonzero(self.values))

    @property
    def nbytes(self) -> int:
        return _whole_bytes(self.values.size * _value_bits(self.value_bytes)) + _whole_bytes(
            self.indices.size * self.index_bits
        )

    def to_dense(self) -> np.ndarray:
        rows, cols = self.shape
        groups = self.values.shape[1]
        out = np.zeros((rows, groups, self.m), dtype=self.values.dtype)
        np.put_along_axis(out, self.indices.astype(np.intp), self.values, axis=-1)
        return out.reshape(rows, groups * self.m)[:, :cols].copy()

    @classmethod
    def nbytes_at(
        cls,
        rows: int,
        cols: int,
        *,
        density: Count,
        value_bytes: float,
        n: int,
        m: int,
        pad: bool = False,
    ) -> int:
        """Closed-form bytes; fixed by n:m, density only checked to be <= n/m."""
        _expected_nnz(rows, cols, density)
        n, m = _check_nm(n, m)
        if np.max(density) > n / m + 1e-9:
            raise ValueError(f"density must be <= n/m = {n}/{m} for N:M storage, got {density!r}")
        return nm_nbytes(rows, cols, n, m, value_bytes, pad)


# --- Tiled-CSL (Flash-LLM) --------------------------------------------------------


def _tile_grid(rows: int, cols: int, tile_rows: Any, tile_cols: Any) -> tuple[int, int]:
    """Tile rows and tile columns of the grid; edge tiles may be partial."""
    tile_rows, tile_cols = (
        _check_int("tile_rows", tile_rows, 1),
        _check_int("tile_cols", tile_cols, 1),
    )
    if tile_rows * tile_cols > TILED_CSL_TILE_AREA_MAX:
        raise ValueError(
            f"tile_rows*tile_cols must be <= {TILED_CSL_TILE_AREA_MAX} (in-tile positions are uint16), "
            f"got tile_rows={tile_rows}, tile_cols={tile_cols}"
        )
    return -(-rows // tile_rows), -(-cols // tile_cols)


def _check_tiled_csl_nnz(max_nnz: int) -> None:
    """The last int32 tile offset is nnz."""
    if max_nnz > TILED_CSL_NNZ_MAX:
        raise ValueError(
            f"nnz must be <= {TILED_CSL_NNZ_MAX} (Tiled-CSL offsets are int32), got {max_nnz}"
        )


def tiled_csl_nbytes(
    rows: int, cols: int, nnz: Count, value_bytes: float, tile_rows: int = 64, tile_cols: int = 64
) -> Count:
    """Tiled-CSL bytes (Flash-LLM): nnz (value, uint16 in-tile position) pairs + int32 offsets per tile + 1."""
    rows, cols = _check_int("rows", rows), _check_int("cols", cols)
    grid_rows, grid_cols = _tile_grid(rows, cols, tile_rows, tile_cols)
    _check_count("nnz", nnz, rows * cols)
    _check_tiled_csl_nnz(_ceil(np.max(nnz)))
    return (
        _whole_bytes(nnz * _value_bits(value_bytes))
        + _whole_bytes(nnz * TILED_CSL_POSITION_BITS)
        + _whole_bytes((grid_rows * grid_cols + 1) * TILED_CSL_OFFSET_BITS)
    )


@dataclass(frozen=True, eq=False)
class TiledCSL:
    """Flash-LLM Tiled-CSL ("load as sparse, compute as dense"): tiles in row-major grid order,
    per-tile int32 offsets, and per nonzero its value and uint16 in-tile position
    row*tile_cols + col (row-major inside the tile). Edge tiles may be partial."""

    shape: tuple[int, int]
    tile_rows: int
    tile_cols: int
    values: np.ndarray  # [nnz], tile by tile
    positions: np.ndarray  # uint16 [nnz]
    tile_offsets: np.ndarray  # int32 [n_tiles + 1]
    value_bytes: float

    name: ClassVar[str] = "tiled_csl"

    def __post_init__(self) -> None:
        _value_bits(self.value_bytes)
        grid_rows, grid_cols = _tile_grid(*self.shape, self.tile_rows, self.tile_cols)
        _check_tiled_csl_nnz(self.values.size)
        if self.values.ndim != 1 or self.positions.shape != self.values.shape:
            raise ValueError(
                f"positions must have shape {self.values.shape}, got {self.positions.shape}"
            )
        if self.tile_offsets.shape != (grid_rows * grid_cols + 1,):
            raise ValueError(
                f"tile_offsets must have shape ({grid_rows * grid_cols + 1},), got {self.tile_offsets.shape}"
            )

    @classmethod
    def encode(
        cls,
        dense: Any,
        *,
        tile_rows: int = 64,
        tile_cols: int = 64,
        value_bytes: float | None = None,
    ) -> TiledCSL:
        a = _as_matrix(dense)
        grid_rows, grid_cols = _tile_grid(*a.shape, tile_rows, tile_cols)
        _check_tiled_csl_nnz(int(np.count_nonzero(a)))
        n_tiles = grid_rows * grid_cols
        tiles = (
            _zero_pad(a, grid_rows * tile_rows, grid_cols * tile_cols)
            .reshape(grid_rows, tile_rows, grid_cols, tile_cols)
            .transpose(0, 2, 1, 3)
            .reshape(n_tiles, tile_rows * tile_cols)
        )
        tile, position = np.nonzero(tiles)
        return cls(
            a.shape,
            tile_rows,
            tile_cols,
            tiles[tile, position],
            position.astype(np.uint16),
            _pointer(np.bincount(tile, minlength=n_tiles), np.int32),
            _matrix_value_bytes(a, value_bytes),
        )

    @property
    def n_tiles(self) -> int:
        return self.tile_offsets.size - 1

    @property
    def nnz(self) -> int:
        return self.values.size

    @property
    def nbytes(self) -> int:
        return (
            _whole_bytes(self.values.size * _value_bits(self.value_bytes))
            + _whole_bytes(self.positions.size * TILED_CSL_POSITION_BITS)
            + _whole_bytes(self.tile_offsets.size * TILED_CSL_OFFSET_BITS)
        )

    def to_dense(self) -> np.ndarray:
        grid_rows, grid_cols = _tile_grid(*self.shape, self.tile_rows, self.tile_cols)
        tiles = np.zeros((self.n_tiles, self.tile_rows * self.tile_cols), dtype=self.values.dtype)
        tile = np.repeat(np.arange(self.n_tiles), np.diff(self.tile_offsets.astype(np.int64)))
        tiles[tile, self.positions.astype(np.intp)] = self.values
        padded = (
            tiles.reshape(grid_rows, grid_cols, self.tile_rows, self.tile_cols)
            .transpose(0, 2, 1, 3)
            .reshape(grid_rows * self.tile_rows, grid_cols * self.tile_cols)
        )
        return padded[: self.shape[0], : self.shape[1]].copy()

    @classmethod
    def nbytes_at(
        cls,
        rows: int,
        cols: int,
        *,
        density: Count,
        value_bytes: float,
        tile_rows: int = 64,
        tile_cols: int = 64,
    ) -> Count:
        """Closed-form bytes at an expected element density."""
        nnz = _expected_nnz(rows, cols, density)
        return tiled_csl_nbytes(rows, cols, nnz, value_bytes, tile_rows, tile_cols)


# --- registry ---------------------------------------------------------------------

FORMATS: dict[str, type] = {
    "dense": DenseMatrix,
    "csr": CSR,
    "bsr": BSR,
    "bitmap": Bitmap,
    "nm": NMCompressed,
    "tiled_csl": TiledCSL,
}
"""Format name → class; every class has encode(dense, **params), nbytes_at(...), to_dense(), nbytes."""


def format_nbytes(
    name: str, rows: int, cols: int, *, density: Count, value_bytes: float, **params: Any
) -> Count:
    """Closed-form bytes of a rows×cols matrix at an expected density in the named format.

    params are the format's own: csr (index_bits, ptr_bits), bsr (bh, bw, pad, index_bits,
    ptr_bits; density = fraction of nonzero blocks), nm (n, m, pad), tiled_csl (tile_rows,
    tile_cols). density may be a numpy array to evaluate many points at once.
    """
    if name not in FORMATS:
        raise ValueError(f"format must be one of {sorted(FORMATS)}, got {name!r}")
    return FORMATS[name].nbytes_at(rows, cols, density=density, value_bytes=value_bytes, **params)
