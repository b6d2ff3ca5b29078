"""Which predicted numbers rest on kernels timed on that machine (spec.measured_kernels, hwmodels.measured).

The lists in the specs are checked against the measurement files themselves: every (kernel, dtype) the
host campaigns or the H200 campaigns timed, and nothing else."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import hwmodels
import mappers
from hwmodels import cpu as cpu_model
from simsparse import simulate
from simsparse.api import OpResult, SimResult
from simsparse.core.ops import Op, Trace
from simsparse.core.sparsity import Unstructured
from simsparse.predict import predict_obj


def _as_sets(measured: dict[str, list[str]]) -> dict[str, set[str]]:
    return {k: set(v) for k, v in measured.items()}


def test_host_list_is_what_the_host_campaigns_timed():
    from simsparse.measure_cpu import load_rows

    timed: dict[str, set[str]] = {}
    for r in load_rows(None):
        timed.setdefault(r["kernel"], set()).add(r["dtype"])
        assert (r.get("mapping") or {}).get("threads", 1) == cpu_model.MEASURED_THREADS
    assert _as_sets(hwmodels.load("host").measured_kernels) == timed


def test_h200_list_is_what_the_h200_campaigns_timed():
    from simsparse import validate

    timed: dict[str, set[str]] = {}
    for c in validate.load("validation/data/h200").cases:
        timed.setdefault(c.kernel, set()).add(c.op.dtype)
    assert _as_sets(hwmodels.load("h200").measured_kernels) == timed


def test_measured_needs_kernel_dtype_and_run_conditions():
    host = hwmodels.load("host")
    one = host.replace(threads=1)  # a run condition: still the measured machine
    op = Op.gemm(784, 256, 512, dtype="fp32", weight=Unstructured(0.1))
    csr1, _ = mappers.best(op, one, kernel="cpu_csr")
    assert hwmodels.measured(op, csr1, one)
    csr2, _ = mappers.best(op, host, kernel="cpu_csr")  # two threads: never timed
    assert csr2.params["threads"] == 2 and not hwmodels.measured(op, csr2, host)
    xnn, _ = mappers.best(op, one, kernel="xnn_spmm")  # XNNPACK: priced, never timed here
    assert not hwmodels.measured(op, xnn, one)
    bf16 = Op.gemm(784, 256, 512, dtype="bf16", weight=Unstructured(0.1))
    assert not hwmodels.measured(bf16, mappers.best(bf16, one, kernel="cpu_csr")[0], one)
    # any other what-if is another machine
    slower = one.replace(dram_bw_gbps=10.0)
    assert slower.measured_kernels == {} and not hwmodels.measured(op, csr1, slower)
    # a spec nobody measured
    sd = hwmodels.load("snapdragon-835").replace(threads=1)
    assert not hwmodels.measured(op, mappers.best(op, sd, kernel="cpu_csr")[0], sd)


def test_measured_share_is_the_time_on_measured_kernels():
    one = hwmodels.load("host").replace(threads=1)
    a = Op.gemm(784, 256, 512, dtype="fp32", weight=Unstructured(0.1), name="a")
    b = Op.gemm(196, 512, 256, dtype="fp32", weight=Unstructured(0.1), name="b")
    ra = OpResult(a, *mappers.best(a, one, kernel="cpu_csr"))
    rb = OpResult(b, *mappers.best(b, one, kernel="xnn_spmm"))
    res = SimResult(Trace("ab", (a, b)), one, (ra, rb))
    ta, tb = ra.cost.t_s, rb.cost.t_s
    assert res.summary()["measured_share"] == pytest.approx(ta / (ta + tb))
    assert res.to_frame()["measured"].tolist() == [True, False]
    assert simulate(Trace("a", (a,)), one, kernel="cpu_csr").summary()["measured_share"] == 1.0


def test_predict_line_says_whether_its_kernel_was_measured():
    line = {"hardware": "h200", "op": {"kind": "gemm", "m": 64, "n": 4096, "k": 4096, "dtype": "fp16"}}
    dense = predict_obj(line)
    assert dense["kernel"] == "cublas" and dense["measured"] is True
    int8 = predict_obj({**line, "op": {**line["op"], "dtype": "int8"}})
    assert "error" not in int8 and int8["measured"] is False  # no int8 kernel was timed on the H200
    other = predict_obj({**line, "hardware": "h100-sxm"})
    assert "error" not in other and other["measured"] is False
    json.dumps(dense)  # plain JSON


def test_sweep_rows_carry_the_measured_share():
    from simsparse.sweep import sweep

    df = sweep({"gemms": {"m": 64, "n": 4096, "k": 4096, "dtype": "fp16"},
                "hardware": ["h200", "h100-sxm"]}).set_index("hardware")
    assert df.loc["h200", "kernel"] == "cublas" and df.loc["h200", "measured_share"] == 1.0
    assert df.loc["h100-sxm", "measured_share"] == 0.0


def test_host_residual_corrects_exactly_the_measured_kernels():
    # the learned correction is trained on host measurements only, so it covers what was measured, except the
    # kernels fitted in a stage of their own (the depthwise convolution: analytic model alone)
    from simsparse.calibrate_cpu import STAGED_KERNELS

    res = json.loads((Path(hwmodels.__file__).parent / "specs" / hwmodels.load("host").residual_file).read_text())
    assert set(res["kernels"]) == set(hwmodels.load("host").measured_kernels) - set(STAGED_KERNELS)
    assert set(STAGED_KERNELS) <= set(hwmodels.load("host").measured_kernels)


# --- mapper="measured": the fastest among the measured mappings -------------------------------------

def _measured_times(op, spec):
    """Every measured kernel's best mapping time for `op`, priced one kernel at a time."""
    out = {}
    for k, dtypes in spec.measured_kernels.items():
        if op.dtype in dtypes and mappers.legal_kernels(op, spec).get(k) is None:
            mapping, cost = mappers.best(op, spec, kernel=k)
            if hwmodels.measured(op, mapping, spec):
                out[k] = cost.t_s
    return out


def test_measured_only_picks_the_fastest_measured_kernel():
    one = hwmodels.load("host").replace(threads=1)
    # the case that needs it: an op whose overall best mapping is on a kernel never measured here (XNNPACK's
    # SpMM, priced by instruction counts). Which densities it wins at moves with each fit by a few per cent
    # against the measured CSR kernel, so the first such op of a density sweep is taken
    candidates = [Op.gemm(784, 256, 512, dtype="fp32", weight=Unstructured(d)) for d in (0.1, 0.05, 0.02, 0.01)]
    picks = [(op, *mappers.best(op, one)) for op in candidates]
    unmeasured = [p for p in picks if not hwmodels.measured(p[0], p[1], one)]
    assert unmeasured, [p[1].kernel for p in picks]
    op, auto, auto_cost = unmeasured[0]
    assert auto.kernel == "xnn_spmm"
    m, c = mappers.best(op, one, measured_only=True)
    times = _measured_times(op, one)
    assert hwmodels.measured(op, m, one) and c.t_s == min(times.values()) and m.kernel == min(times, key=times.get)
    assert c.t_s >= auto_cost.t_s  # a restriction of the search can only be slower


def test_measured_only_falls_back_where_nothing_measured_can_run():
    host = hwmodels.load("host")  # two threads: no mapping on it was measured
    op = Op.gemm(784, 256, 512, dtype="fp32", weight=Unstructured(0.1))
    assert mappers.best(op, host, measured_only=True) == mappers.best(op, host)
    bf16 = Op.gemm(784, 256, 512, dtype="bf16", weight=Unstructured(0.1))  # no bf16 kernel was timed
    one = host.replace(threads=1)
    assert mappers.best(bf16, one, measured_only=True) == mappers.best(bf16, one)
    sd = hwmodels.load("snapdragon-835")  # nothing measured at all
    assert mappers.best(op, sd, measured_only=True) == mappers.best(op, sd)
    # a forced kernel wins over the measured restriction
    assert mappers.best(op, one, kernel="xnn_spmm", measured_only=True)[0].kernel == "xnn_spmm"


def test_simulate_mapper_measured_covers_every_op_a_measured_kernel_can_run():
    import workloads

    one = hwmodels.load("host").replace(threads=1)
    trace = workloads.apply_sparsity(workloads.get("mobilenet_v2", batch=1, dtype="fp32"), "unstructured@0.1")
    auto = simulate(trace, one)
    meas = simulate(trace, one, mapper="measured")
    for ra, rm in zip(auto.results, meas.results, strict=True):
        if _measured_times(rm.op, one):
            assert hwmodels.measured(rm.op, rm.mapping, one) and rm.cost.t_s >= ra.cost.t_s
        else:
            assert rm.mapping == ra.mapping
    assert meas.summary()["measured_share"] > auto.summary()["measured_share"]
    assert meas.total_s >= auto.total_s
    with pytest.raises(ValueError, match="mapper.*measured"):
        simulate(trace, one, mapper="fastest")


def test_sweep_mapper_measured_matches_simulate():
    from simsparse.sweep import sweep

    spec = {"workloads": [{"name": "mobilenet_v2", "batch": 1, "dtype": "fp32"}],
            "sparsity": {"weight": ["unstructured@0.1"]},
            "hardware": [{"host": {"threads": 1}}], "mapper": ["auto", "measured"]}
    df = sweep(spec).set_index("mapper")
    import workloads

    one = hwmodels.load("host").replace(threads=1)
    trace = workloads.apply_sparsity(workloads.get("mobilenet_v2", batch=1, dtype="fp32"), "unstructured@0.1")
    for mapper in ("auto", "measured"):
        s = simulate(trace, one, mapper=mapper).summary()
        row = df.loc[mapper]
        assert row["t_s"] == pytest.approx(s["total_s"], rel=1e-12)
        assert row["measured_share"] == pytest.approx(s["measured_share"], rel=1e-12)
        assert row["kernel"] == s["main_gemm_kernel"] and row["bound"] == s["bound_by_time"]


def test_predict_line_can_ask_for_the_measured_mapping():
    from simsparse.predict import predict_stream

    line = {"hardware": "host", "op": {"kind": "gemm", "m": 784, "n": 256, "k": 512, "dtype": "fp32"},
            "weight": {"pattern": "unstructured", "density": 0.1}}
    op = Op.gemm(784, 256, 512, dtype="fp32", weight=Unstructured(0.1))
    auto = predict_obj(line)
    only = predict_obj({**line, "mapper": "measured"})
    assert auto["t_s"] == mappers.best(op, hwmodels.load("host"))[1].t_s
    assert only["t_s"] == auto["t_s"] and only["measured"] is False  # host runs 2 threads: nothing measured
    gpu = {"hardware": "h200", "op": {"kind": "gemm", "m": 16, "n": 4096, "k": 4096, "dtype": "fp16"},
           "weight": {"pattern": "unstructured", "density": 0.1}}
    a, m = predict_obj(gpu), predict_obj({**gpu, "mapper": "measured"})
    assert a["measured"] is False and m["measured"] is True and m["t_s"] >= a["t_s"]
    # the batched path (GPU prefill) answers as line by line does
    batch = [json.dumps({**gpu, "mapper": "measured", "id": i}) for i in range(3)]
    assert all(r["t_s"] == m["t_s"] and r["kernel"] == m["kernel"] for r in predict_stream(batch))
    bad = predict_obj({**line, "mapper": "fastest"})
    assert bad["error"]["field"] == "mapper" and "measured" in bad["error"]["reason"]
