"""Replay the checked-in host measurements (no re-measurement) through the calibrated `host`
spec and fail when the held-out error regresses.

Data: validation/data/cpu-host/kernels-*.jsonl (every campaign file; a point measured twice
keeps the pass with the lower median). Split: crc32('NxK') even → fit, odd → held out; the
cycle costs in hwmodels/specs/host.yaml were fitted on the fit half only.

The bounds below are the figures reached when the data were taken (plus a small margin), not
the issue's target of 90 % of held-out points within ±10 %. That target is NOT met (45 %):
partly the machine (in the first, loaded campaign two passes of the same point differ by more
than 10 % for 55 % of points) and, in the second, quiet campaign (86 % of points reproduce
within ±10 %), the model itself — see validation/data/cpu-host/README.md. The target is kept
as a strict xfail, so it turns into a failure (XPASS) the day it holds.
"""

from __future__ import annotations

import numpy as np
import pytest

import hwmodels
from simsparse.calibrate_cpu import TOLERANCE, predict, report
from simsparse.measure_cpu import DEFAULT_OUT, load_rows

HELD_OUT_MAPE = 0.16  # reached: 0.148
HELD_OUT_WITHIN = 0.43  # reached: 0.455
KERNEL_MAPE = {"cpu_act_gemv": 0.10, "cpu_bitmap": 0.215, "cpu_bsr": 0.135, "cpu_csr": 0.18,
               "cpu_dense_gemm": 0.11, "cpu_nm": 0.12}  # reached: 0.087 0.201 0.125 0.168 0.098 0.107
WINNER_AGREEMENT = 0.92  # reached: 0.937


@pytest.fixture(scope="module")
def held_out():
    files = sorted(DEFAULT_OUT.glob("kernels-*.jsonl"))
    if not files:
        pytest.skip("no host measurements checked in")
    rows = [r for r in load_rows(files) if r["split"] == "validate"]
    pred = predict(rows, hwmodels.load("host"))
    return rows, pred, report(rows, pred)


def test_every_kernel_is_held_out(held_out):
    rows, _, _ = held_out
    assert {r["kernel"] for r in rows} == set(KERNEL_MAPE)


def test_held_out_error_does_not_regress(held_out):
    _, _, rep = held_out
    assert rep.n >= 500
    assert rep.mape <= HELD_OUT_MAPE, rep.worst
    assert rep.within >= HELD_OUT_WITHIN


@pytest.mark.parametrize("kernel", sorted(KERNEL_MAPE))
def test_per_kernel_mape(held_out, kernel):
    _, _, rep = held_out
    assert rep.per_kernel[kernel]["mape"] <= KERNEL_MAPE[kernel]


def test_model_picks_the_right_winner(held_out):
    _, _, rep = held_out
    assert rep.winner_agreement >= WINNER_AGREEMENT


def test_quiet_campaign_reproduces(held_out):
    # the second campaign ran on a quiet machine: its two passes agree to ±10 % for most
    # points, so there the remaining error is the model's (documented, not hidden)
    rows, _, _ = held_out
    quiet = [r for r in rows if r["campaign"] == "kernels-20261123T185945Z" and r.get("remeasured")]
    a = np.array([r["t_median_first_s"] for r in quiet])
    b = np.array([r["t_median_second_s"] for r in quiet])
    assert float((np.abs(a / b - 1) <= TOLERANCE).mean()) >= 0.8


@pytest.mark.xfail(strict=True, reason="issue #6 target (>= 90 % of held-out points within ±10 %) not met: "
                                       "45 % (see the module docstring)")
def test_issue_target_ninety_percent_within_ten(held_out):
    _, _, rep = held_out
    assert rep.within >= 0.90
