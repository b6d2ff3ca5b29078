"""Sparsity patterns: generators obey their own validators, validators catch what breaks the rule."""

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simsparse.core.sparsity import (
    NM,
    Activation,
    Block,
    Channel,
    ConstantFanIn,
    Dense,
    Group,
    SparsityStats,
    Unstructured,
    parse_pattern,
)


def test_nm_check_names_the_bad_group():
    mask = np.array([[1, 1, 0, 0, 1, 1, 1, 0]], dtype=bool)  # second group has 3 of 4
    problems = NM(2, 4).check(mask)
    assert len(problems) == 1
    assert "row 0, group 1" in problems[0]
    assert NM(2, 4).check(mask[:, :4]) == []


def test_nm_rejects_n_greater_than_m():
    with pytest.raises(ValueError, match="n:m"):
        NM(5, 4)


@pytest.mark.parametrize("n,m", [(2, 4), (1, 4), (2, 8), (4, 8), (1, 2), (3, 7)])
def test_nm_mask_has_exactly_n_per_group(n, m):
    mask = NM(n, m).mask((16, 4 * m), seed=1)
    groups = mask.reshape(16, 4, m).sum(axis=2)
    assert (groups == n).all()
    assert NM(n, m).check(mask) == []


def test_block_check_finds_partial_block():
    mask = Block(2, 2, 0.5).mask((4, 4), seed=0)
    assert Block(2, 2, 0.5).check(mask) == []
    mask[0, 0] = not mask[0, 0]
    mask[0, 1] = mask[0, 0]
    mask[1, 0] = not mask[1, 1]
    assert any("block (0, 0)" in p for p in Block(2, 2, 0.5).check(mask))


def test_block_mask_density_is_exact_in_blocks():
    mask = Block(4, 4, 0.25).mask((16, 16), seed=3)  # 16 blocks → 4 kept → 64 of 256 elements
    assert mask.sum() == 64


def test_channel_and_group_and_fanin_rules():
    ch = Channel(0.5, axis=0)
    m = ch.mask((8, 6), seed=0)
    assert m.sum() == 4 * 6 and ch.check(m) == []
    m[0, 0] = not m[0, 0]
    assert ch.check(m)
    g = Group(4, 0.5)
    gm = g.mask((4, 16), seed=0)
    assert g.check(gm) == []
    cf = ConstantFanIn(3).bind(5, 10)
    fm = cf.mask((5, 10), seed=0)
    assert (fm.sum(axis=1) == 3).all() and cf.check(fm) == []
    assert cf.density == pytest.approx(0.3)
    fm[0, :] = True
    assert cf.check(fm) == ["row 0: 10 nonzeros > k=3"]


def test_densities_are_validated():
    for bad in (0, -0.1, 1.5, float("nan"), "x"):
        with pytest.raises(ValueError, match="density"):
            Unstructured(bad)


def test_activation_column_density_union():
    a = Activation(0.5, "relu")
    assert a.column_density(1) == pytest.approx(0.5)
    assert a.column_density(2) == pytest.approx(0.75)  # 1 - 0.5^2


def test_stats_from_mask():
    mask = np.zeros((4, 4), dtype=bool)
    mask[0] = True  # row 0 full, others empty
    s = SparsityStats.from_mask(mask, tile_shape=(2, 2))
    assert list(s.row_nnz) == [4, 0, 0, 0]
    assert sorted(s.tile_nnz.tolist()) == [0, 0, 2, 2]
    assert s.row_imbalance() == pytest.approx(4.0)  # max 4 / mean 1


@pytest.mark.parametrize("text,expected", [
    ("dense", Dense()), ("2:4", NM(2, 4)), ("unstructured@0.1", Unstructured(0.1)),
    ("block16x16@0.2", Block(16, 16, 0.2)), ("group8@0.25", Group(8, 0.25)),
    ({"pattern": "block", "block": [4, 4], "density": 0.5}, Block(4, 4, 0.5)),
])
def test_parse_pattern_forms(text, expected):
    assert parse_pattern(text) == expected


@pytest.mark.parametrize("bad,field", [
    ("5:4", "n:m"), ({"pattern": "unstructured"}, "density"), ("foo", "pattern"),
    ({"pattern": "block", "block": [4], "density": 0.5}, "block"), ("2:x", "pattern"),
])
def test_parse_pattern_errors_name_the_field(bad, field):
    with pytest.raises(ValueError, match=field):
        parse_pattern(bad, "weight")


@pytest.mark.parametrize("field", ["weight", "op.weight", "sparsity.weight[2]"])
def test_weight_field_refuses_activation_text(field):
    # 'activation@0.4' is the zeros of the input x, not of W: in a weight slot it would be a
    # weight pattern no kernel reads as input sparsity, so it is refused, naming the field
    with pytest.raises(ValueError, match=rf"^{re.escape(field)}: got 'activation@0.4'.*activation operand"):
        parse_pattern("activation@0.4", field)
    assert parse_pattern("activation@0.4", "activation") == Activation(0.4)
    assert parse_pattern("activation@0.4") == Activation(0.4)  # the generic field is not a slot


def test_op_weight_refuses_activation_text_but_keeps_stored_activation_operands():
    from simsparse.core.ops import Op

    with pytest.raises(ValueError, match="weight: got 'activation@0.4'"):
        Op.gemm(8, 16, 32, weight="activation@0.4")
    assert Op.gemm(8, 16, 32, activation="activation@0.4").activation == Activation(0.4)
    # a backward-weight GEMM (dW = dYᵀ·X) keeps the saved input Xᵀ in its weight slot; its stored
    # (dict) form still loads
    bw = Op.gemm(16, 32, 8, weight=Activation(0.5, "relu"), weight_is_param=False, phase="bwd_weight")
    assert Op.from_dict(bw.to_dict()) == bw


def test_round_trip_dict():
    for p in (Dense(), NM(2, 8), Unstructured(0.3), Block(2, 4, 0.5), Group(4, 0.5), Channel(0.5, 1),
              ConstantFanIn(4), Activation(0.4, "topk")):
        assert parse_pattern(p.to_dict()) == p


shapes = st.tuples(st.integers(1, 12), st.integers(1, 6))


@settings(max_examples=60, deadline=None)
@given(shape=shapes, n=st.integers(1, 8), m=st.integers(1, 8), seed=st.integers(0, 2**16))
def test_nm_generator_satisfies_validator(shape, n, m, seed):
    if n > m:
        return
    rows, groups = shape
    mask = NM(n, m).mask((rows, groups * m), seed)
    assert NM(n, m).check(mask) == []
    assert mask.sum() == rows * groups * n


@settings(max_examples=60, deadline=None)
@given(bh=st.integers(1, 4), bw=st.integers(1, 4), nb=st.tuples(st.integers(1, 5), st.integers(1, 5)),
       density=st.floats(0.05, 1.0), seed=st.integers(0, 2**16))
def test_block_generator_satisfies_validator(bh, bw, nb, density, seed):
    pat = Block(bh, bw, density)
    mask = pat.mask((nb[0] * bh, nb[1] * bw), seed)
    assert pat.check(mask) == []


@settings(max_examples=60, deadline=None)
@given(rows=st.integers(1, 10), groups=st.integers(1, 6), seed=st.integers(0, 2**16))
def test_nm_validator_catches_any_overfull_group(rows, groups, seed):
    rng = np.random.default_rng(seed)
    mask = NM(2, 4).mask((rows, groups * 4), seed)
    r, g = rng.integers(rows), rng.integers(groups)
    mask[r, g * 4: g * 4 + 3] = True  # three nonzeros in one group of four
    assert any(f"row {r}, group {g}" in p for p in NM(2, 4).check(mask))


def test_with_stats_works_for_every_pattern():
    stats = SparsityStats.from_mask(np.ones((4, 8), dtype=bool), tile_shape=(2, 2))
    for p in (Dense(), NM(2, 4), Unstructured(0.3), Block(2, 4, 0.5), Group(4, 0.5), Channel(0.5, 1),
              ConstantFanIn(4), Activation(0.4, "topk")):
        q = p.with_stats(stats)
        assert q == p and q.stats is stats and p.stats is None
        assert parse_pattern(q.to_dict()).stats.row_nnz.tolist() == [8, 8, 8, 8]
