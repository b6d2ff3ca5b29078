"""Dense KxK convolutions on the CPU: the numpy im2col + BLAS kernel, the column copy's cost term, its
measurement rows and its staged fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hwmodels
from hwmodels import cpu, residual
from simsparse import calibrate_cpu, measure_cpu
from simsparse.core.mapping import Mapping
from simsparse.core.ops import ConvGeom, Op
from simsparse.kernels.cpu import conv2d_im2col, conv2d_reference, im2col

GEMM = Mapping(kernel="cpu_dense_gemm", params={"threads": 1})


@settings(max_examples=40, deadline=None)
@given(c=st.integers(1, 3), n=st.integers(1, 4), h=st.integers(1, 8), wd=st.integers(1, 8),
       k=st.sampled_from([1, 2, 3, 5]), stride=st.integers(1, 3), pad=st.integers(0, 2), seed=st.integers(0, 2**16))
def test_kernel_and_reference_match_the_definition(direct_conv, c, n, h, wd, k, stride, pad, seed):
    if h + 2 * pad < k or wd + 2 * pad < k:
        with pytest.raises(ValueError, match="larger than the padded input"):
            im2col(np.ones((c, h, wd), np.float32), k, k, stride, pad)
        return
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c, h, wd), dtype=np.float32)
    w = rng.standard_normal((n, c, k, k), dtype=np.float32)
    want = direct_conv(w, x, stride, pad)
    np.testing.assert_allclose(conv2d_reference(w, x, stride, pad), want, rtol=1e-9, atol=1e-9)
    got = conv2d_im2col(w, x, stride, pad)
    np.testing.assert_allclose(got.reshape(want.shape), want, rtol=1e-4, atol=1e-4)


def test_columns_by_hand():
    # 1 channel, 3x3 image 0..8, 2x2 kernel, stride 1, no pad: 4 rows (taps), 4 columns (output pixels)
    x = np.arange(9, dtype=np.float32).reshape(1, 3, 3)
    cols = im2col(x, 2, 2)
    assert cols.tolist() == [[0, 1, 3, 4], [1, 2, 4, 5], [3, 4, 6, 7], [4, 5, 7, 8]]


def test_bad_input_names_the_argument():
    with pytest.raises(ValueError, match="x_chw"):
        im2col(np.ones((3, 3), np.float32), 1, 1)
    with pytest.raises(ValueError, match="stride"):
        im2col(np.ones((1, 3, 3), np.float32), 1, 1, stride=0)
    with pytest.raises(ValueError, match="same C"):
        conv2d_im2col(np.ones((2, 3, 3, 3), np.float32), np.ones((2, 5, 5), np.float32))


def test_copy_counts_by_hand():
    # ResNet's 3x3 on 56x56 x 64 channels, pad 1: padded image 64 * 58 * 58; 64 * 9 * 56 runs of 56
    g = ConvGeom(1, 64, 56, 56, 64, 3, 3, 1, 1)
    assert cpu.im2col_counts(g) == (64 * 9 * 56, 64 * 58 * 58, 64 * 9 * 56 * 56)
    # MobileNet's stem, 3x3 s2 on 224 x 3, pad 1: 112 x 112 outputs; 3 * 226 * 226 padded
    g = ConvGeom(1, 3, 224, 224, 32, 3, 3, 2, 1)
    assert cpu.im2col_counts(g) == (3 * 9 * 112, 3 * 226 * 226, 3 * 9 * 112 * 112)
    # unpadded (ViT patchify, 16x16 s16): no padded copy, 3 * 256 * 14 runs of 14
    g = ConvGeom(1, 3, 224, 224, 768, 16, 16, 16, 0)
    assert cpu.im2col_counts(g) == (3 * 256 * 14, 0, 3 * 256 * 14 * 14)
    # a 1x1 stride-1 convolution is read in place
    assert cpu.im2col_counts(ConvGeom(1, 64, 56, 56, 64, 1, 1, 1, 0)) == (0, 0, 0)
    # two groups of 32 channels: counts per group
    assert cpu.im2col_counts(ConvGeom(1, 64, 8, 8, 64, 3, 3, 1, 1, groups=2)) == (32 * 9 * 8, 32 * 100, 32 * 9 * 64)


def _conv(c=64, h=56, n=64, k=3, stride=1, pad=1):
    return Op.conv2d(ConvGeom(1, c, h, h, n, k, k, stride, pad), dtype="fp32")


def _costs(spec, el, strided, run):
    return spec.replace(efficiency={**spec.efficiency, "gemm.c_im2col_el": el, "gemm.c_im2col_el_strided": strided,
                                    "gemm.c_im2col_run": run})


def test_copy_term_adds_exactly_its_cycles_where_the_spec_sets_it():
    host = hwmodels.load("host").replace(residual_file="")
    hz = host.clock_hz * host.efficiency.get("core_speed", 1.0)
    # the host sums core and DRAM time (mem_overlap 0): the copy adds its cycles at the core's clock share
    assert host.efficiency["mem_overlap"] == 0.0
    zero, one = _costs(host, 0.0, 0.0, 0.0), _costs(host, 1.0, 3.0, 10.0)
    # stride 1, small (0.4 MB of columns: the L3 keeps them all, nothing spills): padded + columns at 1, runs at 10
    op = _conv(c=16, h=28, n=16)
    runs, padded, cols = cpu.im2col_counts(op.conv)
    assert cpu.im2col_cost(op, one)[1] < 1e-3 * cpu.im2col_cost(op, one)[0] / hz
    t0, t1 = cpu.cost(op, GEMM, zero).t_s, cpu.cost(op, GEMM, one).t_s
    assert t1 - t0 == pytest.approx((padded + cols + 10 * runs) / hz + cpu.im2col_cost(op, one)[1], rel=1e-9)
    # stride 2: the column elements at the strided cost, the padded image at the contiguous one
    op2 = _conv(c=16, h=28, n=16, stride=2)
    runs, padded, cols = cpu.im2col_counts(op2.conv)
    assert cpu.im2col_cost(op2, one)[0] == pytest.approx(padded + 3 * cols + 10 * runs)
    # a 1x1 convolution has no copy
    pw = _conv(k=1, pad=0)
    assert cpu.cost(pw, GEMM, one).t_s == pytest.approx(cpu.cost(pw, GEMM, zero).t_s, rel=1e-12)


def test_columns_the_l3_cannot_keep_are_written_back_at_the_dram_rate():
    host = hwmodels.load("host").replace(residual_file="")
    one = _costs(host, 1.0, 1.0, 1.0)
    keep, hill = host.efficiency["l3_keep_bytes"], host.efficiency["l3_keep_hill"]
    op = _conv(c=32, h=160, n=32)  # YOLOv5s' C3 3x3: 29.5 MB of columns, 6.6 MB of image and padded copy
    _, padded, cols = cpu.im2col_counts(op.conv)
    footprint = 4 * (cols + 32 * 160 * 160 + padded)
    spill = 4 * cols * (1 - 1 / (1 + (footprint / keep) ** hill))
    assert cpu.im2col_cost(op, one)[1] == pytest.approx(spill / (host.dram_bw * host.efficiency["dram_eff"]))
    assert 0.3 < spill / (4 * cols) < 0.7  # about half of it, at this footprint


@pytest.mark.parametrize("name", ["snapdragon-835", "cortex-a76", "avx512-server"])
def test_libraries_without_a_column_copy_price_none(name):
    # XNNPACK (indirect GEMM) and oneDNN (direct convolution) convolve without copying columns
    spec = hwmodels.load(name)
    assert cpu.im2col_cost(_conv(), spec) == (0.0, 0.0)
    assert not any(k.startswith("gemm.c_im2col") for k in spec.efficiency)


def test_residual_is_not_applied_to_a_column_copy_convolution():
    host = hwmodels.load("host")
    assert host.residual_file
    analytic = host.replace(residual_file="")
    op = _conv()
    assert cpu.cost(op, GEMM, host).t_s == cpu.cost(op, GEMM, analytic).t_s
    assert "residual" not in cpu.cost(op, GEMM, host).breakdown_s
    pw = Op.conv2d(ConvGeom(1, 64, 56, 56, 64, 1, 1, 1, 0), dtype="fp32")  # trained on these: corrected
    assert "residual" in cpu.cost(pw, GEMM, host).breakdown_s
    assert residual._copies_columns(op) and not residual._copies_columns(pw)


def test_measured_rows_carry_geometry_split_and_copy_time(tmp_path):
    pts = [measure_cpu.Point("cpu_dense_gemm", 16, n, 18, {"pattern": "dense"}, "convs", conv=(2, 8, 3, 2, 1))
           for n in (4, 6)]
    rows = [measure_cpu.measure_point(p) for p in pts]
    for p, r in zip(pts, rows, strict=True):
        assert r["conv"] == {"c": 2, "h": 8, "w": 8, "kh": 3, "kw": 3, "stride": 2, "pad": 1, "c_out": p.n, "groups": 1}
        assert r["split"] == measure_cpu.conv_split_of(r["conv"]) and r["rel_err"] < 1e-5
        assert 0 < r["t_im2col_median_s"] and "error" not in r
    # the dense and the depthwise rule hash different keys
    dw = {"c": 2, "h": 8, "w": 8, "kh": 3, "kw": 3, "stride": 2, "pad": 1}
    assert measure_cpu.is_depthwise_conv(dw) and not measure_cpu.is_depthwise_conv(rows[0]["conv"])
    f = tmp_path / "kernels-20990101T000000Z.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [{"type": "header"}, *rows]) + "\n")
    loaded = measure_cpu.load_rows(f)
    assert sorted(r["n"] for r in loaded) == [4, 6]
    assert calibrate_cpu.main_rows(f) == []  # a stage of its own: the main fit never sees them
    assert {calibrate_cpu.stage_of(r) for r in loaded} == {"im2col"}
    op = calibrate_cpu.row_op(loaded[0])
    assert not op.conv.is_depthwise and (op.m, op.n, op.k, op.batch) == (16, loaded[0]["n"], 18, 1)
    assert calibrate_cpu.report_kernel(loaded[0]) == "cpu_dense_gemm_conv"


def test_copy_part_model_is_the_cost_terms_time():
    host = hwmodels.load("host")
    row = {"kernel": "cpu_dense_gemm", "m": 3136, "n": 64, "k": 576, "weight": {"pattern": "dense"},
           "mapping": {"kernel": "cpu_dense_gemm", "tile": [0, 64, 576], "threads": 1}, "campaign": "c",
           "conv": {"c": 64, "h": 56, "w": 56, "kh": 3, "kw": 3, "stride": 1, "pad": 1, "c_out": 64, "groups": 1}}
    runs, padded, cols = 64 * 9 * 56, 64 * 58 * 58, 64 * 9 * 56 * 56
    spec = _costs(host, 2.0, 5.0, 7.0)
    hz = host.clock_hz * host.efficiency.get("core_speed", 1.0)
    spill = cpu.im2col_cost(calibrate_cpu.row_op(row), spec)[1]
    assert calibrate_cpu.im2col_part_s([row], spec)[0] == pytest.approx((2 * (padded + cols) + 7 * runs) / hz + spill)


def test_host_spec_prices_the_copy_from_its_own_staged_fit():
    host = hwmodels.load("host")
    for key in calibrate_cpu.IM2COL_PARAMS:
        assert host.efficiency[key] > 0 and "t_im2col_median_s" in host.sources[f"efficiency.{key}"]
    # a gathered (strided) element costs more than a contiguous one
    assert host.efficiency["gemm.c_im2col_el_strided"] > host.efficiency["gemm.c_im2col_el"]


def test_im2col_values_survive_a_new_main_fit(tmp_path):
    spec = tmp_path / "host.yaml"
    spec.write_text("name: x\n" + calibrate_cpu.SPEC_MARKER + "\nefficiency:\n  numba.c_vec: {value: 3, source: \"a\"}\n")
    calibrate_cpu.write_stage({"stage": "im2col", "n_fit": 3, "files": ["k1"], "target": "t_im2col_median_s",
                               "params": {"gemm.c_im2col_el": 0.5, "gemm.c_im2col_run": 9.0}}, spec, "calib.json")
    calibrate_cpu.write_spec({"files": ["k0"], "n_fit": 5, "quality_rule": "none", "params": {"numba.c_vec": 4.0}},
                             spec, "main.json")
    text = spec.read_text()
    assert "numba.c_vec: {value: 4," in text and "gemm.c_im2col_el: {value: 0.5," in text
    assert "gemm.c_im2col_run: {value: 9," in text and "t_im2col_median_s" in text
