"""The predict contract: one JSON answer per line, bad lines get an error object, good lines a result."""

import json
import math
import subprocess
import sys

import pytest

from simsparse.predict import predict_line, predict_stream

GOOD = {"hardware": "h100-sxm", "op": {"kind": "gemm", "m": 4096, "n": 4096, "k": 4096, "dtype": "fp16"},
        "weight": {"pattern": "2:4"}}


def test_good_line_has_results_and_echo():
    out = predict_line(json.dumps(GOOD))
    assert out["hardware"] == "h100-sxm" and out["weight"] == {"pattern": "2:4"}
    assert out["t_s"] > 0 and out["cycles"] > 0 and out["kernel"] and out["bound"]
    # lower bound from first principles: 2·M·N·K FLOPs at the 2:4 sparse datasheet peak
    assert out["t_s"] >= 2 * 4096**3 / 1978.9e12


def test_forced_kernel_is_used():
    line = dict(GOOD, kernel="cublas")
    assert predict_line(json.dumps(line))["kernel"] == "cublas"


@pytest.mark.parametrize("line,field", [
    ("not json", "line"),
    ("[1, 2]", "line"),
    ({"op": GOOD["op"]}, "hardware"),
    (dict(GOOD, hardware="h100-smx"), "hardware"),
    (dict(GOOD, op={"kind": "gemm", "m": -1, "n": 4, "k": 4}), "op.m"),
    (dict(GOOD, op={"kind": "gemm", "m": 0, "n": 4, "k": 4}), "op.m"),
    (dict(GOOD, op={"kind": "gemm", "m": 4, "n": 4}), "op.k"),
    (dict(GOOD, op={"kind": "gemm", "m": 4, "n": 4, "k": 4, "dtype": "fp64"}), "op.dtype"),
    (dict(GOOD, weight={"pattern": "5:4"}), "weight"),
    (dict(GOOD, weight={"pattern": "unstructured", "density": 1.5}), "weight.density"),
    (dict(GOOD, weight={"pattern": "unstructured"}), "weight.density"),
    (dict(GOOD, weight={"pattern": "block", "block": [16], "density": 0.5}), "weight.block"),
    (dict(GOOD, activation={"density": 0}), "activation"),
    (dict(GOOD, kernel="cusparselt", weight={"pattern": "dense"}), "kernel"),
    (dict(GOOD, kernel="nope"), "kernel"),
    (dict(GOOD, hardware="v100", kernel="cusparselt"), "kernel"),
    (dict(GOOD, extra=1), "extra"),
])
def test_bad_lines_get_error_objects(line, field):
    raw = line if isinstance(line, str) else json.dumps(line)
    out = predict_line(raw)
    assert "error" in out, out
    assert out["error"]["field"].startswith(field), out["error"]
    assert out["error"]["reason"]


def test_cli_predict_mixed_batch_exit_code():
    lines = [json.dumps(GOOD), "{bad", json.dumps(dict(GOOD, weight={"pattern": "unstructured", "density": 0.1}))]
    proc = subprocess.run([sys.executable, "-m", "simsparse", "predict"], input="\n".join(lines) + "\n",
                          capture_output=True, text=True, timeout=120)
    outs = [json.loads(x) for x in proc.stdout.splitlines()]
    assert len(outs) == 3
    assert "t_s" in outs[0] and "error" in outs[1] and "t_s" in outs[2]
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr


def test_stream_answers_blank_lines():
    """One answer per line, so answers line up with lines: a blank line gets an error naming `line`."""
    outs = list(predict_stream(["", json.dumps(GOOD), "   "]))
    assert [("error" in o) for o in outs] == [True, False, True]
    assert outs[0]["error"]["field"] == "line" and "blank" in outs[0]["error"]["reason"]


def test_t_s_is_finite():
    out = predict_line(json.dumps(dict(GOOD, op={"kind": "gemm", "m": 1, "n": 1, "k": 1}, weight={"pattern": "dense"})))
    assert "t_s" in out and math.isfinite(out["t_s"]) and out["t_s"] > 0


def test_cli_predict_answers_each_line_before_the_next_arrives():
    """A client that waits for each answer must not deadlock on batching."""
    proc = subprocess.Popen([sys.executable, "-m", "simsparse", "predict"], stdin=subprocess.PIPE,
                            stdout=subprocess.PIPE, text=True, bufsize=1)
    try:
        for m in (1, 64, 4096):
            proc.stdin.write(json.dumps(dict(GOOD, op={"kind": "gemm", "m": m, "n": 256, "k": 512})) + "\n")
            proc.stdin.flush()
            answer = json.loads(proc.stdout.readline())  # blocks until this line is answered
            assert answer["op"]["m"] == m and answer["t_s"] > 0
    finally:
        proc.stdin.close()
        proc.wait(timeout=60)
    assert proc.returncode == 0


def test_batched_answers_equal_single_answers():
    lines = [json.dumps(dict(GOOD, op={"kind": "gemm", "m": m, "n": n, "k": 1024, "dtype": dt}))
             for m in (1, 16, 300, 4096) for n in (256, 4096) for dt in ("fp16", "bf16")]
    from hwmodels import gpu
    from mappers import gpu as gpu_mapper

    gpu._MEMO.clear()
    gpu_mapper._BEST.clear()
    batched = list(predict_stream(lines))
    gpu._MEMO.clear()
    gpu_mapper._BEST.clear()
    single = [predict_line(x) for x in lines]
    assert batched == single


def test_weight_inside_op_is_used_not_dropped():
    """A weight (or activation) nested in `op` means the same as at the top level; given in both
    places it is an error naming op.weight; a bad nested pattern names op.weight.pattern."""
    nested = {"hardware": "h100-sxm", "op": {**GOOD["op"], "weight": {"pattern": "2:4"}}}
    a, b = predict_line(json.dumps(nested)), predict_line(json.dumps(GOOD))
    assert "error" not in a and a["t_s"] == b["t_s"] and a["kernel"] == b["kernel"]
    both = dict(nested, weight={"pattern": "2:4"})
    assert predict_line(json.dumps(both))["error"]["field"] == "op.weight"
    bad = {"hardware": "h100-sxm", "op": {**GOOD["op"], "weight": {"pattern": "blockyy"}}}
    assert predict_line(json.dumps(bad))["error"]["field"] == "op.weight.pattern"
    act = {"hardware": "h100-sxm", "op": {**GOOD["op"], "activation": {"density": 2.0}}}
    assert predict_line(json.dumps(act))["error"]["field"].startswith("op.activation")
