"""Op / Trace: the GEMM view, FLOP and byte counts from first principles, errors, serialisation."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from simsparse.core.ops import AttnGeom, ConvGeom, Op, Trace
from simsparse.core.sparsity import NM, Unstructured


def test_gemm_flops_and_bytes():
    op = Op.gemm(8, 16, 32, dtype="fp16")
    assert op.flops == 2 * 8 * 16 * 32
    assert op.bytes_dense == {"x": 8 * 32 * 2, "w": 16 * 32 * 2, "y": 8 * 16 * 2}


def test_sparse_weight_useful_flops():
    op = Op.gemm(4, 8, 16, weight="2:4")
    assert op.useful_flops == 2 * 4 * 8 * 16 / 2


def test_conv_im2col_rule():
    # ResNet-50 conv2 3x3: 64→64 at 56x56, pad 1, batch 2
    g = ConvGeom(n_img=2, c_in=64, h=56, w=56, c_out=64, kh=3, kw=3, stride=1, pad=1)
    op = Op.conv2d(g)
    assert (op.m, op.n, op.k, op.batch) == (2 * 56 * 56, 64, 64 * 9, 1)
    # depthwise 3x3 stride 2 on 32 channels at 112x112 → 56x56 output
    dw = ConvGeom(1, 32, 112, 112, 32, 3, 3, stride=2, pad=1, groups=32)
    op = Op.conv2d(dw)
    assert (op.m, op.n, op.k, op.batch) == (56 * 56, 1, 9, 32)
    assert op.flops == 2 * 56 * 56 * 9 * 32


def test_attention_flops_causal():
    a = AttnGeom(batch=1, heads=2, q_len=4, kv_len=4, head_dim=8, causal=True)
    op = Op.attention(a)
    assert op.flops == 4 * 2 * 4 * 4 * 8
    assert a.score_fraction == pytest.approx((1 + 2 + 3 + 4) / 16)


@settings(max_examples=300, deadline=None)
@given(q=st.integers(1, 300), kv=st.integers(1, 300))
def test_causal_score_fraction_counts_the_keys_each_query_sees(q, kv):
    # the queries are the last q of the kv positions: query i sees clip(kv - q + i + 1, 0, kv) keys
    seen = sum(min(kv, max(0, kv - q + i + 1)) for i in range(q))
    a = AttnGeom(batch=1, heads=1, q_len=q, kv_len=kv, head_dim=8, causal=True)
    assert a.score_fraction == pytest.approx(seen / (q * kv))
    assert 0 <= a.score_fraction <= 1


def test_causal_score_fraction_with_fewer_keys_than_queries():
    # 8 queries, 4 keys: the first 4 queries see none, then 1, 2, 3, 4 keys: 10 of 32
    assert AttnGeom(1, 1, 8, 4, 64, causal=True).score_fraction == pytest.approx(10 / 32)


@pytest.mark.parametrize("kw,field", [
    ({"m": 0, "n": 4, "k": 4}, "op.m"), ({"m": 4, "n": -1, "k": 4}, "op.n"),
    ({"m": 4, "n": 4, "k": 4, "dtype": "fp64"}, "op.dtype"),
    ({"m": 4, "n": 4, "k": 6, "weight": "2:4"}, "k"),
])
def test_op_errors_name_the_field(kw, field):
    with pytest.raises(ValueError, match=field):
        Op.gemm(**kw)


def test_trace_json_and_parquet_round_trip(tmp_path):
    ops = (Op.gemm(4, 8, 16, weight=NM(2, 4), name="a"),
           Op.gemm(1, 8, 16, weight=Unstructured(0.1), activation={"density": 0.5, "source": "relu"}),
           Op.conv2d(ConvGeom(1, 8, 8, 8, 16, 1, 1)),
           Op.attention(AttnGeom(1, 2, 4, 16, 8, kv_heads=1)), Op.eltwise(100, flops_per_elem=2))
    t = Trace("t", ops, {"model": "x", "seed": 3})
    for name in ("t.json", "t.parquet"):
        back = Trace.load(t.save(tmp_path / name))
        assert back.ops == t.ops and back.provenance == t.provenance


def test_cached_hash_is_not_pickled():
    import pickle

    op = Op.gemm(4, 8, 16, weight="2:4")
    hash(op)
    back = pickle.loads(pickle.dumps(op))
    assert "_hash" not in back.__dict__ and back == op and hash(back) == hash(op)


@pytest.mark.parametrize("d,needle", [
    ({"kind": "conv2d", "m": 4, "n": 4, "k": 4}, "op.conv: got None"),
    ({"kind": "attention"}, "op.attention: got None"),
    ({"kind": "attention", "attention": {"batch": 1, "heads": 2}}, "missing: q_len, kv_len, head_dim"),
    ({"kind": "conv2d", "conv": {"n_img": 1, "c_in": 3, "h": 8, "w": 8, "c_out": 4, "kh": 3, "kw": 3, "strid": 2}},
     "unknown: strid"),
])
def test_from_dict_names_the_missing_geometry(d, needle):
    with pytest.raises(ValueError, match=needle):
        Op.from_dict(d)


def test_numpy_integers_are_integers():
    np = pytest.importorskip("numpy")
    op = Op.gemm(np.int64(64), np.int32(32), 16)
    assert (op.m, op.n) == (64, 32) and type(op.m) is int
    with pytest.raises(ValueError, match="op.m"):
        Op.gemm(np.float64(1.5), 4, 4)
