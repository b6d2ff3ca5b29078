"""Machine state per campaign (simsparse.calibrate_cpu.STATE_PARAMS) and the campaign options of the
CPU harness (--tables, --shuffle, --state-probe), each against a hand-computed expectation."""

from __future__ import annotations

import json
import zlib

import pytest

import hwmodels
from simsparse import measure_cpu
from simsparse.calibrate_cpu import predict, shrink_states, state_centre, states_of

MiB = 2**20


def _row(campaign: str, copies: int = 1) -> dict:
    # a DRAM-heavy point: 784 px x 32 out x 144 in, CSR at density 0.2, rotated over `copies`
    return {"kernel": "cpu_csr", "m": 784, "n": 32, "k": 144, "dtype": "fp32",
            "weight": {"pattern": "unstructured", "density": 0.2}, "activation_density": 1.0,
            "mapping": {"kernel": "cpu_csr", "tile": [784, 32, 144], "threads": 1},
            "rotation_copies": copies, "campaign": campaign, "t_median_s": 1e-4}


def _bare(**eff: float):
    return hwmodels.load("host").replace(residual_file="").replace(efficiency=dict(eff))


def test_states_are_read_from_campaign_keys():
    spec = _bare(dram_eff=0.5, **{"dram_eff@kernels-a": 0.25, "l3_keep_bytes@kernels-a": 8.0 * MiB,
                                  "dram_eff@kernels-b": 1.0})
    assert states_of(spec) == {"kernels-a": {"dram_eff": 0.25, "l3_keep_bytes": 8.0 * MiB},
                               "kernels-b": {"dram_eff": 1.0}}
    assert states_of(_bare(dram_eff=0.5)) == {}


def test_states_shrink_toward_their_median_in_log_space():
    raw = {"a": {"core_speed": 1.0, "dram_eff": 0.4}, "b": {"core_speed": 1.1, "dram_eff": 0.5},
           "c": {"core_speed": 1.21, "dram_eff": 0.9}}
    assert state_centre(raw) == pytest.approx({"core_speed": 1.1, "dram_eff": 0.5})
    half = shrink_states(raw, 0.5)
    # log s = log 1.1 + 0.5 (log 1.21 - log 1.1): 1.1 * sqrt(1.1)
    assert half["c"]["core_speed"] == pytest.approx(1.1 * 1.1**0.5, rel=1e-12)
    assert half["a"]["dram_eff"] == pytest.approx((0.4 * 0.5) ** 0.5, rel=1e-12)  # the geometric mean
    assert half["b"] == pytest.approx(raw["b"])  # the median campaign stays where it is
    assert state_centre(half) == pytest.approx(state_centre(raw))  # so shrinking keeps the median
    assert shrink_states(raw, 1.0) == raw
    assert all(st == pytest.approx(state_centre(raw)) for st in shrink_states(raw, 0.0).values())
    # a new campaign toward the median of stored states
    assert shrink_states({"d": {"core_speed": 1.44}}, 0.5, centre={"core_speed": 1.0}) == {"d": {"core_speed": pytest.approx(1.2)}}
    with pytest.raises(ValueError, match="factor"):
        shrink_states(raw, 1.5)


def test_each_row_is_priced_on_its_campaigns_state():
    spec = _bare(dram_eff=0.5, mem_overlap=0.0)  # DRAM time adds to the core's (no overlap)
    states = {"kernels-slow": {"dram_eff": 0.25}, "kernels-fast": {"dram_eff": 1.0}}
    rows = [_row("kernels-slow"), _row("kernels-fast"), _row("kernels-other")]
    t = predict(rows, spec, states)
    # a campaign without a stored state is priced on the spec's own keys
    assert t[2] == pytest.approx(predict([rows[2]], spec)[0], rel=1e-12)
    # the same row on each state equals the spec with that state's values put in
    for i, camp in enumerate(("kernels-slow", "kernels-fast")):
        assert t[i] == pytest.approx(predict([rows[i]], _bare(dram_eff=states[camp]["dram_eff"], mem_overlap=0.0))[0], rel=1e-12)
    # a quarter of the DRAM share instead of all of it: the DRAM part takes 4x as long, so the slow
    # campaign's time exceeds the fast one's by 3x the fast one's DRAM seconds (sum of core and DRAM)
    import hwmodels.cpu as cpu
    from simsparse.calibrate_cpu import row_mapping, row_op

    d_fast = cpu.cost(row_op(rows[1]), row_mapping(rows[1]), _bare(dram_eff=1.0, mem_overlap=0.0)).breakdown_s["dram"]
    assert t[0] - t[1] == pytest.approx(3 * d_fast, rel=1e-9)


def test_a_campaigns_l3_state_moves_the_cliff():
    # rotation of 32 copies: a campaign whose L3 keeps 4x the footprint finds most of the operands
    # warm, one that keeps a quarter of it finds them cold; the warm one is faster
    spec = _bare(dram_eff=0.5, l3_keep_hill=3.0)
    rows = [_row("kernels-big", copies=32), _row("kernels-small", copies=32)]
    t = predict(rows, spec, {"kernels-big": {"l3_keep_bytes": 256.0 * MiB},
                             "kernels-small": {"l3_keep_bytes": 1.0 * MiB}})
    assert t[0] < t[1]


def test_cached_ops_keep_their_rows_alive():
    # predict() caches each row list's (Op, Mapping) by the rows' ids. A row dropped while its entry is
    # cached would free its id for a later row, which would then be priced as the dropped one (seen in
    # CI: two rows of different rotations priced alike). The entry therefore holds its rows
    import gc
    import weakref

    class Row(dict):  # a dict that can be weakly referenced
        pass

    spec = _bare(dram_eff=0.5)
    row = Row(_row("c", copies=1000))
    ref = weakref.ref(row)
    predict([row], spec)
    del row
    gc.collect()
    assert ref() is not None


def test_tables_select_layers_and_reject_unknown_names():
    one = measure_cpu.grid(tables=("regimes",))
    assert one == measure_cpu.grid(regimes=True)
    both = measure_cpu.grid(tables=("regimes", "new_layers"))
    assert len(both) == len(one) + len(measure_cpu.grid(new_layers=True))
    layers = {(p.k, p.n, p.m) for p in both}
    assert layers == set(measure_cpu.REGIME_1X1) | set(measure_cpu.NEW_1X1)
    assert not any(p.layer.startswith("llama") for p in both)  # LLM shapes come with "networks" only
    assert any(p.layer.startswith("llama") for p in measure_cpu.grid(tables=("networks",)))
    # no table repeats a shape (N, K) of another, except the two tables that measure earlier (N, K) at new
    # pixel counts (campaigns 29 and 30: the split is by (N, K), so a repeat lands in the same half)
    new_pixel_counts = ("new_layers16", "new_layers17")
    seen: dict[tuple[int, int], str] = {}
    for name, tables in measure_cpu.TABLES.items():
        if name in ("depthwise", "convs"):  # convolution geometries, not (N, K) 1x1 layers
            continue
        for _, table in tables:
            for cin, cout, _hw in table:
                if name not in new_pixel_counts:
                    assert seen.setdefault((cout, cin), name) == name, (cin, cout, name, seen[(cout, cin)])
    with pytest.raises(ValueError, match="allowed: networks, regimes, new_layers"):
        measure_cpu.grid(tables=("resnet",))


def test_state_rows_never_enter_the_fit_or_the_validation(tmp_path):
    point = {"type": "point", **_row("x"), "split": "fit"}
    point.pop("campaign")
    state = {**point, "type": "state", "split": "state", "rotation_copies": 64, "state_when": "start"}
    f = tmp_path / "kernels-20990101T000000Z.jsonl"
    f.write_text("\n".join(json.dumps(r) for r in ({"type": "machine"}, state, point)) + "\n")
    rows = measure_cpu.load_rows(f)
    assert len(rows) == 1 and rows[0]["rotation_copies"] == 1
    # the split comes from the shape rule, crc32('NxK') even -> fit
    assert rows[0]["split"] == ("fit" if zlib.crc32(b"32x144") % 2 == 0 else "validate")


def test_a_fresh_process_pass_measures_in_another_process_and_respects_the_deadline():
    import os
    import time

    pts = [measure_cpu.Point("cpu_csr", 20, 8, 16, {"pattern": "unstructured", "density": 0.5}, "t"),
           measure_cpu.Point("cpu_nm", 20, 8, 16, {"pattern": "2:4"}, "t")]
    far = time.time() + 300
    here = list(measure_cpu._run_pass(False, -1, pts, [1, 0], 1, False, far))
    there = list(measure_cpu._run_pass(True, -1, pts, [1, 0], 1, False, far))
    assert [(k, i) for k, i, _ in here] == [(k, i) for k, i, _ in there] == [("point", 1), ("point", 0)]
    assert all(r["pid"] == os.getpid() for _, _, r in here)
    assert all(r["pid"] != os.getpid() for _, _, r in there)  # the pass ran in a spawned process
    assert all(r["rel_err"] < 1e-4 and r["t_median_s"] > 0 for _, _, r in there)
    assert list(measure_cpu._run_pass(True, -1, pts, [0, 1], 1, False, time.time() - 1)) == []  # deadline passed


def test_the_default_budget_leaves_room_for_both_passes():
    # 384 points with 3 builds: 2 passes x 384 x (3 x 0.2 s + 0.15 s) = 576 s; campaign 18 took 529 s
    assert measure_cpu.campaign_estimate_s(384, 3) == pytest.approx(576.0)
    assert measure_cpu.default_budget_s(384, 3) == pytest.approx(1.5 * 576.0 + 60.0)
    # one build: 2 x 1164 x 0.35 s = 814.8 s (campaign 10's grid), beyond the old fixed 560 s
    assert measure_cpu.default_budget_s(1164, 1) > measure_cpu.campaign_estimate_s(1164, 1) > 560.0
    # 43 dense convolutions, each also timing its column copy, 3 builds: 2 x (86 x 3 x 0.2 + 43 x 0.15) = 116.1 s
    # (campaign 32 took 133 s, probes included; its budget without the parts, 157 s, had left 24 s to spare)
    assert measure_cpu.campaign_estimate_s(43, 3, parts=43) == pytest.approx(116.1)
    assert measure_cpu.default_budget_s(43, 3, parts=43) == pytest.approx(1.5 * 116.1 + 60.0)


def test_the_spec_stores_shrunk_states(tmp_path):
    import yaml

    from simsparse.calibrate_cpu import STATE_SHRINK, write_spec

    raw = {"kernels-a": {"core_speed": 1.0}, "kernels-b": {"core_speed": 1.1}, "kernels-c": {"core_speed": 1.21}}
    summary = {"params": {"core_speed": 1.21, **{f"core_speed@{c}": st["core_speed"] for c, st in raw.items()}},
               "states": raw, "state_params": ["core_speed"], "n_fit": 3, "quality_rule": "none",
               "files": sorted(raw)}
    path = tmp_path / "spec.yaml"
    path.write_text("name: x\n")
    write_spec(summary, path, "calibration-test.json")
    eff = {k: v["value"] for k, v in yaml.safe_load(path.read_text())["efficiency"].items()}
    # median 1.1; campaign c: 1.1 * (1.21 / 1.1) ** STATE_SHRINK; the plain key holds the newest campaign's (c)
    want = 1.1 * 1.1**STATE_SHRINK
    assert eff["core_speed@kernels-c"] == pytest.approx(want, rel=1e-5)
    assert eff["core_speed"] == pytest.approx(want, rel=1e-5)
    assert eff["core_speed@kernels-b"] == pytest.approx(1.1, rel=1e-5)
