"""Broken sweep specs: one clear line that names the field, the bad value and what is allowed."""

from __future__ import annotations

import subprocess
import sys

import pytest

from simsparse.core.errors import SpecError
from simsparse.sweep import load_spec

GOOD = """\
gemms:
  - {m: [1, 16], n: 4096, k: 4096}
sparsity: [dense, "2:4"]
hardware: [h100-sxm]
"""

BROKEN = {
    "unknown hardware": (GOOD.replace("[h100-sxm]", "[h100-sxm, h900]"),
                         ["hardware[1]", "'h900'", "allowed:", "h100-sxm", "did you mean"]),
    "bad pattern": (GOOD.replace('[dense, "2:4"]', '[dense, diagonal@0.2]'),
                    ["sparsity.weight[1]", "diagonal", "allowed:", "unstructured"]),
    "n > m": (GOOD.replace('"2:4"', '"4:2"'), ["sparsity.weight[1]", "4:2", "n <= m"]),
    "negative shape": (GOOD.replace("m: [1, 16]", "m: [1, -16]"), ["gemms[0].m", "-16", "positive integers"]),
    "malformed YAML": (GOOD.replace("n: 4096, k: 4096}", "n: 4096, k: 4096"), ["malformed YAML", "line"]),
    "unknown override field": (GOOD.replace("[h100-sxm]", "[{h100-sxm: {hbm_bandwidth: [2000, 4800]}}]"),
                               ["hardware[0].h100-sxm.hbm_bandwidth", "unknown override field", "hbm_bw_gbps"]),
    "bad override value": (GOOD.replace("[h100-sxm]", "[{h100-sxm: {hbm_bw_gbps: [-5]}}]"),
                           ["hardware[0].h100-sxm", "hbm_bw_gbps", "greater than 0"]),
    "unknown top-level field": (GOOD + "hardwares: [v100]\n", ["hardwares", "unknown field", "allowed:"]),
    "unknown gemm field": (GOOD.replace("k: 4096}", "k: 4096, kk: 3}"), ["gemms[0].kk", "unknown field"]),
    "bad density": (GOOD.replace('"2:4"', "{pattern: unstructured, density: [0.5, 1.5]}"),
                    ["sparsity.weight[1]", "1.5", "(0, 1]"]),
    "bad dtype": (GOOD.replace("k: 4096}", "k: 4096, dtype: fp12}"), ["gemms[0].dtype", "fp12", "fp16"]),
    "unknown workload": ("workloads: [llama-9]\nhardware: [h100-sxm]\n", ["workloads[0].name", "llama-9",
                                                                         "llama-2-7b"]),
    "no workloads": ("hardware: [h100-sxm]\n", ["workloads/gemms", "at least one"]),
    "bad mapper": (GOOD + "mapper: [cusparse]\n", ["mapper[0]", "cusparse", "cusparselt"]),
    "bad sampling": (GOOD + "sampling: {method: sobol, n: 5}\n", ["sampling.method", "sobol", "lhs"]),
    "sampling without n": (GOOD + "sampling: {method: lhs}\n", ["sampling.n", "missing"]),
    "bad phase": ("workloads: [{name: llama-2-7b, phase: train}]\nhardware: [h100-sxm]\n",
                  ["workloads[0].phase", "train", "prefill, decode"]),
    "missing trace file": ("workloads: [{trace: nope.json}]\nhardware: [h100-sxm]\n",
                           ["workloads[0].trace", "nope.json"]),
}


@pytest.mark.parametrize("case", list(BROKEN))
def test_broken_spec_names_the_field(case, tmp_path):
    text, needles = BROKEN[case]
    path = tmp_path / "spec.yaml"
    path.write_text(text)
    with pytest.raises(SpecError) as e:
        load_spec(path)
    msg = str(e.value)
    assert "\n" not in msg
    for needle in needles:
        assert needle in msg, f"{case}: {needle!r} not in {msg!r}"


def test_good_spec_loads(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(GOOD)
    assert load_spec(path).hardware == ["h100-sxm"]


def test_cli_prints_one_line_and_exits_2(tmp_path):
    path = tmp_path / "spec.yaml"
    path.write_text(BROKEN["n > m"][0])
    p = subprocess.run([sys.executable, "-m", "simsparse", "sweep", str(path), "--out", str(tmp_path / "o")],
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 2, p.stderr
    assert "Traceback" not in p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1 and "sparsity.weight[1]" in lines[0] and "4:2" in lines[0]
