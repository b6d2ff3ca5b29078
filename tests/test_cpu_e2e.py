"""End to end: sparse MobileNet v1 / v2 / EfficientNet-B0 on the Snapdragon 835 spec.

Elsen et al. ("Fast Sparse ConvNets", CVPR 2020) report 1.3-2.4x over dense on Snapdragon 835
with 90 % unstructured 1x1 convs (dense depthwise and first layer). The spec's numbers are
public core / cache facts and the kernel cycle costs are instruction counts of the XNNPACK
micro-kernels (hwmodels/cpu.py) — nothing is fitted to that paper. The physical invariants
are asserted; the paper's band is a strict xfail: the instruction-count model is more
optimistic about the sparse kernel than the paper's measurements (see the issue report).
"""

from __future__ import annotations

import pytest

import hwmodels
from simsparse.calibrate_cpu import end_to_end, inference_trace, is_sparse_1x1

MODELS = ("mobilenet_v1", "mobilenet_v2", "efficientnet_b0")


@pytest.fixture(scope="module")
def results():
    return {m: end_to_end(m, "snapdragon-835", density=0.1, threads=1) for m in MODELS}


def test_spec_is_not_fitted_to_the_paper():
    spec = hwmodels.load("snapdragon-835")
    assert spec.efficiency == {}  # every cycle cost comes from the port counts


def test_only_1x1_convs_are_made_sparse():
    t = inference_trace("mobilenet_v1")
    sparse = [o for o in t.ops if is_sparse_1x1(o)]
    assert len(sparse) == 13  # the 13 pointwise convs; not the first conv, depthwise or classifier
    assert all(o.conv.kh == 1 and not o.conv.is_depthwise for o in sparse)


@pytest.mark.parametrize("model", MODELS)
def test_sparse_is_faster_but_bounded_by_the_flop_ratio(results, model):
    r = results[model]
    assert r["speedup"] > 1.3
    # the 1x1 convs cannot get faster than their 10x FLOP reduction, the rest not at all
    dense_rest = r["dense_s"] - r["dense_by_kind_s"]["1x1"]
    assert r["sparse_s"] >= dense_rest + r["dense_by_kind_s"]["1x1"] / 10
    assert r["sparse_by_kind_s"]["1x1"] < r["dense_by_kind_s"]["1x1"] / 2


def test_more_non_pointwise_work_means_less_speedup(results):
    # MobileNet v2 and EfficientNet-B0 spend a larger share in depthwise / SE / element-wise ops
    s = {m: results[m]["speedup"] for m in MODELS}
    assert s["mobilenet_v1"] > s["mobilenet_v2"] > s["efficientnet_b0"]


@pytest.mark.xfail(strict=True, reason="instruction-count model predicts 4.4x / 3.0x / 2.5x single-thread "
                                       "(3.5x / 2.2x / 1.7x on 4 cores): above the paper's 1.3-2.4x band")
@pytest.mark.parametrize("model", MODELS)
def test_paper_band(results, model):
    assert 1.3 <= results[model]["speedup"] <= 2.4
