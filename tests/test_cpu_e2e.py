"""End to end: sparse MobileNet v1 / v2 / EfficientNet-B0 on the Snapdragon 835 spec (one core).

Elsen et al. ("Fast Sparse ConvNets", CVPR 2020) report that on Snapdragon 835 their sparse networks
"outperform their dense equivalents by 1.3-2.4x" on the efficiency-accuracy curve: a sparse network
against a dense one of (about) the same accuracy, the sparse one wider. The band test below is that
comparison: each released sparse model (google-research fastconvnets README: width, sparsity, block
structure) against the most accurate dense TF-slim model at most 0.5 top-1 points more accurate
(simsparse.calibrate_cpu.equal_accuracy_pairs), both modelled single-threaded (inferred, not stated
with the released latencies: XNNPACK's dense MobileNet v1 takes 27 ms on the 4 big cores, less than
the 31 ms of the sparse one).

The spec's numbers are public core / cache facts; the kernel cycle costs are instruction counts of
the XNNPACK micro-kernels, priced at the 16-pixel micro-kernel (xnn.mr = 16) of the 2019-20 XNNPACK
the paper's generation ran (read from its src/init.c; today's is 32); the one efficiency set,
gemm.eff = 0.72, comes from XNNPACK's public dense MobileNet v1 timing on Pixel 2 (86 ms), not from
the paper. The dense GEMM prices each 6x8 tile's epilogue (bias, clamps, stores: 27 cycles on the
A73's 2-wide decode, hwmodels.cpu.gemm_epilogue_cycles) as the sparse kernels' c_row / c_out do. The secondary checks compare with
public timings: XNNPACK's dense MobileNet v2 (held out from gemm.eff), the released sparse models'
latencies, and the ratios those public timings give.

Where the model stands (figures printed by test_report): six of the eight pairs land in the band;
MobileNet v1 1.0 @ 90 % against dense 0.75 comes out at 2.49x (just above), MobileNet v2 0.8 @ 85 %
against dense 0.5 at 1.27x (below; 2.43x and 1.25x while the classifier GEMV was priced as repacking its
weights per call, 2.44x and 1.21x before the dense GEMM's tile epilogue was priced). The latency of the sparse kernel's L1-missing X gathers
(hwmodels.cpu._xnn_gather_latency_cycles) is priced with the Cortex-A73's published L2 latency (25
cycles) and L1 fill-request queue (8), both from Chips and Cheese's A73 article (spec file). The
sparse path is still 1.5-1.9x faster than the released latencies (2.3x for EfficientNet-B0), so
same-architecture MobileNet v1 1.0 @ 90 % comes out at 4.3x against the public 86 / 31 = 2.8x. Those
checks are strict xfails with that reason; no number was tuned to make them pass.
"""

from __future__ import annotations

import math

import pytest

import hwmodels
from hwmodels import cpu
from simsparse.calibrate_cpu import (
    DENSE_XNNPACK_PIXEL2_MS,
    SPARSE_RELEASED,
    dense_partner,
    end_to_end,
    equal_accuracy_pairs,
    inference_trace,
    is_sparse_1x1,
    sparse_weight,
)
from simsparse.core.mapping import Mapping
from simsparse.core.ops import ConvGeom, Op
from simsparse.core.sparsity import Block, Unstructured
from workloads import cnn

SPEC = "snapdragon-835"
MODELS = ("mobilenet_v1", "mobilenet_v2", "efficientnet_b0")
RELEASED_DENSITY = {"mobilenet_v1": 0.10, "mobilenet_v2": 0.15, "efficientnet_b0": 0.20}  # width 1.0 models
BAND = (1.3, 2.4)
SPARSE_GAP = ("the modelled sparse path is 1.5-2.3x faster than the released SD835 latencies, with the "
              "L1-missing X gathers priced at the A73's published L2 latency and fill queue; the rest of "
              "the gap has no sourced cause (the paper's timings came from unreleased code, XNNPACK issue "
              "#404); not tuned to pass")


@pytest.fixture(scope="module")
def pairs():
    return equal_accuracy_pairs(SPEC, threads=1)


@pytest.fixture(scope="module")
def released():  # the released width-1.0 models, same architecture dense vs sparse, one core
    return {m: end_to_end(m, SPEC, RELEASED_DENSITY[m], threads=1, structure="released") for m in MODELS}


@pytest.fixture(scope="module")
def released_4t():
    return {m: end_to_end(m, SPEC, RELEASED_DENSITY[m], threads=4, structure="released") for m in MODELS}


@pytest.fixture(scope="module")
def unstructured90():  # the wording: every 1x1 conv 90 % unstructured
    return {m: end_to_end(m, SPEC, 0.1, threads=1) for m in MODELS}


def test_report(pairs, released, released_4t, capsys):
    with capsys.disabled():
        print("\nsd835, 1 thread, equal accuracy (sparse released model vs dense TF-slim partner):")
        for p in pairs:
            pub = f"{p['public_speedup']:.2f}x" if p["public_speedup"] else "-"
            print(f"  {p['model']:13s} {p['sparse_width']:4g}@{1 - p['density']:.0%} ({p['sparse_top1']}%) vs "
                  f"{p['dense_width']:4g} ({p['dense_top1']}%): sparse {p['sparse_ms']:6.1f} ms "
                  f"(public {p['public_sparse_ms']:5.1f})  dense {p['dense_ms']:6.1f} ms  "
                  f"speed-up {p['speedup']:.2f}x (public {pub})")
        for m in MODELS:
            for t, r in ((1, released[m]), (4, released_4t[m])):
                print(f"  same architecture {m:16s} {t} thread(s): dense {r['dense_s'] * 1e3:6.1f} ms  "
                      f"sparse {r['sparse_s'] * 1e3:6.1f} ms  speed-up {r['speedup']:.2f}x")
    for p in pairs:
        assert p["sparse_ms"] < p["dense_ms"]
    for m in MODELS:  # a shared L2 can only cost the 4-core run, never help it
        assert released_4t[m]["speedup"] <= released[m]["speedup"]


def test_spec_sets_only_the_dense_efficiency_from_a_dense_measurement():
    spec = hwmodels.load(SPEC)
    # every sparse cycle cost comes from the port counts; the one structural key is the micro-kernel's
    # pixel count of the library generation the paper ran (from XNNPACK's code, not fitted)
    assert set(spec.efficiency) == {"gemm.eff", "xnn.mr"}
    src = spec.sources["efficiency.gemm.eff"]
    assert "XNNPACK" in src and "fastconvnets" not in src
    assert spec.efficiency["xnn.mr"] == 16 and "16x1__neonfma" in spec.sources["efficiency.xnn.mr"]
    # the gather-latency term runs on the A73's published L2 latency and fill-request queue
    assert spec.l2_latency_cycles == 25 and "25 cycles" in spec.sources["l2_latency_cycles"]
    assert spec.l1_outstanding_misses == 8 and "eight fill requests" in spec.sources["l1_outstanding_misses"]


def test_gemm_eff_reproduces_its_cited_dense_timing():
    # the spec's gemm.eff is the value for which dense MobileNet v1 1.0 takes XNNPACK's 86 ms
    # (0.723, rounded to 0.72): a consistency check of the cited derivation, not an independent one
    r = end_to_end("mobilenet_v1", SPEC, 0.1, threads=1)
    assert r["dense_s"] * 1e3 == pytest.approx(DENSE_XNNPACK_PIXEL2_MS[("mobilenet_v1", 1.0)], rel=0.01)


def test_dense_mobilenet_v2_held_out_within_15_percent():
    # held out from gemm.eff: XNNPACK's dense MobileNet v2 1.0 on Pixel 2, one thread, 53 ms
    r = end_to_end("mobilenet_v2", SPEC, 0.1, threads=1)
    assert r["dense_s"] * 1e3 == pytest.approx(DENSE_XNNPACK_PIXEL2_MS[("mobilenet_v2", 1.0)], rel=0.15)


def test_only_1x1_convs_are_made_sparse():
    t = inference_trace("mobilenet_v1")
    sparse = [o for o in t.ops if is_sparse_1x1(o)]
    assert len(sparse) == 13  # the 13 pointwise convs; not the first conv, depthwise or classifier
    assert all(o.conv.kh == 1 and not o.conv.is_depthwise for o in sparse)


def test_released_structures():
    def weights(model, width=1.0, density=0.1):
        return [w for o in inference_trace(model, width=width)
                if (w := sparse_weight(model, o, density, "released", width)) is not None]

    v1 = weights("mobilenet_v1")
    assert len(v1) == 13 and sum(isinstance(w, Block) for w in v1) == 1  # last block's pw: 4x1
    assert [(w.bh, w.bw) for w in v1 if isinstance(w, Block)] == [(4, 1)]
    v2 = weights("mobilenet_v2", density=0.15)
    # inverted-residual blocks 11-16 (from 0) have an expand and a project conv each: 12 in 2x1
    assert sum(isinstance(w, Block) and (w.bh, w.bw) == (2, 1) for w in v2) == 12
    assert not any(isinstance(w, Block) for w in weights("mobilenet_v2", 1.8, 0.2))  # unstructured model
    en = inference_trace("efficientnet_b0")
    heads = [o for o in en if o.meta.get("role") == "head"]
    assert heads and all(isinstance(sparse_weight("efficientnet_b0", o, 0.2, "released"), Unstructured)
                         for o in heads)  # EfficientNet's classifier is sparse too


def test_width_multiplier_matches_published_mult_adds():
    # TF-slim tables (tensorflow/models research/slim/nets/mobilenet/README.md, mobilenet_v1.md), M MACs
    def macs(model, width):
        return sum(o.flops for o in cnn.trace(model, width=width, dtype="fp32")
                   if o.kind in ("conv2d", "gemm")) / 2e6

    for width, ref in ((0.35, 59), (0.5, 97), (0.75, 209), (1.0, 300), (1.3, 509), (1.4, 582)):
        assert macs("mobilenet_v2", width) == pytest.approx(ref, abs=1.0)
    for width, ref in ((0.5, 150), (1.0, 569)):
        assert macs("mobilenet_v1", width) == pytest.approx(ref, abs=1.0)
    with pytest.raises(ValueError):
        cnn.trace("resnet50", width=0.5)


def test_dense_partner_is_the_most_accurate_dense_model_within_half_a_point():
    assert dense_partner("mobilenet_v1", 68.4) == 0.75  # 68.4 % = dense 0.75's 68.4 %
    assert dense_partner("mobilenet_v1", 72.0) == 1.0
    assert dense_partner("mobilenet_v2", 74.5) == 1.4  # 75.0 is within 0.5 points
    assert dense_partner("mobilenet_v2", 70.2) == 0.75  # dense 1.0 (71.8) is too accurate
    assert dense_partner("efficientnet_b0", 75.1) is None


@pytest.mark.parametrize("model", MODELS)
def test_sparse_is_faster_but_bounded_by_the_flop_ratio(unstructured90, model):
    r = unstructured90[model]
    assert r["speedup"] > 1.3
    # the 1x1 convs cannot get faster than their 10x FLOP reduction, the rest not at all
    dense_rest = r["dense_s"] - r["dense_by_kind_s"]["1x1"]
    assert r["sparse_s"] >= dense_rest + r["dense_by_kind_s"]["1x1"] / 10
    assert r["sparse_by_kind_s"]["1x1"] < r["dense_by_kind_s"]["1x1"] / 2


def test_more_non_pointwise_work_means_less_speedup(unstructured90):
    # MobileNet v2 and EfficientNet-B0 spend a larger share in depthwise / SE / element-wise ops
    s = {m: unstructured90[m]["speedup"] for m in MODELS}
    assert s["mobilenet_v1"] > s["mobilenet_v2"] > s["efficientnet_b0"]


def test_paper_band_holds_for_most_pairs(pairs):
    # a floor at today's figures (6 of 8 pairs in the band, the two misses within 10 % of its edges),
    # not the acceptance itself (the two strict xfails below)
    got = [p["speedup"] for p in pairs]
    assert len(got) == 8
    assert sum(BAND[0] <= s <= BAND[1] for s in got) >= 6, got
    assert all(BAND[0] / 1.1 <= s <= BAND[1] * 1.1 for s in got), got


@pytest.mark.xfail(strict=True, reason="MobileNet v2 0.8 @ 85 % vs dense 0.5 models at 1.27x: " + SPARSE_GAP)
def test_paper_band_mobilenet_v2(pairs):
    # Elsen et al.'s comparison for the MobileNet v2 family (5 released models, one core)
    got = [p["speedup"] for p in pairs if p["model"] == "mobilenet_v2"]
    assert len(got) == 5
    assert all(BAND[0] <= s <= BAND[1] for s in got), got


@pytest.mark.xfail(strict=True, reason="MobileNet v1 pairs model at 1.87 / 2.49 / 2.29x: " + SPARSE_GAP)
def test_paper_band_mobilenet_v1(pairs):
    got = [p["speedup"] for p in pairs if p["model"] == "mobilenet_v1"]
    assert len(got) == 3
    assert all(BAND[0] <= s <= BAND[1] for s in got), got


@pytest.mark.xfail(strict=True, reason="model 4.3x vs public 86 / 31 = 2.8x: " + SPARSE_GAP)
def test_same_architecture_mobilenet_v1_vs_public_within_20_percent(released):
    public = DENSE_XNNPACK_PIXEL2_MS[("mobilenet_v1", 1.0)] / 31.0  # released sparse MBv1 1.0: 31 ms
    assert released["mobilenet_v1"]["speedup"] == pytest.approx(public, rel=0.20)


@pytest.mark.xfail(strict=True, reason="modelled sparse latencies are 0.43-0.66 of the released ones: " + SPARSE_GAP)
def test_sparse_latency_vs_released_within_25_percent(pairs, released):
    model = {(p["model"], p["sparse_width"]): p["sparse_ms"] for p in pairs}
    model.update({(m, 1.0): released[m]["sparse_s"] * 1e3 for m in MODELS})
    ratios = [model[(m, w)] / ms for m, w, _, _, ms in SPARSE_RELEASED if (m, w) in model]
    assert len(ratios) == len(SPARSE_RELEASED)
    assert all(abs(r - 1.0) <= 0.25 for r in ratios), [round(r, 2) for r in ratios]


@pytest.mark.xfail(strict=True, reason="public equal-accuracy ratios 1.48x (v1) / 0.98x (v2) vs model "
                                       "2.25x / 1.61x: " + SPARSE_GAP)
def test_public_equal_accuracy_ratios_within_25_percent(pairs):
    with_public = [p for p in pairs if p["public_speedup"]]
    assert len(with_public) == 2
    assert all(p["speedup"] == pytest.approx(p["public_speedup"], rel=0.25) for p in with_public)


def test_gather_latency_term_prices_missing_lines_and_is_off_without_a_latency():
    sd = hwmodels.load(SPEC).replace(threads=1, l2_latency_cycles=0.0, l1_outstanding_misses=0.0)
    # a 7x7, 1024 -> 1024 1x1 conv at 10 %: X panel 1024 x 32 px x 4 B = 128 KB overflows the L1
    # share, so every stored weight gathers its 32-pixel (2-line) and 17-pixel (2-line) segments
    op = Op.conv2d(ConvGeom(1, 1024, 7, 7, 1024, 1, 1), dtype="fp32", weight=Unstructured(0.1))
    m = Mapping("xnn_spmm", tile=(32, op.n, op.k), params={"threads": 1})
    base = cpu.cost(op, m, sd)
    assert cpu.cost(op, m, sd.replace(l1_outstanding_misses=6.0)).t_s == base.t_s  # no latency: no term
    lat, mlp = 20.0, 4.0
    with_lat = cpu.cost(op, m, sd.replace(l2_latency_cycles=lat, l1_outstanding_misses=mlp))
    nnz = 1024 * 1024 * 0.1
    lines = nnz * (math.ceil(32 * 4 / 64) + math.ceil(17 * 4 / 64))
    assert base.breakdown_s["core"] >= base.breakdown_s["panel"]  # core-bound: the wait adds in full
    assert with_lat.breakdown_s["core"] - base.breakdown_s["core"] == pytest.approx(lines * lat / mlp / sd.clock_hz)


def test_gather_latency_counts_w_and_x_against_the_l1_as_the_panel_level_does():
    # 14x14, 256 -> 1024 at 10 %: the 16-pixel X panel (256 x 16 x 4 B = 16 KB) fits the 32 KB L1 share
    # alone, but XNNPACK walks all of W (26 214 values + offsets, ~210 KB) per pixel block, which evicts
    # X between two uses: every stored weight's segment misses, not only each row's first touch
    sd = hwmodels.load(SPEC).replace(threads=1)
    op = Op.conv2d(ConvGeom(1, 256, 14, 14, 1024, 1, 1), dtype="fp32", weight=Unstructured(0.1))
    m = Mapping("xnn_spmm", tile=(16, op.n, op.k), params={"threads": 1})
    off = cpu.cost(op, m, sd.replace(l2_latency_cycles=0.0))
    on = cpu.cost(op, m, sd)
    nnz = 1024 * 256 * 0.1
    blocks = math.ceil(196 / 16)  # 12 full 16-pixel blocks (one line each) + a 4-pixel one (one line)
    lines = nnz * blocks
    wait = lines * sd.l2_latency_cycles / sd.l1_outstanding_misses
    assert on.breakdown_s["core"] - off.breakdown_s["core"] == pytest.approx(wait / sd.clock_hz)
