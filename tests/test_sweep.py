"""Sweeps: spec expansion, keys, agreement with simulate, the resumable store, local processes."""

from __future__ import annotations

import json

import pandas as pd
import pyarrow as pa
import pytest

import hwmodels
import mappers
import simsparse
import workloads
from simsparse.core.ops import Op
from simsparse.store import ResultStore
from simsparse.sweep import load_spec, pattern_text, point_key, points, rows_to_table, sweep

GEMM_SPEC = {
    "name": "t",
    "gemms": {"m": [1, 64], "n": [1024, 2048], "k": 1024},
    "sparsity": ["dense", "2:4", "unstructured@0.1"],
    "hardware": ["h100-sxm", "v100"],
}


def same_rows(a: pd.DataFrame, b: pd.DataFrame) -> None:
    """Equal as sets of rows (column order and row order ignored)."""
    cols = sorted(a.columns)
    assert cols == sorted(b.columns)
    a = a[cols].sort_values("key").reset_index(drop=True)
    b = b[cols].sort_values("key").reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_grid_size_and_shorthands():
    pts = points(GEMM_SPEC)
    assert len(pts) == 2 * 2 * 1 * 3 * 2
    assert len({p["key"] for p in pts}) == len(pts)
    spec = load_spec(GEMM_SPEC)
    assert spec.mapper == ["auto"] and spec.sparsity.activation == ["dense"]


def test_pattern_density_grid_ranges_and_overrides():
    spec = {
        "gemms": [{"m": {"min": 1, "max": 1024, "steps": 4, "log": True}, "n": 512,
                   "k": {"min": 500, "max": 1100, "steps": 3, "multiple_of": 64}}],
        "sparsity": {"weight": [{"pattern": "unstructured", "density": [0.5, 0.1]},
                                {"pattern": "block", "block": [[16, 16], [32, 32]], "density": 0.25}],
                     "activation": ["dense", 0.5]},
        "hardware": [{"h100-sxm": {"hbm_bw_gbps": [2000, 4800]}}, "a100-sxm4-80g"],
    }
    pts = points(spec)
    assert sorted({p["m"] for p in pts}) == [1, 10, 102, 1024]
    assert sorted({p["k"] for p in pts}) == [512, 768, 1088]
    assert {pattern_text(p["weight"]) for p in pts} == {
        "unstructured@0.5", "unstructured@0.1", "block16x16@0.25", "block32x32@0.25"}
    assert {pattern_text(p["activation"]) for p in pts} == {"dense", "activation@0.5"}
    assert {p["hw_variant"] for p in pts} == {
        "h100-sxm[hbm_bw_gbps=2000]", "h100-sxm[hbm_bw_gbps=4800]", "a100-sxm4-80g"}
    assert len(pts) == 4 * 1 * 3 * 4 * 2 * 3


def test_planned_keys_equal_point_key():
    spec = {**GEMM_SPEC, "workloads": [{"name": "llama-2-7b", "batch": [1, 2], "kv_len": 64}],
            "hardware": [{"h100-sxm": {"hbm_bw_gbps": [2000, 4800]}}, "v100"]}
    pts = points(spec)
    assert all(p["key"] == point_key(p) for p in pts)
    assert not any(k.startswith("_") or k == "hw_ref" for k in sweep(GEMM_SPEC).columns)


def test_point_key_is_stable_and_canonical():
    inputs = {"source": "gemm", "m": 1, "n": 2, "k": 4, "weight": {"pattern": "nm", "n": 2, "m": 4}}
    reordered = dict(reversed(list(inputs.items())))
    assert point_key(inputs, "0.1.0") == point_key(reordered, "0.1.0")
    # golden value: changing the canonical form silently would orphan every stored result
    assert point_key(inputs, "0.1.0") == "590e4e461a282e8611fc5ced22511333"
    assert point_key(inputs, "0.2.0") != point_key(inputs, "0.1.0")
    assert point_key({**inputs, "_payload": {"x": 1}}, "0.1.0") == point_key(inputs, "0.1.0")


def test_gemm_rows_match_mapper():
    df = sweep(GEMM_SPEC)
    assert len(df) == 24 and df["error"].isna().all()
    for r in df.sample(6, random_state=0).itertuples():
        op = Op.gemm(r.m, r.n, r.k, weight=r.weight)
        mapping, cost = mappers.best(op, hwmodels.load(r.hardware))
        assert r.t_s == pytest.approx(cost.t_s, rel=1e-12)
        assert r.kernel == mapping.kernel and r.energy_j == pytest.approx(cost.energy_j, rel=1e-12)


def test_workload_point_equals_simulate():
    spec = {"workloads": [{"name": "llama-2-7b", "batch": 2, "seq_len": 1, "phase": "decode", "kv_len": 256}],
            "sparsity": ["dense", "2:4"], "hardware": ["h100-sxm"]}
    df = sweep(spec)
    for r in df.itertuples():
        trace = workloads.get("llama-2-7b", batch=2, seq_len=1, phase="decode", kv_len=256)
        res = simsparse.simulate(workloads.apply_sparsity(trace, r.weight), "h100-sxm")
        assert r.n_ops == len(trace) and r.tokens == 2
        assert r.t_s == pytest.approx(res.total_s, rel=1e-9)
        assert r.energy_j == pytest.approx(res.energy_j, rel=1e-9)


def test_what_if_override_is_applied():
    spec = {"gemms": {"m": 1, "n": 4096, "k": 4096},
            "hardware": [{"h100-sxm": {"hbm_bw_gbps": [1000, 3350]}}]}
    df = sweep(spec).set_index("hw_hbm_bw_gbps")
    direct = mappers.best(Op.gemm(1, 4096, 4096), hwmodels.load("h100-sxm").replace(hbm_bw_gbps=1000))[1]
    assert df.loc[1000, "t_s"] == pytest.approx(direct.t_s)
    assert df.loc[1000, "t_s"] > df.loc[3350, "t_s"]  # a memory-bound GEMV gets slower on less bandwidth
    assert df.loc[1000, "hw_fp"] != df.loc[3350, "hw_fp"]


def test_forced_kernel_falls_back_where_illegal():
    spec = {"gemms": {"m": 16, "n": 1024, "k": 1024}, "sparsity": ["dense", "2:4"],
            "hardware": ["h100-sxm"], "mapper": ["auto", "cusparselt"]}
    df = sweep(spec).set_index(["weight", "mapper"])
    assert df.loc[("2:4", "cusparselt"), "kernel"] == "cusparselt"
    assert df.loc[("dense", "cusparselt"), "kernel"] == df.loc[("dense", "auto"), "kernel"]


def test_bad_points_become_error_rows():
    spec = {"gemms": {"m": 8, "n": 64, "k": [64, 66]}, "sparsity": ["2:4"], "hardware": ["h100-sxm"]}
    df = sweep(spec).set_index("k")
    assert pd.isna(df.loc[64, "error"]) and df.loc[64, "t_s"] > 0
    assert "multiple of m=4" in df.loc[66, "error"]


def test_sampling_is_seeded_and_sized():
    base = {**GEMM_SPEC, "gemms": {"m": [1, 2, 4, 8, 16, 32], "n": [256, 512, 1024], "k": [256, 512]}}
    for method in ("random", "lhs"):
        a = points({**base, "sampling": {"method": method, "n": 20, "seed": 1}})
        b = points({**base, "sampling": {"method": method, "n": 20, "seed": 1}})
        c = points({**base, "sampling": {"method": method, "n": 20, "seed": 2}})
        assert [p["key"] for p in a] == [p["key"] for p in b]
        assert [p["key"] for p in a] != [p["key"] for p in c]
        assert 10 <= len(a) <= 20 and (method == "lhs" or len(a) == 20)
    lhs = points({**base, "sampling": {"method": "lhs", "n": 6, "seed": 0}})
    assert len({p["m"] for p in lhs}) == 6  # Latin hypercube: each of the 6 m levels once


def test_store_resume_skips_finished_points(tmp_path):
    out = tmp_path / "res"
    st1: dict = {}
    first = sweep(GEMM_SPEC, out=out, chunk_size=5, stats=st1)
    assert st1["computed"] == 24 and len(ResultStore(out).parts()) == 5
    st2: dict = {}
    again = sweep(GEMM_SPEC, out=out, stats=st2)
    assert st2["computed"] == 0 and st2["skipped"] == 24
    same_rows(first, again)
    grown = {**GEMM_SPEC, "hardware": ["h100-sxm", "v100", "a100-sxm4-80g"]}
    st3: dict = {}
    bigger = sweep(grown, out=out, stats=st3)
    assert st3["computed"] == 12 and len(bigger) == 36
    assert list(first["key"]) == [k for k in bigger["key"] if k in set(first["key"])]
    assert len(ResultStore(out).read()) == 36


def test_store_ignores_partial_and_corrupt_files(tmp_path):
    store = ResultStore(tmp_path)
    table = rows_to_table([{"key": "a", "t_s": 1.0}, {"key": "b", "t_s": 2.0}])
    store.write(table)
    (tmp_path / ".tmp-999999999-dead.parquet").write_bytes(b"PAR1 half a file")  # writer long gone
    (tmp_path / "part-00000000000000000001-1-bad.parquet").write_bytes(b"PAR1 truncated")
    with pytest.warns(UserWarning, match="unreadable"):
        df = ResultStore(tmp_path).read()
    assert sorted(df["key"]) == ["a", "b"]
    assert not list(tmp_path.glob(".tmp-*")) and list(tmp_path.glob("*.corrupt"))


def test_store_dedupes_by_key_newest_wins(tmp_path):
    store = ResultStore(tmp_path)
    store.write(rows_to_table([{"key": "a", "t_s": 1.0}, {"key": "b", "t_s": 2.0}]))
    store.write(rows_to_table([{"key": "a", "t_s": 3.0}]))
    df = store.read().set_index("key")
    assert len(df) == 2 and df.loc["a", "t_s"] == 3.0
    store.compact()
    assert len(store.parts()) == 1 and store.read().set_index("key").loc["a", "t_s"] == 3.0


def test_failed_points_are_retried_on_resume(tmp_path):
    store = ResultStore(tmp_path)
    pts = points(GEMM_SPEC)
    store.write(rows_to_table([{"key": pts[0]["key"], "error": "AttributeError: transient"}]))
    st: dict = {}
    df = sweep(GEMM_SPEC, out=tmp_path, stats=st)
    assert st["computed"] == 24 and df["error"].isna().all()


def test_workers_give_the_same_rows(tmp_path):
    spec = {**GEMM_SPEC, "workloads": [{"name": "llama-2-7b", "batch": 1, "seq_len": 1, "kv_len": 128}]}
    inproc = sweep(spec)
    procs = sweep(spec, out=tmp_path, workers=2, chunk_size=4)
    same_rows(inproc, procs)
    assert list(inproc["key"]) == list(procs["key"])  # the spec's point order, whoever ran them


def test_simsparse_sweep_is_callable_either_way():
    import importlib

    mod = importlib.import_module("simsparse.sweep")
    spec = {"gemms": {"m": 1, "n": 256, "k": 256}, "hardware": ["h100-sxm"]}
    assert len(simsparse.sweep(spec)) == 1
    assert len(mod(spec)) == 1


def test_rows_to_table_types():
    t = rows_to_table([{"key": "a", "m": 1, "kv_len": None, "t_s": 1}, {"key": "b", "m": 2, "hw_x": 3}])
    assert t.schema.field("m").type == pa.int64() and t.schema.field("kv_len").type == pa.int64()
    assert t.schema.field("t_s").type == pa.float64() and t.schema.field("hw_x").type == pa.float64()


def test_trace_and_hf_config_workloads(tmp_path):
    trace = workloads.apply_sparsity(workloads.get("llama-2-7b", batch=1, seq_len=1, phase="decode",
                                                   kv_len=64), "2:4")
    trace.save(tmp_path / "t.json")
    from workloads.hf import CONFIG_DIR

    cfg = json.loads((CONFIG_DIR / "llama-2-7b.json").read_text())
    cfg.update(num_hidden_layers=2, _name_or_path="tiny-llama")
    (tmp_path / "cfg.json").write_text(json.dumps(cfg))
    spec = {"workloads": [{"trace": "t.json"}, {"hf_config": "cfg.json", "batch": [1, 2], "seq_len": 16,
                                                 "phase": "prefill"}],
            "sparsity": ["as-traced"], "hardware": ["h100-sxm"]}
    (tmp_path / "s.yaml").write_text(json.dumps(spec))  # JSON is YAML; paths resolve next to the spec
    df = sweep(tmp_path / "s.yaml")
    assert df["error"].isna().all() and len(df) == 3
    by = df.set_index(["workload", "batch"])
    assert by.loc[("tiny-llama", 2), "tokens"] == 32
    res = simsparse.simulate(trace, "h100-sxm")
    assert df[df.workload == trace.name]["t_s"].iloc[0] == pytest.approx(res.total_s, rel=1e-9)


def test_trace_dedupe_keeps_ops_that_differ_only_in_meta(tmp_path):
    from simsparse.core.ops import Trace
    from simsparse.sweep import _Evaluator

    a = Op.gemm(64, 1024, 1024, name="layers.0.x")
    b = Op.gemm(64, 1024, 1024, name="layers.1.x")
    c = Op.gemm(64, 1024, 1024, name="layers.2.x")
    c.meta["expert_tokens"] = [40, 24]
    Trace("t", (a, b, c)).save(tmp_path / "t.json")
    pt = points({"workloads": [{"trace": str(tmp_path / "t.json")}], "hardware": ["h100-sxm"]})[0]
    got = sorted((meta, n) for _, meta, n in _Evaluator().ops(pt))
    assert got == [("", 2), ('{"expert_tokens":[40,24]}', 1)]
