"""Chained traces: an op whose input the op before it just wrote reads it from cache (simulate(chained=True))."""

from __future__ import annotations

import math

import pytest

import hwmodels
from hwmodels import cpu
from simsparse.api import simulate
from simsparse.core.mapping import Mapping
from simsparse.core.ops import ConvGeom, Op, Trace


def _pw(c_in: int, c_out: int, h: int, weight="dense", dtype="fp32") -> Op:
    return Op.conv2d(ConvGeom(1, c_in, h, h, c_out, 1, 1), dtype=dtype, weight=weight)


def test_fresh_input_bytes_follow_the_chain_of_sizes():
    dw = Op.conv2d(ConvGeom(1, 32, 8, 8, 32, 3, 3, 1, 1, groups=32), dtype="fp32")
    ops = (_pw(16, 32, 8),                 # writes 32 x 8 x 8 fp32
           dw,                             # reads 32 x 8 x 8: chained
           _pw(32, 64, 8),                 # reads the depthwise output (32 x 8 x 8): chained
           _pw(48, 64, 8),                 # reads 48 x 8 x 8, not the 64 x 8 x 8 written before it
           Op.eltwise(64 * 64, dtype="fp32"),   # reads 4096 elements = the 64 x 8 x 8 written before it
           Op.eltwise(64 * 64, dtype="fp16"))   # same size, other dtype: not the same tensor
    fresh = Trace("t", ops).fresh_input_bytes()
    assert fresh == (0.0, 32 * 64 * 4, 32 * 64 * 4, 0.0, 64 * 64 * 4, 0.0)


def _cost(op, spec, fresh=0.0, kernel="cpu_csr", mb=None):
    params = {"threads": 1, **({"input_fresh_bytes": fresh} if fresh else {})}
    mb = (mb or op.m) if kernel != "cpu_dense_gemm" else 0
    return cpu.cost(op, Mapping(kernel, tile=(mb, op.n, op.k), params=params), spec)


@pytest.mark.parametrize("kernel", ["cpu_csr", "cpu_dense_gemm"])
def test_an_input_in_l2_leaves_dram_by_exactly_its_bytes(kernel):
    spec = hwmodels.load("host").replace(threads=1, residual_file="")
    d = 0.1
    op = _pw(256, 64, 14, weight="dense" if kernel == "cpu_dense_gemm" else f"unstructured@{d}")
    x = 196 * 256 * 4  # 200 kB: within half the 1 MiB L2
    # the X rows a stored weight touches: a column of W is empty with probability (1 - d)^N
    touched = 1.0 if kernel == "cpu_dense_gemm" else 1 - (1 - d) ** 64
    cold, warm = _cost(op, spec, kernel=kernel), _cost(op, spec, fresh=x, kernel=kernel)
    assert cold.bytes_by_level["dram"] - warm.bytes_by_level["dram"] == pytest.approx(x * touched, rel=1e-9)
    assert "l3" not in warm.bytes_by_level
    assert warm.t_s < cold.t_s


def test_an_input_past_the_l2_share_is_read_from_l3_and_one_past_every_cache_from_dram():
    spec = hwmodels.load("host").replace(threads=1, residual_file="")
    op = _pw(64, 64, 112, weight="unstructured@0.5")
    x = 12544 * 64 * 4  # 3.2 MB: over half the L2, under half the 32 MiB L3
    warm = _cost(op, spec, fresh=x, mb=1024)  # the reused X panel (64 x 1024 fp32, 256 kB) sits in L2
    touched = 1 - 0.5 ** 64
    assert warm.bytes_by_level["l3"] == pytest.approx(x * touched, rel=1e-9)
    # the Snapdragon 835 has no L3: a 3.2 MB input over half its 2 MB L2 comes back from DRAM, as a cold one
    sd = hwmodels.load("snapdragon-835").replace(threads=1)
    c_cold, c_warm = _cost(op, sd, kernel="xnn_spmm"), _cost(op, sd, fresh=x, kernel="xnn_spmm")
    assert c_warm.t_s == c_cold.t_s and "l3" not in c_warm.bytes_by_level


def test_simulate_chains_only_when_asked_and_only_cpu_reads_it():
    ops = (_pw(16, 32, 28), _pw(32, 32, 28, weight="unstructured@0.1"))
    host = hwmodels.load("host").replace(threads=1)
    cold = simulate(Trace("t", ops), host, mapper="measured")
    warm = simulate(Trace("t", ops), host, mapper="measured", chained=True)
    assert "input_fresh_bytes" not in cold.results[1].mapping.params
    assert warm.results[1].mapping.params["input_fresh_bytes"] == 32 * 28 * 28 * 4
    assert "input_fresh_bytes" not in warm.results[0].mapping.params
    assert warm.results[1].cost.t_s < cold.results[1].cost.t_s
    assert warm.results[0].cost.t_s == cold.results[0].cost.t_s
    gpu = [simulate(Trace("t", ops), "h100-sxm", chained=c).total_s for c in (False, True)]
    assert math.isclose(*gpu)
