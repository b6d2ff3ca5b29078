"""Hypothesis fuzzing of the predict contract and the spec loader with hostile input.

>= 1,000 predict lines and >= 300 spec files: no exception escapes, every bad line gets an
error object naming a field, good lines in the same batch still get results.
"""

import json
import math

import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from spec_samples import TINY_GPU_YAML

from hwmodels.spec import SpecError, parse_spec
from simsparse.predict import predict_line

GOOD = {"hardware": "h100-sxm", "op": {"kind": "gemm", "m": 64, "n": 128, "k": 256, "dtype": "fp16"}}

scalars = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70),
                    st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12))
json_values = st.recursive(scalars, lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=8), c,
                                                                                       max_size=4), max_leaves=12)
dims = st.one_of(st.integers(-5, 70000), st.just(2**80), st.floats(-1e3, 1e12), st.text(max_size=4), st.none())
patterns = st.one_of(
    st.sampled_from(["dense", "2:4", "1:4", "4:8", "5:4", "0:4", "2:0", "a:b", "", "unstructured", "block"]),
    st.text(max_size=6))
hostile_line = st.fixed_dictionaries(
    {},
    optional={
        "hardware": st.one_of(st.sampled_from(["h100-sxm", "t4", "v100", "h100", "", "../../etc/passwd"]),
                              json_values),
        "op": st.one_of(st.fixed_dictionaries({}, optional={
            "kind": st.one_of(st.sampled_from(["gemm", "conv2d", "attention", "eltwise", "GEMM"]), json_values),
            "m": dims, "n": dims, "k": dims, "batch": dims,
            "dtype": st.one_of(st.sampled_from(["fp16", "bf16", "int8", "fp8", "tf32", "fp64"]), json_values)}),
            json_values),
        "weight": st.one_of(st.fixed_dictionaries({"pattern": patterns}, optional={
            "density": st.one_of(st.floats(-1, 2), json_values), "block": json_values}), json_values),
        "activation": st.one_of(st.fixed_dictionaries({}, optional={"density": st.floats(-1, 2),
                                                                    "source": st.text(max_size=6)}), json_values),
        "kernel": st.one_of(st.sampled_from(["cublas", "cusparselt", "cusparse_csr", "x"]), json_values),
        "junk": json_values,
    })


def _check_answer(out):
    if "error" in out:
        err = out["error"]
        assert isinstance(err["field"], str) and err["field"], out
        assert isinstance(err["reason"], str) and err["reason"], out
        assert err["field"] != "internal", out  # a deep exception leaked: a bug, not bad input
    else:
        assert math.isfinite(out["t_s"]) and out["t_s"] > 0, out


@settings(max_examples=1000, deadline=None, suppress_health_check=list(HealthCheck))
@given(line=hostile_line, raw_junk=st.one_of(st.none(), st.text(max_size=30)))
def test_predict_survives_hostile_lines(line, raw_junk):
    raw = raw_junk if raw_junk is not None and len(raw_junk) % 3 == 0 else json.dumps(line, allow_nan=True)
    # a batch: good, hostile, good — the good ones must still be answered
    answers = [predict_line(json.dumps(GOOD)), predict_line(raw), predict_line(json.dumps(GOOD))]
    for a in answers:
        _check_answer(a)
    assert "t_s" in answers[0] and "t_s" in answers[2]


SPEC = yaml.safe_load(TINY_GPU_YAML)


@settings(max_examples=300, deadline=None, suppress_health_check=list(HealthCheck))
@given(key=st.sampled_from(sorted(SPEC) + ["junk", "sources", "efficiency"]), value=json_values,
       drop=st.booleans())
def test_spec_loader_survives_hostile_fields(key, value, drop):
    data = dict(SPEC)
    if drop:
        data.pop(key, None)
    else:
        data[key] = value
    try:
        spec = parse_spec(data, where="fuzz.yaml")
    except SpecError as e:
        assert str(e).startswith("fuzz.yaml") and "\n" not in str(e)
        return
    assert spec.dram_bw > 0 and spec.cuda_fp32_peak > 0
    if spec.supports_dtype("fp16"):
        assert spec.peak_flops("fp16") > 0
