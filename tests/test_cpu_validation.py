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

Machine state (tenth fit on): how much of the shared L3 and of DRAM bandwidth this VM gets moves
with the host's other tenants from one session to the next, so every campaign carries its own
`l3_keep_bytes` / `dram_eff` / `core_speed`, fitted on that campaign's own fit-half rows (for an unseen campaign,
with every other value frozen) and stored in host.yaml under "<param>@<campaign>"; each held-out row
is predicted on its campaign's state.

The bounds below are the figures reached with the current host fit (plus a small margin), not
the issue's target of 90 % of held-out points within ±10 %. That target is NOT met over all campaigns
(seventeenth fit: 80.4 % with the rule, 74.8 % without, over twenty-five campaigns; 80.3 % on campaigns 15-26,
measured with one process per pass; the fit half reaches 85 %). It was met on two campaigns measured after
the fourteenth fit on layers no fit had seen (18 and 19: 90.4 % of 334 held-out rows), and missed on the five
since (21 and 22: 63.1 and 74.2 %, transformer-sized projections and layers of 16-64 pixels; 23, against the
fifteenth fit: 65.5 %; 24 and 25, against the sixteenth: 73.3 and 84.4 %; 26, against the seventeenth:
79.7 %): see validation/data/cpu-host/README.md
("fourteenth fit" on). The target is kept as a strict xfail, so it turns into a failure (XPASS) the day it
holds. Summed over each network's held-out 1x1 layers (the figure a model-level predictor such as nn-Meter
reports), 87.5 % of the sums are within ±10 %: guarded below too.
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
    report,
    reproducible,
    states_of,
)
from simsparse.measure_cpu import DEFAULT_OUT, load_rows

# Seventeenth fit (calibration-20261124T1624Z, campaigns 2-5 and 8-25 fit half, per-campaign machine state
# with the clock share, Cauchy loss; campaign 26's state added from its fit half) over the held-out rows of all
# twenty-five campaigns: MAPE 0.070, within 0.804 with the rule (5256 rows); 0.083 / 0.748 without (6788); per
# kernel act_gemv 0.083, bitmap 0.079, bsr 0.065, csr 0.080, dense 0.043, nm 0.055; winner 0.969 (0.969 without).
# (Fourteenth fit, twenty-one campaigns: 0.069 / 0.804; sixteenth, twenty-four: 0.070 / 0.803.)
HELD_OUT_MAPE = 0.075  # reached with the quality rule: 0.070 (5256 rows)
HELD_OUT_WITHIN = 0.79  # reached: 0.804
HELD_OUT_MAPE_ALL = 0.09  # without the rule (6788 rows): 0.083
HELD_OUT_WITHIN_ALL = 0.72  # reached: 0.748
KERNEL_MAPE = {"cpu_act_gemv": 0.10, "cpu_bitmap": 0.085, "cpu_bsr": 0.07, "cpu_csr": 0.095,
               "cpu_dense_gemm": 0.06, "cpu_nm": 0.065}  # reached: 0.083 0.079 0.065 0.080 0.043 0.055
WINNER_AGREEMENT = 0.95  # reached: 0.969 (0.969 without the rule)


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
def held_out(held_out_all):
    all_rows, all_pred, _ = held_out_all  # the same predictions, restricted to the reproducible rows
    idx = [i for i, r in enumerate(all_rows) if reproducible(r)]
    rows, pred = [all_rows[i] for i in idx], all_pred[idx]
    return rows, pred, report(rows, pred)


def test_every_kernel_is_held_out(held_out):
    rows, _, _ = held_out
    assert {r["kernel"] for r in rows} == set(KERNEL_MAPE)


def test_held_out_error_does_not_regress(held_out):
    _, _, rep = held_out
    assert rep.n >= 240
    assert rep.mape <= HELD_OUT_MAPE, rep.worst
    assert rep.within >= HELD_OUT_WITHIN


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


@pytest.mark.xfail(strict=True, reason="issue #6 target (>= 90 % of held-out points within ±10 %) not met: "
                                       "80.3 % with the quality rule, 74.9 % without (see the module docstring)")
def test_issue_target_ninety_percent_within_ten(held_out):
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
    assert rep.within >= 0.78  # reached: 0.803 (2397 rows, campaigns 15-26; 0.810 on 15-22 with the fourteenth fit)
    assert rep.mape <= 0.072  # reached: 0.068


@pytest.mark.xfail(strict=True, reason="issue #6 target not met on the one-process-per-pass campaigns either: "
                                       "80.3 % of 2195 held-out rows (see the module docstring)")
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
# stay held out in any later fit (the seventeenth fit has the fit halves of all but campaign 26). Per group: (campaigns, floor
# on within ±10 %, ceiling on MAPE), reached with the seventeenth fit:
MEASURED_AFTER_A_FIT = {
    # 18, 19 (after the fourteenth fit): DenseNet bottlenecks; EfficientNet-B4/B5 and Xception. Reached:
    # 0.895 / 0.055 (334 rows; unseen score with the fourteenth fit 0.904)
    "cnn": (("kernels-20261124T070853Z", "kernels-20261124T072626Z"), 0.87, 0.065),
    # 21, 22 (after the fourteenth fit, with the mapper's new pixel block): ViT / BERT / GPT-2 / T5 projections
    # at 128-197 tokens and MobileViT's layers at 16-64 pixels; far below the target, guarded so it can only
    # improve. Reached: 0.737 / 0.083 (327 rows; unseen score 0.685 / 0.093)
    "transformer_sized": (("kernels-20261124T091051Z", "kernels-20261124T101508Z"), 0.70, 0.095),
    # 23 (after the fifteenth fit), 24 and 25 (after the sixteenth), 26 (after the seventeenth): T5 / Qwen2 /
    # TinyLlama / Pythia / Phi-2 / ViT-H / SmolLM / Gemma-3 / Llama-3.2 / Qwen2.5 / Gemma-2 projections, LeViT
    # at 16 tokens, MobileViT-XS, ShuffleNet v2, RegNetY-800MF, EfficientNet-B2 / B5 / V2-S, EfficientFormer-L1,
    # DenseNet-161, ConvNeXt-Nano, YOLOv5s at 25,600 pixels.
    # Reached: 0.769 / 0.071 (706 rows; unseen scores 0.655, 0.733, 0.844 and 0.797)
    "llm_and_new_cnn": (("kernels-20261124T123657Z", "kernels-20261124T132833Z", "kernels-20261124T135956Z",
                         "kernels-20261124T163251Z"), 0.74, 0.08),
}


@pytest.mark.parametrize("which", sorted(MEASURED_AFTER_A_FIT))
def test_campaigns_measured_after_the_fit_do_not_regress(held_out, which):
    campaigns, within, mape = MEASURED_AFTER_A_FIT[which]
    rows, pred, _ = held_out
    idx = [i for i, r in enumerate(rows) if r["campaign"] in campaigns]
    rep = report([rows[i] for i in idx], pred[idx])
    assert rep.n >= 300
    assert rep.within >= within
    assert rep.mape <= mape


def test_network_sums_of_held_out_layers_do_not_regress(networks):
    held_out, every = networks
    assert held_out["n"] >= 500 and set(held_out["per_kernel"]) >= {"cpu_csr", "cpu_bsr", "cpu_dense_gemm"}
    assert held_out["within"] >= 0.87  # reached: 0.875 (576 sums, MAPE 0.055; fourteenth fit 0.903)
    assert held_out["mape"] <= 0.06
    assert every["within"] >= 0.92  # reached: 0.929 (MAPE 0.036; fit-half layers in-sample)
