"""Replay the checked-in host measurements (no re-measurement) through the calibrated `host`
spec and fail when the held-out error regresses.

Data: validation/data/cpu-host/kernels-*.jsonl (every campaign file; a point measured twice
keeps the pass with the lower median). Split: crc32('NxK') even → fit, odd → held out; the
cycle costs in hwmodels/specs/host.yaml were fitted on the fit half only.

Quality rule (simsparse.calibrate_cpu.reproducible, declared before held-out errors were
looked at, applied alike to both halves): campaign 1 (measured under load) is excluded, and so
is any point whose own two passes differ by more than 10 % — such a point cannot test a ±10 %
claim. The fit used the reproducible fit-half rows only. Results are guarded with the rule and
without it.

Machine state (tenth fit on): how much of DRAM bandwidth and of the core's clock this VM gets, and how fast
the host's other work evicts its lines from the shared L3, move from one session to the next, so every campaign
carries its own `l3_evict_bps` / `dram_eff` / `core_speed` (eighteenth fit on; `l3_keep_bytes` before), fitted
on that campaign's own fit-half rows (for an unseen campaign, with every other value frozen) and stored in
host.yaml under "<param>@<campaign>"; each held-out row is predicted on its campaign's state.

Learned residual (session 11; cross-fitted since session 12): host.yaml names `host-residual.json`,
gradient-boosted trees trained on the analytic model's log residual over the reproducible fit-half rows, each
row with the fitted model's error and with the error of the model refitted without its shape
(hwmodels/residual.py). The held-out rows are shapes it never saw. The figures below are those of the full host model (analytic + residual); the
analytic model alone is guarded too, so it cannot rot behind the correction.

The bounds below are the figures reached with the current host model (plus a small margin). The issue's
target of 90 % of held-out points within ±10 % was at 88.7 % with the rule (6082 rows) while four campaigns
(7, 14, 26, 27) held points measured once, which the rule cannot screen; with their second passes completed
(session 22, `measure_cpu --complete`) it was 90.0 % over all campaigns, with no margin; the model refitted on
the completed fit halves (twenty-fourth fit, session 23, decided before it was run) reaches 90.14 % of 5913
rows, 583 misses where 591 are allowed (test_issue_target_...); 83.2 % without the rule (the analytic model
alone: 80.5 %). On the campaigns measured with one process per pass
(15-32) it is 89.3 % (strict xfail below). The campaigns measured after a fit (27: 76.5 %, 28: 70.3 %, 29: 86.0 %,
30: 53.7 % on
their held-out halves when first scored) are the hardest: see validation/data/cpu-host/README.md ("A learned
residual", "Campaign 27", "Nineteenth fit and a cross-fitted residual", "Campaign 28", "Twentieth fit", "Campaign 29",
"Campaign 30"). Over all campaigns the target is a plain test since it held (session 22); on the
one-process-per-pass campaigns it stays a strict xfail, which turns into a failure (XPASS) the day it holds.
Summed over each network's held-out 1x1 layers (the figure a model-level predictor such as nn-Meter reports),
94.4 % of 576 sums are within ±10 % (MAPE 3.5 %): guarded below too. On the held-out points timed in at least two
other campaigns the model scores 92.3 %, against 93.3 % for the repeats reference (test_model_is_near_...).
"""

from __future__ import annotations

import numpy as np
import pytest

import hwmodels
from simsparse.calibrate_cpu import (
    LOADED_CAMPAIGNS,
    TOLERANCE,
    network_report,
    predict,
    repeat_ceiling,
    report,
    report_kernel,
    reproducible,
    states_of,
)
from simsparse.measure_cpu import DEFAULT_OUT, load_rows

# Twenty-third fit (calibration-20261124T2249Z: campaigns 2-30 fit half, per-campaign eviction rate / DRAM share /
# clock share, Cauchy loss), each campaign's state shrunk by 0.75 toward the median state (STATE_SHRINK, session
# 14), with the residual trained on in-sample and cross-fitted errors (crossfit-20261124T2249Z) and the last pixel
# block's half-vector trips as a feature, over the held-out rows of all thirty campaigns: MAPE 0.048, within 0.887
# with the rule (6015 rows); 0.061 / 0.825 without (7641); per kernel act_gemv 0.061, bitmap 0.054, bsr 0.045,
# csr 0.049, dense 0.034, nm 0.045; winner 0.972. (Twenty-second fit on raw states: 0.049 / 0.879; on shrunk
# states: 0.048 / 0.888.)
# With campaign 31 (77 depthwise convolutions, cpu_dwconv, fitted in a stage of its own: held-out 47 rows, MAPE
# 0.0305, within 0.915) the whole held-out half is 6062 rows, MAPE 0.048, within 0.888 (with the rule); 7688 rows,
# 0.061 / 0.825 without. With campaign 32 (43 dense KxK convolutions, im2col + BLAS, the column copy fitted in a
# stage of its own on its own timing, GEMM frozen, no residual: held-out 20 rows, MAPE 0.073, within 0.75; reported
# as cpu_dense_gemm_conv) 6082 rows, 0.048 / 0.887; 7708 rows, 0.061 / 0.825 without.
# With the second passes of campaigns 7, 14, 26 and 27 completed (measure_cpu --complete, pass2-*.jsonl, session
# 22; same model, no refit), every held-out row has two passes: 5913 rows, MAPE 0.0451, within 0.9001 with the rule;
# 7708 rows, 0.060 / 0.829 without; per kernel act_gemv 0.061, bitmap 0.051, bsr 0.043, csr 0.046, dense 0.033,
# nm 0.041, dwconv 0.030, conv 0.073; winner 0.973; the analytic model alone 0.065 / 0.803.
# Twenty-fourth fit (calibration-20261125T0334Z, session 23): the twenty-third's structure refitted on the fit
# halves as completed (5482 rows), a new cross-fit (crossfit-20261125T0334Z) and residual, the staged fits re-run:
# 5913 rows, MAPE 0.0452, within 0.9014 (583 misses) with the rule; 7708 rows, 0.060 / 0.832 without; per kernel
# act_gemv 0.068, bitmap 0.050, bsr 0.043, csr 0.046, dense 0.036, nm 0.042, dwconv 0.030, conv 0.073; winner
# 0.973; the analytic model alone 0.065 / 0.805.
HELD_OUT_MAPE = 0.049  # reached with the quality rule: 0.0452 (5913 rows)
HELD_OUT_WITHIN = 0.895  # reached: 0.9014 (583 misses; 591.3 allowed at 0.90)
HELD_OUT_MAPE_ALL = 0.066  # without the rule (7708 rows): 0.060
HELD_OUT_WITHIN_ALL = 0.82  # reached: 0.832
KERNEL_MAPE = {"cpu_act_gemv": 0.075, "cpu_bitmap": 0.06, "cpu_bsr": 0.055, "cpu_csr": 0.055,
               "cpu_dense_gemm": 0.04, "cpu_nm": 0.05,  # reached: 0.068 0.050 0.043 0.046 0.036 0.042
               # the depthwise convolution (campaign 31, its own staged fit, no residual): 0.0305 over 47 rows
               "cpu_dwconv": 0.04,
               # dense KxK convolutions (campaign 32: the im2col stage, GEMM frozen, no residual): 0.073 over 20 rows
               "cpu_dense_gemm_conv": 0.09}
WINNER_AGREEMENT = 0.95  # reached: 0.972
# the analytic model alone (residual_file cleared), same rows: 0.0672 / 0.794 (0.0652 / 0.803 on the 5913 rows)
ANALYTIC_MAPE = 0.072
ANALYTIC_WITHIN = 0.785


@pytest.fixture(scope="module")
def held_out_all():
    files = sorted(DEFAULT_OUT.glob("kernels-*.jsonl"))
    if not files:
        pytest.skip("no host measurements checked in")
    rows = [r for r in load_rows(files) if r["split"] == "validate"]
    spec = hwmodels.load("host")
    pred = predict(rows, spec, states_of(spec))  # each campaign on its own machine state
    return rows, pred, report(rows, pred)


@pytest.fixture(scope="module")
def held_out_analytic():
    files = sorted(DEFAULT_OUT.glob("kernels-*.jsonl"))
    if not files:
        pytest.skip("no host measurements checked in")
    rows = [r for r in load_rows(files) if r["split"] == "validate" and reproducible(r)]
    spec = hwmodels.load("host")
    pred = predict(rows, spec.replace(residual_file=""), states_of(spec))
    return report(rows, pred)


def test_analytic_model_alone_does_not_regress(held_out_analytic):
    rep = held_out_analytic
    assert rep.n >= 5000
    assert rep.mape <= ANALYTIC_MAPE
    assert rep.within >= ANALYTIC_WITHIN


def test_the_residual_improves_on_the_analytic_model(held_out, held_out_analytic):
    # the correction was trained on fit-half rows only: on held-out shapes it must still help
    _, _, rep = held_out
    assert rep.within > held_out_analytic.within + 0.05
    assert rep.mape < held_out_analytic.mape


@pytest.fixture(scope="module")
def held_out(held_out_all):
    all_rows, all_pred, _ = held_out_all  # the same predictions, restricted to the reproducible rows
    idx = [i for i, r in enumerate(all_rows) if reproducible(r)]
    rows, pred = [all_rows[i] for i in idx], all_pred[idx]
    return rows, pred, report(rows, pred)


def test_every_kernel_is_held_out(held_out):
    rows, _, _ = held_out
    assert {report_kernel(r) for r in rows} == set(KERNEL_MAPE)


def test_held_out_error_does_not_regress(held_out):
    _, _, rep = held_out
    assert rep.n >= 240
    assert rep.mape <= HELD_OUT_MAPE, rep.worst
    assert rep.within >= HELD_OUT_WITHIN


def test_every_kernel_row_has_two_passes():
    # the quality rule can only screen a point timed twice (pass_diff is 0 for a single pass); a campaign whose
    # budget ran out is completed with `python -m simsparse.measure_cpu --complete FILE` (campaigns 7, 14, 26
    # and 27 were, in session 22); campaign 1 (loaded) is excluded whole
    once = {r["campaign"] for r in load_rows() if not r.get("remeasured") and r["campaign"] not in LOADED_CAMPAIGNS}
    assert not once, f"campaigns with points measured once (run --complete on them): {sorted(once)}"


def test_held_out_error_without_quality_rule_does_not_regress(held_out_all):
    _, _, rep = held_out_all
    assert rep.n >= 500
    assert rep.mape <= HELD_OUT_MAPE_ALL, rep.worst
    assert rep.within >= HELD_OUT_WITHIN_ALL


@pytest.mark.parametrize("kernel", sorted(KERNEL_MAPE))
def test_per_kernel_mape(held_out, kernel):
    _, _, rep = held_out
    assert rep.per_kernel[kernel]["mape"] <= KERNEL_MAPE[kernel]


def test_model_picks_the_right_winner(held_out):
    _, _, rep = held_out
    assert rep.winner_agreement >= WINNER_AGREEMENT


def test_quiet_campaign_reproduces(held_out_all):
    # the second campaign ran on a quiet machine: its two passes agree to ±10 % for most
    # points, so there the remaining error is the model's (documented, not hidden)
    rows, _, _ = held_out_all
    quiet = [r for r in rows if r["campaign"] == "kernels-20261123T185945Z" and r.get("remeasured")]
    a = np.array([r["t_median_first_s"] for r in quiet])
    b = np.array([r["t_median_second_s"] for r in quiet])
    assert float((np.abs(a / b - 1) <= TOLERANCE).mean()) >= 0.8


def test_issue_target_ninety_percent_within_ten(held_out):
    # issue #6: >= 90 % of held-out points within ±10 %. Reached with every held-out row timed in two passes
    # (session 22's completion of campaigns 7, 14, 26, 27): 0.9001, 591 misses of 5913 where 591.3 are allowed;
    # the twenty-fourth fit (refitted on the completed fit halves): 0.9014, 583 misses, a margin of 8 rows.
    # 83.2 % without the quality rule.
    _, _, rep = held_out
    assert rep.within >= 0.90


@pytest.fixture(scope="module")
def one_process_per_pass(held_out):
    """Held-out rows (and their predictions) of the campaigns measured with one process per pass
    (measure_cpu's protocol from campaign 15 on; older rows carry no pid)."""
    rows, pred, _ = held_out
    idx = [i for i, r in enumerate(rows) if r.get("pid") is not None and r["campaign"] >= "kernels-20261124T044915Z"]
    return [rows[i] for i in idx], pred[idx]


def test_one_process_per_pass_campaigns_do_not_regress(one_process_per_pass):
    rows, pred = one_process_per_pass
    assert len({r["campaign"] for r in rows}) >= 5 and len(rows) >= 1000
    rep = report(rows, pred)
    assert rep.within >= 0.88  # reached: 0.893 (3180 rows, campaigns 15-32; twenty-third fit 0.889)
    assert rep.mape <= 0.053  # reached: 0.047


@pytest.mark.xfail(strict=True, reason="issue #6 target not met on the one-process-per-pass campaigns either: "
                                       "89.3 % of 3180 held-out rows (see the module docstring)")
def test_issue_target_on_one_process_per_pass_campaigns(one_process_per_pass):
    assert report(*one_process_per_pass).within >= 0.90


def _net_row(campaign, layer, kernel, n, k, split, t, density=0.1):
    return {"campaign": campaign, "layer": layer, "kernel": kernel, "m": 196, "n": n, "k": k, "split": split,
            "weight": {"pattern": "unstructured", "density": density}, "t_median_s": t}


def test_network_report_adds_layers_before_comparing():
    rows = [  # one network, two held-out layers: errors of -20 % and +16.7 % cancel in the sum
        _net_row("c1", "mobilenet_v1", "cpu_csr", 64, 32, "validate", 1e-4),
        _net_row("c1", "mobilenet_v1", "cpu_csr", 128, 64, "validate", 3e-4),
        _net_row("c1", "mobilenet_v1", "cpu_csr", 256, 128, "fit", 5e-4),  # fit half: only in "all"
        # the same network at another density, one layer missing (cut short): dropped
        _net_row("c1", "mobilenet_v1", "cpu_csr", 64, 32, "validate", 1e-4, density=0.05),
        _net_row("c1", "regimes", "cpu_csr", 64, 32, "validate", 1e-4),  # not a network table
    ]
    pred = np.array([0.8e-4, 3.5e-4, 4e-4, 1e-4, 1e-4])
    val = network_report(rows, pred, "validate")
    # (0.8 + 3.5) / (1 + 3) - 1 = +7.5 %: within; the cut-short set is not counted
    assert val["n"] == 1 and val["within"] == 1.0 and val["mape"] == pytest.approx(0.075)
    every = network_report(rows, pred, None)
    # (0.8 + 3.5 + 4) / (1 + 3 + 5) - 1 = -7.8 %
    assert every["n"] == 1 and every["mape"] == pytest.approx(1 - 8.3 / 9)


@pytest.fixture(scope="module")
def networks():
    files = sorted(DEFAULT_OUT.glob("kernels-*.jsonl"))
    if not files:
        pytest.skip("no host measurements checked in")
    rows = [r for r in load_rows(files) if r["campaign"] not in LOADED_CAMPAIGNS]
    spec = hwmodels.load("host")
    pred = predict(rows, spec, states_of(spec))
    return network_report(rows, pred, "validate"), network_report(rows, pred, None)


# Campaigns measured after a fit was committed, on 1x1 layers no earlier table had; their held-out layers
# stay held out in any later fit (the twenty-third fit and its residual have the fit halves of all of them). Per
# group: (campaigns, floor on within ±10 %, ceiling on MAPE), reached with the twenty-third fit on shrunk states
# and its residual (analytic alone in brackets). The twenty-fourth fit (session 23) reaches, within / MAPE: cnn
# 0.943 / 0.038, transformer_sized 0.920 / 0.050, llm_and_new_cnn 0.952 / 0.035 (692 rows), campaign_27 0.725 /
# 0.078 (167), campaign_28 0.721 / 0.078, campaign_29 0.928 / 0.046, campaign_30 0.769 / 0.068:
MEASURED_AFTER_A_FIT = {
    # 18, 19 (after the fourteenth fit): DenseNet bottlenecks; EfficientNet-B4/B5 and Xception. Reached:
    # 0.946 / 0.038 (334 rows; analytic 0.880 / 0.054; unseen score with the fourteenth fit 0.904)
    "cnn": (("kernels-20261124T070853Z", "kernels-20261124T072626Z"), 0.91, 0.045),
    # 21, 22 (after the fourteenth fit, with the mapper's new pixel block): ViT / BERT / GPT-2 / T5 projections
    # at 128-197 tokens and MobileViT's layers at 16-64 pixels. Reached: 0.927 / 0.050 (327 rows; analytic
    # 0.746 / 0.080; unseen score 0.685 / 0.093)
    "transformer_sized": (("kernels-20261124T091051Z", "kernels-20261124T101508Z"), 0.88, 0.06),
    # 23 (after the fifteenth fit), 24 and 25 (after the sixteenth), 26 (after the seventeenth): T5 / Qwen2 /
    # TinyLlama / Pythia / Phi-2 / ViT-H / SmolLM / Gemma-3 / Llama-3.2 / Qwen2.5 / Gemma-2 projections, LeViT
    # at 16 tokens, MobileViT-XS, ShuffleNet v2, RegNetY-800MF, EfficientNet-B2 / B5 / V2-S, EfficientFormer-L1,
    # DenseNet-161, ConvNeXt-Nano, YOLOv5s at 25,600 pixels.
    # Reached: 0.929 / 0.038 (706 rows; analytic 0.785 / 0.068; unseen scores 0.655, 0.733, 0.844 and 0.797)
    "llm_and_new_cnn": (("kernels-20261124T123657Z", "kernels-20261124T132833Z", "kernels-20261124T135956Z",
                         "kernels-20261124T163251Z"), 0.87, 0.055),
    # 27 (after the eighteenth fit; unseen score with its residual 0.765 / 0.074): RegNetY-1.6GF, RegNetX-800MF,
    # DenseNet-121, GPT-2 XL, Phi-3-mini and Mistral-7B projections. Its fit half joined the nineteenth fit and the
    # residual; its held-out rows were all measured once (the budget ran out before their second pass), so the
    # quality rule cannot screen them. Reached: 0.704 / 0.082 (196 rows; analytic alone 0.648 / 0.094);
    # twenty-second fit on raw states 0.622 / 0.095
    "campaign_27": (("kernels-20261124T184856Z",), 0.69, 0.085),
    # 28 (after the nineteenth fit and its cross-fitted residual; unseen score 0.703 / 0.079): MobileNet v3,
    # SqueezeNet 1.1, ShuffleNet v2 x2.0, RegNetX-400MF, GPT-2 large at 32 tokens, Llama-3.2-1B at 64. Only 4 of
    # its 16 shapes fell in the fit half. Reached: 0.712 / 0.079 (222 rows; analytic alone 0.617 / 0.1045);
    # twenty-second fit on raw states 0.707 / 0.075, the ceiling was 0.08: shrinking the states moved it (0.080)
    "campaign_28": (("kernels-20261124T202304Z",), 0.69, 0.085),
    # 29 (after the twentieth fit; unseen score 0.860 / 0.056): layers at odd feature-map sizes and token counts
    # (Inception-v3, YOLOv3, EfficientNet-B3 at 300 pixels, SqueezeNet 1.0, CLIP text, ViT-S/32, Whisper-tiny),
    # whose pixel loops end in half-vector trips. Reached: 0.923 / 0.043 (207 rows; analytic alone 0.850 / 0.060)
    "campaign_29": (("kernels-20261124T210714Z",), 0.89, 0.055),
    # 30 (after the twenty-first fit; unseen score 0.537 / 0.103 on its own state, 0.881 on the spec's newest):
    # high-resolution layers at 9216-50176 pixels (ConvNeXt-T at 384, MobileNet v2 at 448, SegFormer MiT-B0 / -B1,
    # YOLOv5s at 640, DeepLabv3+ at 513). Reached: 0.776 / 0.066 (134 rows; analytic alone 0.739 / 0.073);
    # twenty-second fit on raw states 0.806 / 0.066; twenty-fourth fit 0.769 (103 of 134: one row fewer)
    "campaign_30": (("kernels-20261124T215152Z",), 0.76, 0.075),
}


@pytest.mark.parametrize("which", sorted(MEASURED_AFTER_A_FIT))
def test_campaigns_measured_after_the_fit_do_not_regress(held_out, which):
    campaigns, within, mape = MEASURED_AFTER_A_FIT[which]
    rows, pred, _ = held_out
    idx = [i for i, r in enumerate(rows) if r["campaign"] in campaigns]
    rep = report([rows[i] for i in idx], pred[idx])
    assert rep.n >= 120  # the smallest group, campaign 30: 134 rows
    assert rep.within >= within
    assert rep.mape <= mape


def test_network_sums_of_held_out_layers_do_not_regress(networks):
    held_out, every = networks
    assert held_out["n"] >= 500 and set(held_out["per_kernel"]) >= {"cpu_csr", "cpu_bsr", "cpu_dense_gemm"}
    assert held_out["within"] >= 0.90  # reached: 0.944 (576 sums, MAPE 0.035; twenty-third fit 0.936 / 0.037)
    assert held_out["mape"] <= 0.05
    assert every["within"] >= 0.95  # reached: 0.979 (MAPE 0.020; fit-half layers in-sample)


def _point(camp, m, t, remeasured=True):
    return {"campaign": camp, "kernel": "cpu_csr", "m": m, "n": 64, "k": 64, "split": "validate",
            "weight": {"pattern": "unstructured", "density": 0.1}, "rotation_copies": 4,
            "mapping": {"tile": [m, 64, 64]}, "t_median_s": t, "remeasured": remeasured}


def test_repeat_ceiling_by_hand():
    # three campaigns time points 1-4; c is 1.2x slower throughout (its offset) and point 4 there 1.5x;
    # point 5 only in a and b (one other campaign each: not repeated with min_others=2)
    times = {"a": [1, 2, 3, 4, 7], "b": [1, 2, 3, 4, 7], "c": [1.2, 2.4, 3.6, 6.0]}
    rows = [_point(c, m, t * 1e-3, remeasured=c != "c") for c, ts in times.items() for m, t in enumerate(ts, 1)]
    pred = np.array([r["t_median_s"] for r in rows])
    pred[[i for i, r in enumerate(rows) if r["campaign"] == "c"]] = [1e-3, 2e-3, 3e-3, 4e-3]  # as a and b
    res = repeat_ceiling(rows, pred)
    # c: points 1-3 at 1.2x the median elsewhere, point 4 at 1.5x: offset 1.2, point 4 off by 4.8 / 6 - 1 = -20 %
    assert res["per_campaign"]["c"] == {"n": 4, "repeats_within": 0.75, "model_within": 0.0}
    # a: medians elsewhere (b and c) are geometric means: sqrt(1.2) x for points 1-3, sqrt(24) ms for point 4;
    # offset 1 / sqrt(1.2), so point 4 is priced sqrt(20) = 4.47 ms against 4: +11.8 %, a miss
    assert res["per_campaign"]["a"] == {"n": 4, "repeats_within": 0.75, "model_within": 1.0}
    assert res["repeated"] == {"n": 12, "model_within": 8 / 12, "repeats_within": 0.75}
    assert res["not_repeated"] == {"n": 2, "model_within": 1.0}
    assert res["one_pass"] == {"n": 4, "model_within": 0.0} and res["two_passes"]["n"] == 10
    assert repeat_ceiling(rows, pred, min_others=1)["repeated"]["n"] == 14
    with pytest.raises(ValueError, match="pred"):
        repeat_ceiling(rows, pred[:-1])


def test_model_is_near_the_repeats_reference(held_out):
    # held-out rows whose point was measured in at least two other campaigns: the reference (the point's median
    # elsewhere times its campaign's offset) reached 0.919, the model 0.912 (2778 rows; the twenty-third fit and
    # its residual). Rows kept from two passes: 0.905 (5145); from one pass: 0.786 (870). With those 870 rows'
    # campaigns completed (session 22): repeated points 0.933 / 0.921 (2710 rows), every row two passes, 0.900 (5913).
    # Twenty-fourth fit (session 23): reference 0.933, model 0.923 (2710 rows); the 3203 other rows 0.884
    rows, pred, _ = held_out
    res = repeat_ceiling(rows, pred)
    assert res["repeated"]["n"] >= 2500
    assert res["repeated"]["model_within"] >= res["repeated"]["repeats_within"] - 0.02
    assert res["two_passes"]["model_within"] >= 0.895
