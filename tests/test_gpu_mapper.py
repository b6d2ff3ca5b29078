"""GPU mapper: every candidate is legal, costs at least the roofline bound, and a denser operand
never costs less on the same mapping (hypothesis); `best` is the minimum over the candidates."""

import random

import pytest
from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

import hwmodels
import mappers
from hwmodels import gpu as model
from mappers import check_mapping
from mappers import gpu as gpu_mapper
from simsparse.core.mapping import Mapping
from simsparse.core.ops import AttnGeom, Op
from simsparse.core.sparsity import NM, Activation, Block, Dense, Unstructured

SPECS = ["h200", "h100-sxm", "a100-sxm4-80g", "v100", "t4"]

dims = st.sampled_from([1, 2, 7, 16, 48, 128, 333, 1024, 4096, 12288])
kdims = st.sampled_from([16, 64, 96, 576, 1024, 4096, 11008, 28672])


@st.composite
def ops(draw):
    m, n, k = draw(dims), draw(st.sampled_from([16, 64, 128, 768, 1024, 4096, 14336])), draw(kdims)
    dtype = draw(st.sampled_from(["fp16", "bf16", "fp8", "int8", "fp32"]))
    kind = draw(st.sampled_from(["dense", "2:4", "1:4", "unstructured", "block", "activation", "batch"]))
    d = draw(st.floats(0.01, 0.95))
    if kind == "2:4":
        return Op.gemm(m, n, k, dtype=dtype, weight=NM(2, 4))
    if kind == "1:4":
        return Op.gemm(m, n, k, dtype=dtype, weight=NM(1, 4))
    if kind == "unstructured":
        return Op.gemm(m, n, k, dtype=dtype, weight=Unstructured(d))
    if kind == "block":
        b = 32 if (n % 32 == 0 and k % 32 == 0 and draw(st.booleans())) else 16
        return Op.gemm(m, n, k, dtype=dtype, weight=Block(b, b, d))
    if kind == "activation":
        return Op.gemm(min(m, 16), n, k, dtype=dtype, activation=Activation(d))
    if kind == "batch":
        return Op.gemm(m, n, k, dtype=dtype, batch=draw(st.sampled_from([2, 8])))
    return Op.gemm(m, n, k, dtype=dtype)


def _legal(op, spec):
    return [k for k, why in mappers.legal_kernels(op, spec).items() if why is None]


def _roofline_bound(op, spec) -> float:
    """Time no kernel can beat: useful FLOPs at the machine's highest peak, and the output plus
    the activations plus the nonzero weight values moved once at datasheet bandwidth."""
    peaks = [spec.cuda_fp32_peak] + [spec.peak_flops(op.dtype, (2, 4)) for _ in [0] if spec.supports_dtype(op.dtype)]
    b = op.bytes_dense
    w = b["w"] * op.weight.density
    if isinstance(op.activation, Activation) and not op.activation.is_dense:
        w = min(w, b["w"] * op.activation.column_density(op.m))
    return max(op.useful_flops / max(peaks), (b["x"] + b["y"] + w) / spec.dram_bw)


def _denser(op):
    w, a = op.weight, op.activation
    if isinstance(w, Unstructured):
        return op.replace(weight=Unstructured(min(1.0, w.density * 1.7)))
    if isinstance(w, Block):
        return op.replace(weight=Block(w.bh, w.bw, min(1.0, w.density * 1.7)))
    if isinstance(w, NM) and w.n == 1:
        return op.replace(weight=NM(2, 4))
    if isinstance(a, Activation):
        return op.replace(activation=Activation(min(1.0, a.density * 1.7)))
    return None


@settings(max_examples=120, deadline=None, suppress_health_check=list(HealthCheck))
@given(op=ops(), hw=st.sampled_from(SPECS), seed=st.integers(0, 2**16))
def test_candidates_are_legal_bounded_and_monotone(op, hw, seed):
    spec = hwmodels.load(hw)
    names = _legal(op, spec)
    if not names:
        return
    cands = gpu_mapper.candidates(op, spec, names)
    assert cands, (op, hw)
    rng = random.Random(seed)
    sample = rng.sample(cands, min(25, len(cands)))
    bound = _roofline_bound(op, spec)
    denser = _denser(op)
    for mp in sample:
        assert check_mapping(op, mp, spec) == [], (op, hw, mp)
        c = hwmodels.cost(op, mp, spec)
        assert c.t_s >= bound * (1 - 1e-9), (op, hw, mp.describe(), c.t_s, bound)
        assert c.t_s > 0 and c.bytes_by_level["hbm"] > 0
        if denser is not None and model.KERNELS[mp.kernel].why_not(denser, spec) is None:
            assert hwmodels.cost(denser, mp, spec).t_s >= c.t_s * (1 - 1e-12), (op, mp.describe())


@settings(max_examples=40, deadline=None, suppress_health_check=list(HealthCheck))
@given(op=ops(), hw=st.sampled_from(SPECS))
def test_best_is_the_minimum_over_candidates(op, hw):
    spec = hwmodels.load(hw)
    names = _legal(op, spec)
    if not names:
        return
    mapping, cost = mappers.best(op, spec)
    assert check_mapping(op, mapping, spec) == []
    each = [hwmodels.cost(op, mp, spec).t_s for mp in gpu_mapper.candidates(op, spec, names)]
    assert cost.t_s == pytest.approx(min(each), rel=1e-9)


@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
@given(op=ops(), other=ops(), hw=st.sampled_from(SPECS))
def test_legality_memo_per_legality_key_is_exact(op, other, hw):
    """legal_kernels shares one answer between ops of equal `legality_key` (different shapes):
    the answer, reasons included, is what every kernel's rules say for the op itself."""
    spec = hwmodels.load(hw)
    mappers.legal_kernels(other, spec)
    try:
        reshaped = op.replace(m=other.m, n=other.n, k=other.k)
    except ValueError:  # op's pattern does not fit other's shape (e.g. 32x32 blocks on 16x16)
        assume(False)
    mappers.legal_kernels(reshaped, spec)
    assert mappers.legal_kernels(op, spec) == {name: k.why_not(op, spec) for name, k in model.KERNELS.items()}


def test_check_mapping_rejects_what_does_not_fit():
    spec = hwmodels.load("t4")
    op = Op.gemm(1024, 1024, 1024)
    too_big = Mapping("cublas", (256, 256, 64), params={"stages": 4})
    problems = check_mapping(op, too_big, spec)
    assert any("shared memory" in p for p in problems) and any("registers" in p for p in problems)
    sp = Op.gemm(64, 64, 64, weight=NM(2, 4))
    assert any("2:4 groups" in p for p in check_mapping(sp, Mapping("cusparselt", (64, 64, 6),
                                                                      weight_format="nm"), "h200"))
    blk = Op.gemm(64, 64, 64, weight=Block(32, 32, 0.5))
    assert any("splits 32x32 blocks" in p for p in check_mapping(blk, Mapping("bsr_tc", (64, 16, 16)), "h200"))
    assert any("split_k" in p for p in check_mapping(op, Mapping("cublas", (128, 128, 64), split_k=32), "h200"))


def test_tiles_cover_the_output_exactly_once():
    spec = hwmodels.load("h200")
    op = Op.gemm(333, 1000, 4100)
    for mp in gpu_mapper.candidates(op, spec, ["cublas"]):
        assert check_mapping(op, mp, spec) == []
    # a zero-sized tile or an impossible split is refused by the coverage check
    assert check_mapping(op, Mapping("cublas", (128, 128, 64), split_k=5000), spec)


def test_attention_and_grouped_candidates():
    spec = hwmodels.load("h200")
    att = Op.attention(AttnGeom(2, 16, 1024, 1024, 128, causal=True))
    assert all(check_mapping(att, mp, spec) == [] for mp in gpu_mapper.candidates(att, spec, ["flash_attention"]))
    moe = Op.gemm(32, 4096, 1024, batch=8, meta={"expert_tokens": [40, 0, 8, 100, 3, 0, 60, 45]})
    mp, c = mappers.best(moe, spec, kernel="grouped_gemm")
    assert check_mapping(moe, mp, spec) == [] and c.t_s > 0
    dense = Op.gemm(16, 4096, 4096, weight=Dense())
    assert mappers.best(dense, spec)[0].kernel == "cublas"
