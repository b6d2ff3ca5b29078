"""Completing a campaign's second pass (measure_cpu.complete) and folding it in (load_rows).

A campaign whose budget ran out has points measured once: the quality rule (two passes within 10 %)
cannot screen them. `complete` times the missing pass later into a file of its own; `load_rows` applies
the same keep-the-faster rule as a campaign's own second pass.
"""

from __future__ import annotations

import json

import pytest

from simsparse import measure_cpu
from simsparse.calibrate_cpu import pass_diff, reproducible

CSR = {"pattern": "unstructured", "density": 0.5}


def _row(m, t, kind="point", **kw):
    return {"type": kind, "kernel": "cpu_csr", "m": m, "n": 8, "k": 16, "dtype": "fp32", "weight": CSR,
            "activation_density": 1.0, "layer": "t", "mapping": {"kernel": "cpu_csr", "tile": [m, 8, 16],
                                                                   "threads": 1},
            "t_median_s": t, "spread": 0.01, "loadavg_before": "0.1", "rotation_copies": 4, "mb": m,
            "weight_bytes": 100, "nnz": 64, **kw}


def _write(path, rows):
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_a_completion_pass_is_kept_by_the_campaign_rule(tmp_path):
    camp = tmp_path / "kernels-20990101T000000Z.jsonl"
    both = _row(3, 1.0e-3)
    _write(camp, [{"type": "machine"}, _row(1, 1.0e-3), _row(2, 1.0e-3), both,
                  {**_row(3, 0.9e-3, "remeasure"), "remeasured": True, "t_median_first_s": 1.0e-3,
                   "t_median_second_s": 0.9e-3}, _row(4, 1.0e-3)])
    # point 1 faster the second time, point 2 slower by 25 %, point 3 already had its own second pass,
    # point 4's second pass failed its check
    _write(tmp_path / f"pass2-{camp.stem}-20990102T000000Z.jsonl",
           [{"type": "machine", "completes": camp.stem}, _row(1, 0.95e-3, "pass2"), _row(2, 1.25e-3, "pass2"),
            _row(3, 0.5e-3, "pass2"), {**_row(4, 0.5e-3, "pass2"), "error": "build differs"}, {"type": "end"}])
    rows = {r["m"]: r for r in measure_cpu.load_rows(camp)}
    assert len(rows) == 4
    assert rows[1]["t_median_s"] == 0.95e-3 and rows[1]["second_pass_file"].startswith("pass2-")
    assert pass_diff(rows[1]) == pytest.approx(1.0 / 0.95 - 1) and reproducible(rows[1])
    assert rows[2]["t_median_s"] == 1.0e-3 and pass_diff(rows[2]) == pytest.approx(0.2)  # 1.0 / 1.25 - 1
    assert not reproducible(rows[2])  # passes 20 % apart: screened out like any two-pass point
    assert rows[3]["t_median_s"] == 0.9e-3 and "second_pass_file" not in rows[3]  # its own pass stands
    assert not rows[4].get("remeasured") and rows[4]["t_median_s"] == 1.0e-3  # the failed check is not used
    assert {r["campaign"] for r in rows.values()} == {camp.stem}  # folded into its campaign, not a new one
    # without the completion file the campaign loads as measured (the file itself is never rewritten)
    other = tmp_path / "elsewhere"
    other.mkdir()
    (other / camp.name).write_text(camp.read_text())
    assert sum(bool(r.get("remeasured")) for r in measure_cpu.load_rows(other / camp.name)) == 1


def test_point_of_rebuilds_the_measured_operands():
    # a GEMM row and a convolution row: the Point read back from the row builds the same operands
    for pt in (measure_cpu.Point("cpu_bsr", 49, 32, 64, {"pattern": "block", "block": [4, 1], "density": 0.25}, "a"),
               measure_cpu.Point("cpu_dwconv", 64, 8, 8, {"pattern": "dense"}, "dw", conv=(8, 8, 3, 1, 1)),
               measure_cpu.Point("cpu_dense_gemm", 16, 4, 18, {"pattern": "dense"}, "c", conv=(2, 4, 3, 1, 1))):
        _, copies, facts = measure_cpu.build(pt, copies=3)
        row = {"kernel": pt.kernel, "m": pt.m, "n": pt.n, "k": pt.k, "weight": pt.pattern, "layer": pt.layer,
               "activation_density": pt.activation_density,
               **({"conv": pt.conv_dict} if pt.conv else {})}
        back = measure_cpu.point_of(row)
        assert back == pt
        _, copies2, facts2 = measure_cpu.build(back, copies=3, mb=facts.get("mb") or None)
        assert copies2 == copies and {k: facts2.get(k) for k in measure_cpu.SAME_BUILD if k != "rotation_copies"} \
            == {k: facts.get(k) for k in measure_cpu.SAME_BUILD if k != "rotation_copies"}


def test_complete_times_only_the_points_measured_once(tmp_path):
    pts = [measure_cpu.Point("cpu_csr", 20, 8, 16, CSR, "t"), measure_cpu.Point("cpu_nm", 20, 8, 16,
                                                                                 {"pattern": "2:4"}, "t")]
    first = [measure_cpu.measure_point(p, copies=2) for p in pts]
    camp = tmp_path / "kernels-20990101T000000Z.jsonl"
    _write(camp, [{"type": "machine", "builds": 1, "cold": False}, *first,
                  {**first[1], "type": "remeasure", "remeasured": True, "t_median_first_s": first[1]["t_median_s"],
                   "t_median_second_s": first[1]["t_median_s"]}])
    out = measure_cpu.complete(camp, core=-1, with_state=False, log=lambda s: None)
    lines = [json.loads(x) for x in out.read_text().splitlines()]
    assert out.name.startswith(f"pass2-{camp.stem}-") and lines[0]["completes"] == camp.stem
    timed = [r for r in lines if r.get("type") == "pass2"]
    assert [(r["kernel"], r["rotation_copies"]) for r in timed] == [("cpu_csr", 2)]  # the N:M point had two
    assert "error" not in timed[0] and lines[-1]["measured"] == 1 and lines[-1]["build_mismatch"] == 0
    rows = {r["kernel"]: r for r in measure_cpu.load_rows(camp)}
    assert rows["cpu_csr"]["remeasured"] and rows["cpu_csr"]["t_median_second_s"] == timed[0]["t_median_s"]
    # run again: nothing is left to time
    again = measure_cpu.complete(camp, core=-1, with_state=False, log=lambda s: None)
    assert json.loads(again.read_text().splitlines()[-1])["measured"] == 0


def test_a_completion_that_builds_something_else_is_flagged(tmp_path):
    pt = measure_cpu.Point("cpu_csr", 20, 8, 16, CSR, "t")
    row = {**measure_cpu.measure_point(pt, copies=2), "nnz": 1}  # the campaign's build had another mask
    camp = tmp_path / "kernels-20990101T000000Z.jsonl"
    _write(camp, [{"type": "machine", "builds": 1}, row])
    out = measure_cpu.complete(camp, core=-1, with_state=False, log=lambda s: None)
    timed = [json.loads(x) for x in out.read_text().splitlines() if '"pass2"' in x]
    assert len(timed) == 1 and "nnz 1 -> 64" in timed[0]["error"]
    assert not measure_cpu.load_rows(camp)[0].get("remeasured")


def test_cli_refuses_a_missing_campaign_file(tmp_path, capsys):
    with pytest.raises(SystemExit):
        measure_cpu.main(["--complete", str(tmp_path / "nope.jsonl")])
    assert "no such campaign file" in capsys.readouterr().err
