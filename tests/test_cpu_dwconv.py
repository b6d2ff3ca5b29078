"""The numba depthwise convolution (CHW), its cost model, its measurement rows and its staged fit."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hwmodels
import mappers
from hwmodels import cpu
from simsparse import calibrate_cpu, measure_cpu
from simsparse.core.mapping import Mapping
from simsparse.core.ops import ConvGeom, Op
from simsparse.kernels.cpu import depthwise_conv2d, depthwise_reference


@settings(max_examples=60, deadline=None)
@given(c=st.integers(1, 3), h=st.integers(1, 9), wd=st.integers(1, 9), k=st.sampled_from([1, 2, 3, 4, 5, 7]),
       stride=st.integers(1, 3), pad=st.integers(0, 3), seed=st.integers(0, 2**16))
def test_kernel_matches_the_definition(direct_depthwise, c, h, wd, k, stride, pad, seed):
    if h + 2 * pad < k or wd + 2 * pad < k:
        return  # no output: the wrapper rejects it (tested below)
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((c, h, wd), dtype=np.float32)
    w = rng.standard_normal((c, k, k), dtype=np.float32)
    want = direct_depthwise(w, x, stride, pad)
    got = depthwise_conv2d(w, x, stride, pad)
    assert got.shape == want.shape
    np.testing.assert_allclose(got, want, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(depthwise_reference(w, x, stride, pad), want, rtol=1e-9, atol=1e-9)


def test_kernel_matches_torch_on_network_shapes():
    torch = pytest.importorskip("torch")
    rng = np.random.default_rng(0)
    for c, h, k, stride in [(32, 112, 3, 1), (96, 112, 3, 2), (144, 56, 5, 2), (960, 7, 3, 1), (1152, 7, 5, 1)]:
        x = rng.standard_normal((c, h, h), dtype=np.float32)
        w = rng.standard_normal((c, k, k), dtype=np.float32)
        want = torch.nn.functional.conv2d(torch.from_numpy(x)[None], torch.from_numpy(w)[:, None], stride=stride,
                                          padding=k // 2, groups=c)[0].numpy()
        got = depthwise_conv2d(w, x, stride, k // 2)
        assert np.linalg.norm(got - want) / np.linalg.norm(want) < 1e-5


@pytest.mark.parametrize("args, match", [
    ((np.ones((2, 3, 3), np.float32), np.ones((3, 5, 5), np.float32)), "same C"),
    ((np.ones((2, 3, 3), np.float32), np.ones((2, 5, 5), np.float32), 0), "stride"),
    ((np.ones((2, 3, 3), np.float32), np.ones((2, 5, 5), np.float32), 1, -1), "pad"),
    ((np.ones((2, 7, 7), np.float32), np.ones((2, 5, 5), np.float32), 1, 0), "larger than the padded input"),
    ((np.ones((2, 3, 3), np.float64), np.ones((2, 5, 5), np.float32)), "one dtype"),
])
def test_bad_input_names_the_argument(args, match):
    with pytest.raises(ValueError, match=match):
        depthwise_conv2d(*args)


def test_loop_counts_by_hand():
    # 7x7, 3x3, stride 1, pad 1: 7 output rows; the first and the last have 2 tap rows inside, the others 3
    # (5 x 3 + 2 x 2 = 19); interior columns 1..5 (5); edge columns 0 and 6 have 2 taps inside each (4)
    assert cpu.dwconv_counts(7, 7, 3, 3, 1, 1) == (7, 7, 19, 5, 4)
    # 8x8, 3x3, stride 2, pad 1: output rows 0..3 read input rows {-1,0,1}, {1,2,3}, {3,4,5}, {5,6,7}: 2 + 3 + 3 + 3;
    # interior columns 1..3 (input columns 1..7), edge column 0 with 2 taps inside
    assert cpu.dwconv_counts(8, 8, 3, 3, 2, 1) == (4, 4, 11, 3, 2)
    # 5x5 kernel on a 7x7 map, pad 2: tap rows inside per output row 3, 4, 5, 5, 5, 4, 3 = 29; interior column 2..4
    assert cpu.dwconv_counts(7, 7, 5, 5, 1, 2) == (7, 7, 29, 3, 2 * (3 + 4))


def _dw(c, h, k=3, stride=1):
    return Op.conv2d(ConvGeom(1, c, h, h, c, k, k, stride, k // 2, groups=c), dtype="fp32")


def test_core_cycles_scale_with_channels_and_stride_two_costs_more_per_output():
    spec = hwmodels.load("host")
    mp = Mapping(kernel="cpu_dwconv", params={"threads": 1})
    core = [cpu.cost(_dw(c, 14), mp, spec).breakdown_s["core"] for c in (100, 200, 400)]
    assert core[1] == pytest.approx(2 * core[0]) and core[2] == pytest.approx(4 * core[0])
    # stride 2 has a quarter of the outputs but its scalar loop costs more per output element
    s1, s2 = (cpu.cost(_dw(256, 56, stride=s), mp, spec).breakdown_s["core"] for s in (1, 2))
    assert s2 > s1 / 4


def test_host_runs_depthwise_on_the_measured_kernel():
    spec = hwmodels.load("host").replace(threads=1)
    op = _dw(144, 56)
    assert "cpu_dwconv" in spec.measured_kernels
    mapping, cost = mappers.best(op, spec, measured_only=True)
    assert mapping.kernel == "cpu_dwconv" and cost.t_s > 0


def test_measured_rows_carry_their_geometry_and_split(tmp_path):
    pts = [measure_cpu.Point("cpu_dwconv", 16, 1, 9, {"pattern": "dense"}, "depthwise", conv=(c, 8, 3, 2, 1))
           for c in (4, 6)]  # same GEMM view (M, N, K), different channels
    rows = [measure_cpu.measure_point(p) for p in pts]
    for p, r in zip(pts, rows, strict=True):
        assert r["conv"] == {"c": p.conv[0], "h": 8, "w": 8, "kh": 3, "kw": 3, "stride": 2, "pad": 1}
        assert r["split"] == measure_cpu.conv_split_of(r["conv"]) and r["rel_err"] < 1e-5
        assert "error" not in r and r["batch"] == p.conv[0]
    f = tmp_path / "kernels-20990101T000000Z.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in [{"type": "header"}, *rows]) + "\n")
    loaded = measure_cpu.load_rows(f)
    assert sorted(r["conv"]["c"] for r in loaded) == [4, 6]  # not merged as one point
    assert calibrate_cpu.main_rows(f) == []  # the main fit never sees them
    op = calibrate_cpu.row_op(loaded[0])
    assert op.conv.is_depthwise and (op.m, op.n, op.k, op.batch) == (16, 1, 9, loaded[0]["conv"]["c"])


def test_staged_values_survive_a_new_main_fit(tmp_path):
    spec = tmp_path / "host.yaml"
    spec.write_text("name: x\n" + calibrate_cpu.SPEC_MARKER + "\nefficiency:\n  numba.c_vec: {value: 3, source: \"a\"}\n")
    calibrate_cpu.write_stage({"stage": "cpu_dwconv", "n_fit": 3, "files": ["k1"], "params": {"cpu_dwconv.c_tap": 20.0}},
                              spec, "calib.json")
    calibrate_cpu.write_stage({"stage": "cpu_dwconv", "n_fit": 3, "files": ["k1"], "params": {"cpu_dwconv.c_tap": 21.0}},
                              spec, "calib.json")  # a refit replaces its own line
    assert spec.read_text().count("cpu_dwconv.c_tap") == 1 and "value: 21," in spec.read_text()
    calibrate_cpu.write_spec({"files": ["k0"], "n_fit": 5, "quality_rule": "none", "params": {"numba.c_vec": 4.0}},
                             spec, "main.json")
    text = spec.read_text()
    assert "numba.c_vec: {value: 4," in text and "cpu_dwconv.c_tap: {value: 21," in text
