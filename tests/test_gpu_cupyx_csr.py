"""CuPy's CSR SpMM (cupyx csr_matrix @ F-order x): segment counts, launches and the memset of y,
worked out by hand from what the call does (cupy/cusparse.py spmm: cupy.zeros for y, then
cusparseSpMM, csrmm_alg1 with 16 columns of x per CTA)."""

import pytest

from hwmodels import gpu
from hwmodels.spec import parse_spec
from simsparse.core.ops import Op
from simsparse.core.sparsity import Unstructured

SPEC = {
    "name": "tiny", "hw_class": "gpu", "display_name": "tiny", "arch": "sm_90",
    "sm_count": {"value": 4, "source": "test"}, "clock_hz": {"value": 1.0e9, "source": "test"},
    "tc_flops_per_clk_per_sm": {"fp16": {"value": 1024, "source": "test"}},
    "cuda_fp32_flops_per_clk_per_sm": {"value": 128, "source": "test"},
    "hbm_bw_gbps": {"value": 100, "source": "test"}, "hbm_bytes": {"value": 1.0e9, "source": "test"},
    "l2_bytes": {"value": 1.0e6, "source": "test"}, "smem_bytes_per_sm": {"value": 233472, "source": "test"},
    "tdp_w": {"value": 100, "source": "test"},
    "efficiency": {"hbm_eff": {"value": 1.0, "source": "test"}, "launch_s": {"value": 2e-6, "source": "test"},
                   "mem_latency_s": {"value": 1e-6, "source": "test"}, "l2_dirty_frac": {"value": 0.0, "source": "test"},
                   "cusparse_csr.fixed_s_cupyx": {"value": 5e-6, "source": "test"}},
}


@pytest.fixture(scope="module")
def tiny():
    return parse_spec(SPEC, "tiny")


def _op(m, n, k, d):
    return Op.gemm(m, n, k, dtype="fp32", weight=Unstructured(d))


def test_rows_on_one_sm_share_the_segments_of_a_slice_that_fits_l1(tiny):
    # N = 8 rows on 4 SMs: 2 rows per SM; K = 64 fp32 = 4 segments of 64 B per column, each holding
    # 16 values; d = 1/2. A row touches a segment unless all 16 of its values are zero:
    # 8 rows x 2 columns x 4 segments x (1 - 2^-16). The 16-column slice is 64 x 16 x 4 B = 4 KiB,
    # inside the SM's 228 KiB, so each SM fetches a segment once if either of its 2 rows touches it:
    # 4 SMs x 2 columns x 4 segments x (1 - 2^-32).
    touched, fetched = gpu.colmajor_segments(_op(2, 8, 64, 0.5), tiny)
    assert touched == pytest.approx(64 * (1 - 2.0 ** -16))
    assert fetched == pytest.approx(32 * (1 - 2.0 ** -32))


def test_a_slice_larger_than_l1_is_fetched_row_by_row(tiny):
    # K = 4096: the slice is 4096 x 16 x 4 B = 256 KiB > 228 KiB, so no segment survives to the next
    # row: every touched segment comes from L2
    touched, fetched = gpu.colmajor_segments(_op(2, 8, 4096, 0.5), tiny)
    assert touched == pytest.approx(8 * 2 * 256 * (1 - 2.0 ** -16))
    assert fetched == touched


def test_fewer_rows_than_sms_share_nothing(tiny):
    # N = 3 rows on 4 SMs: one row per busy SM, so fetched = touched
    touched, fetched = gpu.colmajor_segments(_op(4, 3, 64, 0.25), tiny)
    assert fetched == pytest.approx(touched)


def test_cupy_call_launches_a_memset_of_y_and_the_spmm(tiny):
    # two launches (cudaMemsetAsync of y, csrmm_alg1) at 2 us, the call's 5 us, and the memset
    # writing y = 1000 x 10 fp32 = 40,000 B at 100 GB/s = 0.4 us
    t = gpu.stream_time(_op(10, 1000, 512, 0.1), "cusparse_csr", tiny, "cupyx_csr_matmul")
    assert t["launch_s"] == pytest.approx(2 * 2e-6 + 5e-6 + 40_000 / 100e9)


def test_one_column_is_a_csrmm_not_an_spmv(tiny):
    # x of one column is still a 2-D F-order array: CuPy calls cusparseSpMM, whose work is per column
    # of x (segments touched), so two columns cost twice one (an SpMV would stream W once for M = 1)
    one, two = (gpu.stream_time(_op(m, 1000, 512, 0.1), "cusparse_csr", tiny, "cupyx_csr_matmul")["compute_s"]
                for m in (1, 2))
    assert two == pytest.approx(2 * one)
    assert one > 0
