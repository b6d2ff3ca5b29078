"""The second measured CPU: one vCPU of the device machine's Intel Xeon (Emerald Rapids, under KVM).

Its spec (hwmodels/specs/xeon-emr-kvm.yaml) is described from its own probe and priced with the host's
calibrated cycle costs carried over unchanged, plus a machine state fitted on this machine's fit half
(simsparse.calibrate_cpu.transfer). What the held-out half gives, and why the machine allows no ±10 %
claim (its two passes over the same points agree within ±10 % for 36 % of them), is in
validation/data/cpu-xeon-emr-kvm/README.md.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hwmodels
from simsparse.calibrate_cpu import STATE_PARAMS, states_of, transfer
from simsparse.calibrate_cpu import main as calibrate_main

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "validation" / "data" / "cpu-xeon-emr-kvm"
CAMPAIGNS = sorted(DATA.glob("kernels-*.jsonl"))
SPEC = "xeon-emr-kvm"


@pytest.fixture(scope="module")
def probe():
    return json.loads((ROOT / hwmodels.load(SPEC).probe_file).read_text())


@pytest.fixture(scope="module")
def result():
    return transfer(CAMPAIGNS, SPEC, "host")


def test_spec_numbers_are_the_probe_s(probe):
    s = hwmodels.load(SPEC)
    assert s.clock_hz == pytest.approx(probe["clock_hz_chain2"], rel=0.01)
    assert s.dram_bw_gbps * 1e9 == pytest.approx(probe["dram_read_bytes_per_s"], rel=0.01)
    assert s.l2_bw_bytes_per_clk * s.clock_hz == pytest.approx(probe["l2_read_bytes_per_s"], rel=0.01)
    assert s.l3_bw_bytes_per_clk * s.clock_hz == pytest.approx(probe["l3_read_bytes_per_s"], rel=0.01)
    caches = {(c["level"], c["type"]): c["size_bytes"] for c in probe["machine"]["caches"]}
    assert (s.l1d_bytes, s.l2_bytes, s.l3_bytes) == (caches[(1, "Data")], caches[(2, "Unified")],
                                                      caches[(3, "Unified")])
    # one pinned vCPU was measured (its DRAM bandwidth is one core's): the spec offers that one core
    assert s.cores == 1 < probe["machine"]["logical_cpus"]
    assert {"avx512f", "avx512_fp16"} <= set(probe["machine"]["simd_flags"])


def test_spec_holds_the_transfer_of_the_committed_campaign(result):
    # the stored state is what the committed code fits on the committed data, and every carried cost is
    # the host's current value
    stored = states_of(hwmodels.load(SPEC))
    assert set(stored) == set(result["states"]) == {p.stem for p in CAMPAIGNS}
    for camp, st in result["states"].items():
        for name, val in st.items():
            assert stored[camp][name] == pytest.approx(val, rel=1e-4)
    host, emr = hwmodels.load("host").efficiency, hwmodels.load(SPEC).efficiency
    for name, val in result["carried"].items():
        if name not in STATE_PARAMS:
            assert emr[name] == pytest.approx(val, rel=1e-5) and val == host[name], name


def test_carried_costs_beat_instruction_counts_on_the_held_out_half(result):
    # the host's calibration carries to another x86 core better than the uncalibrated instruction counts,
    # and the fitted machine state (three values, fit half only) does not make the held-out half worse
    counts, carried, state = (result[f"{s}_validate"] for s in ("instruction_counts", "carried", "carried_state"))
    assert counts["n"] == carried["n"] == state["n"] > 50
    assert carried["mape"] < counts["mape"]
    assert state["mape"] <= carried["mape"]
    assert state["mape"] < 0.25  # a floor at today's figure (17.7 %), not a claim of ±10 %


def test_machine_agreement_is_what_the_quality_rule_keeps(result):
    # the quality rule keeps exactly the points whose two passes agree within ±10 %
    pa = result["pass_agreement"]
    assert pa["n"] == result["n_rows"]
    assert pa["within"] == pytest.approx(result["n_reproducible"] / result["n_rows"])


@pytest.mark.parametrize("argv, needle", [
    (["--spec", SPEC, "--transfer-from", "host"], "--transfer-from"),
    ([str(CAMPAIGNS[0]), "--spec", SPEC, "--transfer-from", "no-such-cpu"], "--transfer-from"),
    ([str(CAMPAIGNS[0]), "--spec", SPEC, "--transfer-from", "h100-sxm"], "not a CPU"),
])
def test_transfer_cli_names_the_option(argv, needle, capsys):
    with pytest.raises(SystemExit) as e:
        calibrate_main(argv)
    assert e.value.code == 2
    assert needle in capsys.readouterr().err
