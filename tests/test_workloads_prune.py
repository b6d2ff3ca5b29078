"""Pruners and pattern detection (numpy only: no torch needed)."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from simsparse.core.sparsity import (
    NM,
    Block,
    Channel,
    ConstantFanIn,
    Dense,
    Group,
    Unstructured,
)
from workloads import prune
from workloads.detect import analyse, detect, is_transposable, weight_matrix

PROPS = settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def weights(rows: int, cols: int, seed: int, ties: bool) -> np.ndarray:
    w = np.random.default_rng(seed).standard_normal((rows, cols))
    return np.round(w) if ties else w  # rounding makes many exact ties in |w|


seeds = st.integers(0, 2**31 - 1)
densities = st.floats(0.01, 1.0)


# --- property tests: every pruner's mask satisfies its own pattern's validator ----------------
@PROPS
@given(rows=st.integers(1, 40), cols=st.integers(1, 60), d=densities, seed=seeds, ties=st.booleans())
def test_magnitude_mask_is_valid_unstructured(rows, cols, d, seed, ties):
    w = weights(rows, cols, seed, ties)
    mask = prune.magnitude(w, d)
    assert Unstructured(d).check(mask) == []
    assert mask.sum() == min(rows * cols, max(1, round(d * rows * cols)))  # exact kept count
    kept, dropped = np.abs(w[mask]), np.abs(w[~mask])
    assert dropped.size == 0 or kept.min() >= dropped.max()  # magnitude order respected


@PROPS
@given(nm=st.sampled_from([(1, 2), (2, 4), (1, 4), (2, 8), (4, 8), (3, 8), (5, 16)]),
       rows=st.integers(1, 24), groups=st.integers(1, 12), seed=seeds, ties=st.booleans())
def test_nm_mask_is_valid_and_exactly_n_per_group(nm, rows, groups, seed, ties):
    n, m = nm
    w = weights(rows, groups * m, seed, ties)
    mask = prune.nm(w, n, m)
    assert NM(n, m).check(mask) == []
    assert (mask.reshape(rows, groups, m).sum(axis=2) == n).all()
    # inside each group the kept weights are the largest |w|
    g = np.abs(w).reshape(rows, groups, m)
    gm = mask.reshape(rows, groups, m)
    kept_min = np.where(gm, g, np.inf).min(axis=2)
    drop_max = np.where(~gm, g, -np.inf).max(axis=2)
    assert (kept_min >= drop_max).all()


@PROPS
@given(nm=st.sampled_from([(2, 4), (1, 4), (1, 2), (2, 8), (4, 8)]), rb=st.integers(1, 6),
       cb=st.integers(1, 6), seed=seeds, ties=st.booleans())
def test_transposable_nm_mask_is_nm_along_both_axes(nm, rb, cb, seed, ties):
    n, m = nm
    w = weights(rb * m, cb * m, seed, ties)
    mask = prune.transposable_nm(w, n, m)
    assert NM(n, m).check(mask) == []
    assert NM(n, m).check(mask.T) == []
    assert is_transposable(mask, n, m)


@PROPS
@given(bh=st.sampled_from([1, 2, 4, 8]), bw=st.sampled_from([1, 2, 4, 8]), rb=st.integers(1, 6),
       cb=st.integers(1, 6), d=densities, seed=seeds, ties=st.booleans())
def test_block_mask_is_valid(bh, bw, rb, cb, d, seed, ties):
    w = weights(rb * bh, cb * bw, seed, ties)
    mask = prune.block(w, bh, bw, d)
    assert Block(bh, bw, d).check(mask) == []
    n_blocks = rb * cb
    assert mask.sum() == bh * bw * min(n_blocks, max(1, round(d * n_blocks)))


@PROPS
@given(g=st.sampled_from([2, 4, 8, 16]), rows=st.integers(1, 20), vecs=st.integers(1, 8), d=densities,
       seed=seeds, ties=st.booleans())
def test_group_mask_is_valid(g, rows, vecs, d, seed, ties):
    w = weights(rows, g * vecs, seed, ties)
    mask = prune.group(w, g, d)
    assert Group(g, d).check(mask) == []


@PROPS
@given(rows=st.integers(1, 30), cols=st.integers(1, 30), d=densities, axis=st.sampled_from([0, 1]),
       seed=seeds, ties=st.booleans())
def test_channel_mask_is_valid(rows, cols, d, axis, seed, ties):
    w = weights(rows, cols, seed, ties)
    mask = prune.channel(w, d, axis)
    assert Channel(d, axis).check(mask) == []
    size = rows if axis == 0 else cols
    kept_lines = mask.any(axis=1 - axis).sum()
    assert kept_lines == min(size, max(1, round(d * size)))


@PROPS
@given(rows=st.integers(1, 30), cols=st.integers(1, 40), data=st.data(), seed=seeds, ties=st.booleans())
def test_constant_fan_in_mask_is_valid(rows, cols, data, seed, ties):
    k = data.draw(st.integers(1, cols))
    w = weights(rows, cols, seed, ties)
    mask = prune.constant_fan_in(w, k)
    assert ConstantFanIn(k).check(mask) == []
    assert (mask.sum(axis=1) == k).all()


@PROPS
@given(shapes=st.lists(st.tuples(st.integers(1, 20), st.integers(1, 20)), min_size=1, max_size=4),
       d=densities, seed=seeds)
def test_global_magnitude_is_one_threshold_over_all_layers(shapes, d, seed):
    rng = np.random.default_rng(seed)
    ws = {f"l{i}": rng.standard_normal(s) for i, s in enumerate(shapes)}
    masks = prune.global_magnitude(ws, d)
    total = sum(w.size for w in ws.values())
    allmask = np.concatenate([masks[k].ravel() for k in ws])
    allw = np.concatenate([np.abs(ws[k]).ravel() for k in ws])
    assert Unstructured(d).check(allmask) == []
    assert allmask.sum() == min(total, max(1, round(d * total)))
    assert (~allmask).sum() == 0 or allw[allmask].min() >= allw[~allmask].max()


# --- detection: what was applied is what is found ---------------------------------------------
@pytest.mark.parametrize("pattern", [NM(2, 4), NM(1, 4), NM(2, 8), NM(3, 8), NM(1, 2), Unstructured(0.1),
                                     Unstructured(0.5), Block(4, 4, 0.25), Block(8, 2, 0.5), Group(4, 0.5),
                                     Channel(0.5, 0), Channel(0.25, 1), ConstantFanIn(12)])
def test_detect_finds_the_applied_pattern(pattern):
    w = weights(128, 192, 7, False)
    mask = prune.mask_for(w, pattern)
    found = detect(mask)
    assert type(found) is type(pattern)
    assert found.to_dict() | {"stats": None} == pattern.bind(128, 192).to_dict() | {"stats": None} \
        if not isinstance(pattern, Unstructured) else abs(found.density - pattern.density) < 1 / mask.size
    # stats: per-row counts and 64x64 tiles (2 x 3 of them) add up to the nonzeros
    assert found.stats.row_nnz.sum() == mask.sum() == found.stats.tile_nnz.sum()
    assert len(found.stats.row_nnz) == 128 and len(found.stats.tile_nnz) == 2 * 3


def test_detect_dense_and_all_zero():
    assert detect(np.ones((8, 8), bool)) == Dense()
    z = detect(np.zeros((8, 8), bool))
    assert z.density == pytest.approx(1 / 64)  # smallest representable density


def test_nm_not_reported_for_a_random_mask_of_the_same_density():
    mask = np.random.default_rng(0).random((64, 256)) < 0.5
    assert detect(mask).pattern == "unstructured"


def test_nm_with_some_short_groups_is_still_nm():
    # 2:4 mask where 2% of groups lost one more weight (e.g. an exact zero in the weights)
    mask = prune.nm(weights(64, 256, 1, False), 2, 4)
    groups = mask.reshape(64, 64, 4)
    rows, gs = np.nonzero(groups.sum(axis=2) == 2)
    for r, g in list(zip(rows, gs, strict=True))[:80]:  # 80 of 4096 groups ≈ 2 %
        groups[r, g, np.argmax(groups[r, g])] = False
    assert detect(groups.reshape(64, 256)) == NM(2, 4)


def test_conv_weight_gemm_view_and_nm_along_k():
    # conv weight [C_out=8, C_in/g=3, 3, 3] → W[8, 27]: K runs over (c, kh, kw) in that order
    w = np.arange(8 * 3 * 3 * 3, dtype=float).reshape(8, 3, 3, 3)
    assert weight_matrix(w).shape == (8, 27)
    assert weight_matrix(w)[1, 0] == w[1, 0, 0, 0] and weight_matrix(w)[1, 10] == w[1, 1, 0, 1]
    w4 = np.random.default_rng(0).standard_normal((16, 8, 3, 3))  # K = 72
    mask = prune.nm(w4, 2, 4)
    assert mask.shape == w4.shape
    assert NM(2, 4).check(weight_matrix(mask)) == []
    sp, meta = analyse(mask, rows_per_group=16)
    assert sp == NM(2, 4) and meta["weight_density"] == 0.5 and meta["weight_transposable"] is False
    assert len(meta["weight_col_nnz"]) == 72


def test_analyse_marks_transposable_masks():
    w = weights(64, 64, 3, False)
    sp, meta = analyse(prune.transposable_nm(w, 2, 4))
    assert sp == NM(2, 4) and meta["weight_transposable"] is True
    # per-column nonzeros of a transposable 2:4 mask: exactly half of each column
    assert set(meta["weight_col_nnz"]) == {32}


def test_pruners_reject_shapes_that_cannot_hold_the_pattern():
    with pytest.raises(ValueError, match="multiple of m=4"):
        prune.nm(np.ones((4, 6)), 2, 4)
    with pytest.raises(ValueError, match="block"):
        prune.block(np.ones((6, 6)), 4, 4, 0.5)
    with pytest.raises(ValueError, match="density"):
        prune.magnitude(np.ones((4, 4)), 0.0)
    assert prune.fits(NM(2, 4), (64, 3, 7, 7)) is not None  # K = 147
    assert prune.fits(NM(2, 4), (64, 64, 3, 3)) is None
