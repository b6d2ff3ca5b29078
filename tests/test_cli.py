"""The CLI: commands work, bad input prints one clear line (exit 2) and never a traceback."""

import json
import subprocess
import sys

import pytest


def run(*args, stdin=None):
    return subprocess.run([sys.executable, "-m", "simsparse", *args], input=stdin, capture_output=True,
                          text=True, timeout=300)


def test_list_shows_hardware_and_kernels():
    p = run("list")
    assert p.returncode == 0, p.stderr
    for name in ("h100-sxm", "a100-sxm4-80g", "cusparselt", "2:4", "llama-2-7b"):
        assert name in p.stdout


def test_simulate_json_and_plot(tmp_path):
    plot = tmp_path / "p.png"
    p = run("simulate", "llama-2-7b", "-H", "h100-sxm", "-s", "dense", "-s", "2:4", "--batch", "1",
            "--json", "--plot", str(plot), "--csv", str(tmp_path / "ops.csv"))
    assert p.returncode == 0, p.stderr
    rows = [json.loads(x) for x in p.stdout.splitlines()]
    assert {r["sparsity"] for r in rows} == {"dense", "2:4"}
    assert all(r["total_s"] > 0 for r in rows)
    assert plot.stat().st_size > 1000 and (tmp_path / "ops.csv").exists()


def test_simulate_measured_only_raises_the_measured_share(tmp_path):
    def rows(*extra):
        p = run("simulate", "llama-2-7b", "-H", "h200", "-s", "dense", "-s", "unstructured@0.1", "--batch", "16",
                "--json", "--plot", str(tmp_path / "m.png"), *extra)
        assert p.returncode == 0, p.stderr
        return {r["sparsity"]: r for r in map(json.loads, p.stdout.splitlines())}

    auto, only = rows(), rows("--measured-only")
    for pat in ("dense", "unstructured@0.1"):
        assert only[pat]["measured_share"] >= auto[pat]["measured_share"]
        assert only[pat]["total_s"] >= auto[pat]["total_s"]  # a narrower search is never faster
    assert auto["unstructured@0.1"]["measured_share"] < 0.9 < only["unstructured@0.1"]["measured_share"]


def test_simulate_trace_file(tmp_path):
    from simsparse.core.ops import Op, Trace

    path = Trace("t", (Op.gemm(16, 256, 512, weight="2:4"),)).save(tmp_path / "t.json")
    p = run("simulate", str(path), "-H", "a100-sxm4-80g", "--json", "--plot", str(tmp_path / "x.png"))
    assert p.returncode == 0, p.stderr
    assert json.loads(p.stdout.splitlines()[0])["ops"] == 1


@pytest.mark.parametrize("args,needle", [
    (("simulate", "-H", "h100-smx"), "did you mean h100-sxm"),
    (("simulate", "-s", "5:4", "-H", "h100-sxm"), "n <= m"),
    (("simulate", "-s", "unstructured@1.5", "-H", "h100-sxm"), "density"),
    (("simulate", "no-such-model"), "workload"),
    (("simulate", "missing.json"), "trace file"),
    (("list", "gpus"), "what"),
])
def test_bad_input_is_one_line(args, needle):
    p = run(*args)
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert needle in p.stderr
    assert "Traceback" not in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_usage_errors_have_no_traceback():
    for args in (("no-such-command",), ("simulate", "--no-such-option")):
        p = run(*args)
        assert p.returncode == 2 and "Traceback" not in p.stderr, p.stderr
        assert "No such" in p.stderr


def test_malformed_trace_file(tmp_path):
    bad = tmp_path / "bad.json"
    bad.write_text('{"ops": [{"kind": "gemm", "m": 4}')
    p = run("simulate", str(bad))
    assert p.returncode == 2 and "valid JSON" in p.stderr and "Traceback" not in p.stderr
