"""Sparse storage formats: exact round trips and byte counts from first principles."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simsparse.core.formats import (
    BSR,
    CSR,
    FORMATS,
    Bitmap,
    DenseMatrix,
    NMCompressed,
    TiledCSL,
    bitmap_nbytes,
    bsr_nbytes,
    csr_nbytes,
    dense_nbytes,
    format_nbytes,
    nm_index_bits,
    nm_nbytes,
    tiled_csl_nbytes,
)

DTYPES = [np.float16, np.float32, np.int8]
FAST = settings(max_examples=60, deadline=None)


def random_matrix(rows: int, cols: int, density: float, dtype: type, seed: int) -> np.ndarray:
    """Random matrix whose elements are nonzero with the given probability."""
    rng = np.random.default_rng(seed)
    if np.dtype(dtype).kind == "f":
        values = rng.standard_normal((rows, cols)) + 3.0  # away from 0 so casts stay nonzero
    else:
        values = rng.integers(1, 100, size=(rows, cols)) * rng.choice([-1, 1], size=(rows, cols))
    return (values * (rng.random((rows, cols)) < density)).astype(dtype)


def random_nm_matrix(rows: int, groups: int, n: int, m: int, dtype: type, seed: int) -> np.ndarray:
    """Random matrix with at most n nonzeros in every group of m along cols."""
    rng = np.random.default_rng(seed)
    keep = rng.integers(0, n + 1, size=(rows, groups, 1))  # 0..n nonzeros per group
    rank = np.argsort(rng.random((rows, groups, m)), axis=-1).argsort(axis=-1)
    w = random_matrix(rows, groups * m, 1.0, dtype, seed + 1).reshape(rows, groups, m)
    return np.where(rank < keep, w, 0).astype(dtype).reshape(rows, groups * m)


matrices = st.builds(
    random_matrix,
    rows=st.integers(0, 40),
    cols=st.integers(0, 40),
    density=st.floats(0.0, 1.0),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31),
)


def assert_round_trip(fmt: object, w: np.ndarray) -> None:
    back = fmt.to_dense()
    assert back.dtype == w.dtype and back.shape == w.shape
    np.testing.assert_array_equal(back, w)


# --- round trips (hypothesis) ----------------------------------------------------


@FAST
@given(w=matrices)
def test_round_trip_dense_csr_bitmap(w: np.ndarray) -> None:
    for cls in (DenseMatrix, CSR, Bitmap):
        assert_round_trip(cls.encode(w), w)


@FAST
@given(w=matrices, bh=st.integers(1, 9), bw=st.integers(1, 9))
def test_round_trip_bsr_padded(w: np.ndarray, bh: int, bw: int) -> None:
    assert_round_trip(BSR.encode(w, bh=bh, bw=bw, pad=True), w)


@FAST
@given(w=matrices, tile_rows=st.integers(1, 17), tile_cols=st.integers(1, 17))
def test_round_trip_tiled_csl(w: np.ndarray, tile_rows: int, tile_cols: int) -> None:
    assert_round_trip(TiledCSL.encode(w, tile_rows=tile_rows, tile_cols=tile_cols), w)


@FAST
@given(
    rows=st.integers(0, 20),
    groups=st.integers(0, 10),
    nm=st.integers(1, 8).flatmap(lambda m: st.tuples(st.integers(1, m), st.just(m))),
    trim=st.integers(0, 7),
    dtype=st.sampled_from(DTYPES),
    seed=st.integers(0, 2**31),
)
def test_round_trip_nm(
    rows: int, groups: int, nm: tuple[int, int], trim: int, dtype: type, seed: int
) -> None:
    n, m = nm
    w = random_nm_matrix(rows, groups, n, m, dtype, seed)
    assert_round_trip(NMCompressed.encode(w, n=n, m=m), w)
    ragged = w[:, : max(0, w.shape[1] - trim % m)]  # cols not a multiple of m: padded encode
    assert_round_trip(NMCompressed.encode(ragged, n=n, m=m, pad=True), ragged)


# --- closed forms agree with the encoded arrays (hypothesis) ----------------------


@FAST
@given(
    w=matrices,
    index_bits=st.sampled_from([16, 32, 64]),
    ptr_bits=st.sampled_from([16, 32, 64]),
    value_bytes=st.sampled_from([None, 0.5, 1, 2, 4]),
)
def test_closed_form_csr_bitmap_dense(
    w: np.ndarray, index_bits: int, ptr_bits: int, value_bytes: float | None
) -> None:
    rows, cols = w.shape
    vb = w.dtype.itemsize if value_bytes is None else value_bytes
    nnz = int(np.count_nonzero(w))
    csr = CSR.encode(w, index_bits=index_bits, ptr_bits=ptr_bits, value_bytes=value_bytes)
    assert csr.nbytes == csr_nbytes(rows, cols, nnz, vb, index_bits, ptr_bits)
    assert Bitmap.encode(w, value_bytes=value_bytes).nbytes == bitmap_nbytes(rows, cols, nnz, vb)
    assert DenseMatrix.encode(w, value_bytes=value_bytes).nbytes == dense_nbytes(rows, cols, vb)
    if rows * cols:  # the density path must recover nnz despite float rounding
        density = nnz / (rows * cols)
        assert (
            format_nbytes(
                "csr",
                rows,
                cols,
                density=density,
                value_bytes=vb,
                index_bits=index_bits,
                ptr_bits=ptr_bits,
            )
            == csr.nbytes
        )
        assert format_nbytes(
            "bitmap", rows, cols, density=density, value_bytes=vb
        ) == bitmap_nbytes(rows, cols, nnz, vb)


@FAST
@given(
    w=matrices, bh=st.integers(1, 9), bw=st.integers(1, 9), value_bytes=st.sampled_from([None, 0.5])
)
def test_closed_form_bsr(w: np.ndarray, bh: int, bw: int, value_bytes: float | None) -> None:
    rows, cols = w.shape
    vb = w.dtype.itemsize if value_bytes is None else value_bytes
    bsr = BSR.encode(w, bh=bh, bw=bw, pad=True, value_bytes=value_bytes)
    assert bsr.nbytes == bsr_nbytes(rows, cols, bsr.n_blocks, bh, bw, vb, pad=True)
    total_blocks = -(-rows // bh) * -(-cols // bw)
    if total_blocks:
        density = bsr.n_blocks / total_blocks
        assert format_nbytes(
            "bsr", rows, cols, density=density, value_bytes=vb, bh=bh, bw=bw, pad=True
        ) == (bsr.nbytes)


@FAST
@given(w=matrices, tile_rows=st.integers(1, 17), tile_cols=st.integers(1, 17))
def test_closed_form_tiled_csl(w: np.ndarray, tile_rows: int, tile_cols: int) -> None:
    rows, cols = w.shape
    t = TiledCSL.encode(w, tile_rows=tile_rows, tile_cols=tile_cols)
    assert t.nbytes == tiled_csl_nbytes(rows, cols, t.nnz, w.dtype.itemsize, tile_rows, tile_cols)


@FAST
@given(
    rows=st.integers(0, 20),
    groups=st.integers(0, 10),
    nm=st.integers(1, 8).flatmap(lambda m: st.tuples(st.integers(1, m), st.just(m))),
    value_bytes=st.sampled_from([0.5, 1, 2, 4]),
    seed=st.integers(0, 2**31),
)
def test_closed_form_nm(
    rows: int, groups: int, nm: tuple[int, int], value_bytes: float, seed: int
) -> None:
    n, m = nm
    w = random_nm_matrix(rows, groups, n, m, np.float32, seed)
    enc = NMCompressed.encode(w, n=n, m=m, value_bytes=value_bytes)
    assert enc.nbytes == nm_nbytes(rows, groups * m, n, m, value_bytes)
    assert enc.nbytes == format_nbytes(
        "nm", rows, groups * m, density=n / m, value_bytes=value_bytes, n=n, m=m
    )


# --- hand-computed byte counts ----------------------------------------------------


def matrix_with_nonzeros(
    shape: tuple[int, int], cells: list[tuple[int, int]], dtype: type
) -> np.ndarray:
    w = np.zeros(shape, dtype=dtype)
    for k, (r, c) in enumerate(cells):
        w[r, c] = k + 1
    return w


def test_csr_bytes_by_hand() -> None:
    w = matrix_with_nonzeros((4, 8), [(0, 1), (0, 7), (2, 3), (3, 0), (3, 5)], np.float16)
    # 5 fp16 values + 5 int32 column indices + (4 + 1) int32 row pointers
    assert CSR.encode(w).nbytes == 5 * 2 + 5 * 4 + 5 * 4 == 50
    assert csr_nbytes(4, 8, 5, 2) == 50
    # 16-bit column indices, 32-bit row pointer, fp32: 2·4 + 2·2 + (3 + 1)·4
    w32 = matrix_with_nonzeros((3, 8), [(1, 2), (2, 6)], np.float32)
    assert CSR.encode(w32, index_bits=16).nbytes == 2 * 4 + 2 * 2 + 4 * 4 == 28
    # int4 values (0.5 B) are packed: 3 values = 12 bits -> 2 bytes; + 3·4 + 2·4
    w4 = np.array([[1, 0, -3, 7]], dtype=np.int8)
    assert CSR.encode(w4, value_bytes=0.5).nbytes == 2 + 3 * 4 + 2 * 4 == 22
    enc = CSR.encode(w)
    assert enc.row_ptr.tolist() == [0, 2, 2, 3, 5] and enc.col_idx.tolist() == [1, 7, 3, 0, 5]


def test_bsr_bytes_by_hand() -> None:
    # 4×6 fp16 in 2×3 blocks: a 2×2 block grid, two blocks hold nonzeros
    w = matrix_with_nonzeros((4, 6), [(0, 0), (1, 2), (3, 5)], np.float16)
    bsr = BSR.encode(w, bh=2, bw=3)
    assert bsr.n_blocks == 2
    # 2 blocks · 2·3 values · 2 B + 2 int32 block-column indices + (2 + 1) int32 pointers
    assert bsr.nbytes == 2 * 6 * 2 + 2 * 4 + 3 * 4 == 44
    assert bsr_nbytes(4, 6, 2, 2, 3, 2) == 44
    # 5 rows padded to 6 with bh=2: 3 block rows -> 4 pointers; one block
    w5 = matrix_with_nonzeros((5, 6), [(4, 1)], np.float16)
    assert BSR.encode(w5, bh=2, bw=3, pad=True).nbytes == 1 * 6 * 2 + 1 * 4 + 4 * 4 == 32


def test_bitmap_bytes_by_hand() -> None:
    # 3×10: 10 bits per row need 2 whole bytes -> 6 bytes of bitmap, + 4 fp16 values
    w = matrix_with_nonzeros((3, 10), [(0, 0), (0, 9), (1, 8), (2, 4)], np.float16)
    bm = Bitmap.encode(w)
    assert bm.bitmap.shape == (3, 2)
    assert bm.nbytes == 3 * 2 + 4 * 2 == 14
    assert bitmap_nbytes(3, 10, 4, 2) == 14


def test_nm_bytes_by_hand() -> None:
    rows, cols = 4, 16
    dense_bytes = rows * cols * 2
    # 2:4 fp16: half the values kept + a 2-bit index each -> 9/16 of dense
    values = rows * cols // 4 * 2
    assert nm_nbytes(rows, cols, 2, 4, 2) == values * 2 + values * 2 // 8 == 72
    assert 72 * 16 == 9 * dense_bytes
    w = random_nm_matrix(rows, cols // 4, 2, 4, np.float16, seed=3)
    assert NMCompressed.encode(w, n=2, m=4).nbytes * 16 == 9 * dense_bytes
    # index widths: ceil(log2 m)
    assert [nm_index_bits(m) for m in (1, 2, 4, 8, 16, 5)] == [0, 1, 2, 3, 4, 3]
    # 1:4 on 2×8 fp16: 4 kept values -> 8 bytes + 4·2 bits = 1 byte
    assert nm_nbytes(2, 8, 1, 4, 2) == 4 * 2 + 1 == 9
    # 2:8 on 1×16 fp16: 4 kept values -> 8 bytes + 4·3 = 12 bits -> 2 bytes
    assert nm_nbytes(1, 16, 2, 8, 2) == 4 * 2 + 2 == 10
    # metadata rounds up once per array: 1:8 on 3×8 is 3·3 = 9 bits -> 2 bytes, not 3
    assert nm_nbytes(3, 8, 1, 8, 2) == 3 * 2 + 2 == 8


def test_nm_stores_zeros_for_sparse_groups() -> None:
    w = np.array([[0, 0, 0, 5, 0, 0, 0, 0]], dtype=np.float16)
    enc = NMCompressed.encode(w, n=2, m=4)
    # group 0: the nonzero at 3 plus the lowest zero slot 0; group 1: two stored zeros
    assert enc.indices.tolist() == [[[0, 3], [0, 1]]]
    assert enc.values.tolist() == [[[0, 5], [0, 0]]]


def test_tiled_csl_by_hand() -> None:
    # 100×130 with 64×64 tiles: a 2×3 grid = 6 tiles -> 7 int32 offsets; 10 fp16 nonzeros
    cells = [
        (0, 0),
        (1, 1),
        (2, 2),
        (3, 3),
        (4, 4),
        (70, 65),
        (99, 129),
        (5, 100),
        (63, 63),
        (64, 64),
    ]
    w = matrix_with_nonzeros((100, 130), cells, np.float16)
    t = TiledCSL.encode(w)
    assert t.n_tiles == 6 and t.tile_offsets.size == 6 + 1
    assert t.nbytes == 10 * (2 + 2) + 4 * (6 + 1) == 68
    assert tiled_csl_nbytes(100, 130, 10, 2) == 68
    # (70, 65) lies in tile (1, 1) = tile 4 of the row-major grid, at (6, 1) -> 6·64 + 1
    k = cells.index((70, 65))
    assert t.positions[t.values == k + 1].tolist() == [6 * 64 + 1]
    # per-tile counts 6, 1, 0, 0, 2, 1 (tile 0 holds the diagonal and (63, 63))
    assert t.tile_offsets.tolist() == [0, 6, 6 + 1, 7, 7, 7 + 2, 9 + 1]


def test_dense_bytes_by_hand() -> None:
    assert dense_nbytes(3, 5, 4) == 3 * 5 * 4
    assert dense_nbytes(3, 5, 0.5) == 8  # 15 int4 values = 60 bits -> 8 bytes
    assert DenseMatrix.encode(np.ones((3, 5), np.float32)).nbytes == 60


def test_expected_nnz_and_vectorised_points() -> None:
    # fractional expected nnz rounds each array up: 2.5 fp16 values -> 5 B, 2.5·4 = 10 B, 3·4
    assert csr_nbytes(2, 4, 2.5, 2) == 5 + 10 + 12
    # density × size with float noise (0.3 · 10 = 3.0000000000000004) counts 3 nonzeros
    assert format_nbytes("csr", 2, 5, density=0.3, value_bytes=2) == csr_nbytes(2, 5, 3, 2)
    density = np.array([0.0, 0.25, 0.5, 1.0])
    got = format_nbytes("tiled_csl", 64, 128, density=density, value_bytes=2)
    want = [tiled_csl_nbytes(64, 128, int(d * 64 * 128), 2) for d in density]
    assert got.tolist() == want
    assert set(FORMATS) == {"dense", "csr", "bsr", "bitmap", "nm", "tiled_csl"}


# --- errors name the field ------------------------------------------------------


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda: csr_nbytes(-1, 4, 0, 2), "rows"),
        (lambda: csr_nbytes(4, 4, 17, 2), "nnz"),
        (lambda: csr_nbytes(4, 4, 1, 2, index_bits=8), "index_bits"),
        (lambda: csr_nbytes(1, 70000, 1, 2, index_bits=16), "index_bits"),
        (lambda: csr_nbytes(1, 70000, 70000, 2, ptr_bits=16), "ptr_bits"),
        (lambda: CSR.encode(np.ones((1, 70000), np.int8), index_bits=16), "index_bits"),
        (lambda: csr_nbytes(4, 4, 1, 0.3), "value_bytes"),
        (lambda: CSR.encode(np.ones((2, 2, 2))), "dense"),
        (lambda: nm_nbytes(4, 8, 5, 4, 2), "n"),
        (lambda: nm_nbytes(4, 10, 2, 4, 2), "cols"),
        (lambda: NMCompressed.encode(np.ones((2, 4)), n=0, m=4), "n"),
        (lambda: BSR.encode(np.ones((5, 6)), bh=2, bw=3), "rows"),
        (lambda: bsr_nbytes(4, 7, 1, 2, 3, 2), "cols"),
        (lambda: bsr_nbytes(4, 6, 1, 0, 3, 2), "bh"),
        (lambda: bsr_nbytes(4, 6, 5, 2, 3, 2), "n_blocks"),
        (lambda: tiled_csl_nbytes(64, 64, 1, 2, tile_rows=512, tile_cols=256), "tile_rows"),
        (lambda: TiledCSL.encode(np.ones((4, 4)), tile_cols=0), "tile_cols"),
        (lambda: format_nbytes("coo", 4, 4, density=0.5, value_bytes=2), "format"),
        (lambda: format_nbytes("csr", 4, 4, density=1.5, value_bytes=2), "density"),
        (lambda: format_nbytes("nm", 4, 8, density=0.75, value_bytes=2, n=2, m=4), "density"),
    ],
)
def test_errors_name_the_field(call, field: str) -> None:
    with pytest.raises(ValueError, match=rf"\b{field}\b"):
        call()


def test_nm_violation_names_row_and_group() -> None:
    w = np.zeros((3, 12), np.float16)
    w[1, 8:11] = 1  # row 1, group 2 holds 3 nonzeros under 2:4
    with pytest.raises(ValueError, match=r"row 1, group 2"):
        NMCompressed.encode(w, n=2, m=4)
