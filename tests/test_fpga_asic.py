"""FPGA and ASIC specs run end to end on the first-order roofline models."""

import pytest

import simsparse
from hwmodels.spec import parse_spec
from simsparse.core.ops import Op

FPGA = {"name": "toy-fpga", "hw_class": "fpga", "display_name": "toy",
        "clock_hz": {"value": 2.0e8, "source": "test"}, "pe_rows": {"value": 32, "source": "test"},
        "pe_cols": {"value": 32, "source": "test"}, "onchip_bytes": {"value": 4.0e6, "source": "test"},
        "ddr_bw_gbps": {"value": 20, "source": "test"}, "nm_supported": ["2:4", "1:4"]}
ASIC = {"name": "toy-asic", "hw_class": "asic", "display_name": "toy",
        "clock_hz": {"value": 1.0e9, "source": "test"}, "pes": {"value": 1024, "source": "test"},
        "onchip_bytes": {"value": 8.0e6, "source": "test"}, "dram_bw_gbps": {"value": 100, "source": "test"},
        "max_sparse_speedup": {"value": 8, "source": "test"}}


def test_fpga_dense_time_is_the_hand_roofline():
    spec = parse_spec(FPGA)
    op = Op.gemm(1024, 1024, 1024, dtype="int8")
    res = simsparse.simulate(op, spec)
    # 2·1024³ FLOPs at 2·32·32 MAC/clk · 200 MHz = 409.6 GFLOP/s → 5.24 ms; bytes ≪ that at 20 GB/s
    assert res.total_s == pytest.approx(2 * 1024**3 / (2 * 32 * 32 * 2e8), rel=1e-9)


def test_fpga_nm_halves_compute_only_for_supported_patterns():
    spec = parse_spec(FPGA)
    dense = simsparse.simulate(Op.gemm(1024, 1024, 1024, dtype="int8"), spec).total_s
    nm = simsparse.simulate(Op.gemm(1024, 1024, 1024, dtype="int8", weight="2:4"), spec)
    assert nm.results[0].mapping.kernel == "fpga_nm"
    assert nm.total_s == pytest.approx(dense / 2, rel=1e-9)
    other = simsparse.simulate(Op.gemm(1024, 1024, 1024, dtype="int8", weight="2:8"), spec)
    assert other.results[0].mapping.kernel == "fpga_dense"


def test_asic_skips_zeros_up_to_its_limit():
    spec = parse_spec(ASIC)
    dense = simsparse.simulate(Op.gemm(2048, 2048, 2048, dtype="int8"), spec).total_s
    half = simsparse.simulate(Op.gemm(2048, 2048, 2048, dtype="int8", weight="unstructured@0.5"), spec).total_s
    tiny = simsparse.simulate(Op.gemm(2048, 2048, 2048, dtype="int8", weight="unstructured@0.01"), spec).total_s
    assert half == pytest.approx(dense / 2, rel=1e-6)
    assert tiny == pytest.approx(dense / 8, rel=1e-6)  # capped at max_sparse_speedup = 8
