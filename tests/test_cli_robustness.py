"""Command-line robustness: bad input and bad output paths get one clear line naming the option,
user text is never read as rich markup, results are never lost to a failing output, and a
validation or sweep with nothing usable in it says so instead of passing or plotting nothing."""

from __future__ import annotations

import hashlib
import json
import math
import subprocess
import sys
from pathlib import Path

import pandas as pd
import pytest

REPO = Path(__file__).resolve().parent.parent
GEMM = {"kind": "gemm", "m": 64, "n": 256, "k": 256, "dtype": "fp32"}


def run(*args, stdin=None, cwd=None):
    return subprocess.run([sys.executable, "-m", "simsparse", *args], input=stdin, capture_output=True,
                          text=True, timeout=300, cwd=cwd)


def one_error_line(p) -> str:
    """The single stderr line of a refused command (exit 2, no traceback)."""
    assert p.returncode == 2, (p.stdout, p.stderr)
    assert "Traceback" not in p.stderr, p.stderr
    lines = [x for x in p.stderr.splitlines() if x.strip()]
    assert len(lines) == 1, p.stderr
    return lines[0]


# --- 1. validate: data with no usable row is an error; a PASS needs data ---------------------------


def _tracked_reports() -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((REPO / "validation" / "reports").glob("h200_*")) if p.is_file()}


def test_validate_garbage_data_is_an_error_and_writes_nothing(tmp_path):
    garbage = tmp_path / "g.jsonl"
    garbage.write_text("garbage\n")
    before = _tracked_reports()
    p = run("validate", "-H", "h200", "--data", str(garbage), cwd=tmp_path)
    line = one_error_line(p)
    assert "data:" in line and "no usable rows" in line and "malformed line" in line
    assert "PASS" not in p.stdout
    assert _tracked_reports() == before
    assert not (tmp_path / "simsparse-out").exists()


def test_calibrate_and_validate_share_the_no_usable_rows_check(tmp_path):
    from simsparse import validate as v

    garbage = tmp_path / "g.jsonl"
    garbage.write_text('garbage\n{"kind": "gemm", "kernel": "cublas", "ok": false}\n')
    with pytest.raises(ValueError, match="no usable rows") as e:
        v.load(garbage)
    assert "malformed line: 1" in str(e.value) and "not ok" in str(e.value)
    p = run("calibrate", "-H", "h200", "--data", str(garbage), "--dry-run", cwd=tmp_path)
    assert "no usable rows" in one_error_line(p)


def test_report_without_data_does_not_pass():
    from simsparse import validate as v

    sign = {"fit": math.nan, "holdout": math.nan, "n_fit": 0, "n_holdout": 0}
    empty = v.Report("h200", ["x.jsonl"], {}, [], sign, {}, {})
    assert not empty.passed()
    # held-out cuBLAS rows within their bound, but no sparse-vs-dense pair to check the sign on
    ok_kernel = {"cublas": {"bound": v.BOUNDS["cublas"], "fit": {"n": 3, "mape": 0.01},
                            "holdout": {"n": 3, "mape": v.BOUNDS["cublas"] / 2}}}
    no_pairs = v.Report("h200", ["x.jsonl"], ok_kernel, [], sign, {}, {})
    assert not no_pairs.passed()
    with_pairs = v.Report("h200", ["x.jsonl"], ok_kernel, [], dict(sign, holdout=1.0, n_holdout=4), {}, {})
    assert with_pairs.passed()
    assert "FAIL" in v.format_report(empty) and "no held-out" in v.format_report(empty)


def test_validate_with_own_data_writes_reports_only_where_asked(tmp_path, monkeypatch):
    """--data given without --plot: reports go to simsparse-out/, never into the package's folder."""
    from simsparse import validate as v

    src = sorted((v.DATA_DIR / "h200").glob("h200-gemm-sparse-*.jsonl*"))
    if not src:
        pytest.skip("no checked-in H200 measurements")
    rows = [ln for ln in v.read_lines(src[0]) if ln.strip() and json.loads(ln).get("kernel") == "cublas"][:20]
    data = tmp_path / "mine.jsonl"
    data.write_text("\n".join(rows) + "\n")
    reports = tmp_path / "package-reports"
    monkeypatch.setattr(v, "REPORT_DIR", reports)
    monkeypatch.chdir(tmp_path)
    rep = v.validate(data, "h200")
    assert not reports.exists()
    assert (tmp_path / "simsparse-out" / "h200_pred_vs_meas.png").is_file()
    assert (tmp_path / "simsparse-out" / "h200_summary.json").is_file()
    assert rep.plot.endswith("h200_pred_vs_meas.png")
    asked = tmp_path / "there" / "p.png"
    v.validate(data, "h200", plot_path=asked)
    assert asked.is_file() and (asked.parent / "h200_summary.json").is_file()


# --- 2. user text is never rich markup or emoji ------------------------------------------------------


@pytest.mark.parametrize("args,needle", [
    (("simulate", "-H", "h100-sxm", "-s", "[/]"), "'[/]'"),
    (("simulate", "-H", "h100-sxm", "-s", "5:4"), ".n:m: got"),
    (("simulate", "-H", ":smile:"), "':smile:'"),
    (("simulate", "-H", "[red]x"), "'[red]x'"),
])
def test_error_line_prints_user_text_verbatim(args, needle):
    line = one_error_line(run(*args))
    assert line.startswith("error: ") and needle in line
    assert "😄" not in line and "Ⓜ" not in line


def test_table_title_prints_trace_name_verbatim(tmp_path):
    from simsparse.core.ops import Op, Trace

    path = Trace("[bold]net[/] :smile:", (Op.gemm(16, 256, 512),)).save(tmp_path / "t.json")
    p = run("simulate", str(path), "-H", "h100-sxm", "--plot", str(tmp_path / "p.png"))
    assert p.returncode == 0, p.stderr
    assert "[bold]net[/] :smile:" in p.stdout


# --- 3. the same machine or pattern twice ---------------------------------------------------------------


def test_simulate_deduplicates_aliases_and_repeated_patterns(tmp_path):
    p = run("simulate", "llama-2-7b", "--batch", "1", "-H", "h100", "-H", "h100-sxm", "-s", "dense", "-s", "dense",
            "-s", "2:4", "--json", "--plot", str(tmp_path / "p.png"))
    assert p.returncode == 0, p.stderr
    rows = [json.loads(x) for x in p.stdout.splitlines()]
    assert sorted((r["hardware"], r["sparsity"]) for r in rows) == [("h100-sxm", "2:4"), ("h100-sxm", "dense")]
    dense = next(r for r in rows if r["sparsity"] == "dense")
    assert dense["speedup"] == 1.0
    assert "h100" in p.stderr and "h100-sxm" in p.stderr and "dense" in p.stderr  # the notes


# --- 4. the default phase suits the workload -------------------------------------------------------------


@pytest.mark.parametrize("workload", ["bert-base", "vit-b-16"])
def test_encoders_default_to_prefill(workload, tmp_path):
    p = run("simulate", workload, "-H", "h100-sxm", "-s", "dense", "--batch", "1", "--json",
            "--plot", str(tmp_path / "p.png"))
    assert p.returncode == 0, p.stderr
    assert "prefill" in json.loads(p.stdout.splitlines()[0])["trace"]


def test_explicit_decode_on_an_encoder_is_still_refused():
    assert "phase" in one_error_line(run("simulate", "bert-base", "-H", "h100-sxm", "--phase", "decode"))


def test_decoder_default_is_still_decode(tmp_path):
    p = run("simulate", "opt-125m", "-H", "h100-sxm", "-s", "dense", "--batch", "1", "--json",
            "--plot", str(tmp_path / "p.png"))
    assert p.returncode == 0, p.stderr
    assert "decode" in json.loads(p.stdout.splitlines()[0])["trace"]


def test_phase_help_lists_train():
    p = run("simulate", "--help")
    assert p.returncode == 0 and "train" in p.stdout


def test_plot_roofline_of_an_encoder_defaults_to_prefill(tmp_path):
    out = tmp_path / "r.png"
    p = run("plot", "roofline", "bert-base", "-o", str(out), "--batch", "1")
    assert p.returncode == 0, p.stderr
    assert out.is_file()


# --- 5. output and input paths ------------------------------------------------------------------------


def test_simulate_csv_in_a_missing_folder_is_created(tmp_path):
    csv = tmp_path / "nodir" / "deeper" / "x.csv"
    p = run("simulate", "llama-2-7b", "--batch", "1", "-H", "h100-sxm", "-s", "dense", "--json",
            "--csv", str(csv), "--plot", str(tmp_path / "p.png"))
    assert p.returncode == 0, p.stderr
    assert len(pd.read_csv(csv)) > 0


def test_simulate_csv_that_cannot_be_written_names_the_option(tmp_path):
    (tmp_path / "a-file").write_text("x")
    for bad in (tmp_path, tmp_path / "a-file" / "x.csv"):  # a directory; a path under a regular file
        p = run("simulate", "llama-2-7b", "--batch", "1", "-H", "h100-sxm", "-s", "dense", "--json",
                "--csv", str(bad), "--plot", str(tmp_path / "p.png"))
        assert "--csv" in one_error_line(p) and str(bad) in p.stderr


@pytest.mark.skipif(not Path("/dev/full").exists(), reason="needs /dev/full (every write fails: disk full)")
def test_simulate_csv_failing_at_write_time_keeps_the_results(tmp_path):
    p = run("simulate", "llama-2-7b", "--batch", "1", "-H", "h100-sxm", "-s", "dense", "--json",
            "--csv", "/dev/full", "--plot", str(tmp_path / "p.png"))
    assert "--csv" in one_error_line(p)
    assert json.loads(p.stdout.splitlines()[0])["total_s"] > 0  # the run is printed before the CSV fails


def test_sweep_csv_in_a_missing_folder_is_created(tmp_path):
    spec = tmp_path / "s.yaml"
    spec.write_text("gemms: [{m: 16, n: 1024, k: 1024}]\nsparsity: [dense]\nhardware: [h100-sxm]\n")
    csv = tmp_path / "nodir" / "x.csv"
    p = run("sweep", str(spec), "--out", str(tmp_path / "o"), "--csv", str(csv), "-q")
    assert p.returncode == 0, p.stderr
    assert len(pd.read_csv(csv)) == 1
    p = run("sweep", str(spec), "--out", str(tmp_path / "o"), "--csv", str(tmp_path), "-q")
    assert "--csv" in one_error_line(p)


@pytest.mark.parametrize("where", ["dir", "missing"])
def test_predict_bad_input_file_names_the_option(where, tmp_path):
    path = tmp_path if where == "dir" else tmp_path / "missing.jsonl"
    line = one_error_line(run("predict", "-i", str(path)))
    assert "--input" in line and str(path) in line


def test_extract_into_a_missing_folder(tmp_path):
    out = tmp_path / "nodir" / "t.json"
    p = run("extract", "opt-125m", "-o", str(out), "--seq-len", "8", "--rows", "1")
    assert p.returncode == 0, p.stderr
    assert json.loads(out.read_text())["ops"]
    (tmp_path / "a-file").write_text("x")
    assert "--out" in one_error_line(run("extract", "opt-125m", "-o", str(tmp_path / "a-file" / "t.json")))


def test_plot_without_suffix_reports_the_file_it_wrote(tmp_path):
    p = run("simulate", "llama-2-7b", "--batch", "1", "-H", "h100-sxm", "-s", "dense", "--plot",
            str(tmp_path / "p"))
    assert p.returncode == 0, p.stderr
    assert (tmp_path / "p.png").is_file()
    assert f"plot written to {tmp_path / 'p.png'}" in p.stdout.replace("\n", "")


# --- 6. predict: every promised field on every line; one output line per input line ------------------


def test_predict_cpu_and_gpu_lines_carry_bytes_hbm():
    from simsparse.predict import predict_stream

    lines = [json.dumps({"hardware": hw, "op": GEMM}) for hw in ("h100-sxm", "host", "snapdragon-835")]
    outs = list(predict_stream(lines))
    promised = ("t_s", "cycles", "kernel", "mapping", "measured", "bound", "flops", "bytes_hbm", "utilisation",
                "energy_j")
    # compulsory off-chip traffic: x[M,K], W[N,K] read and y[M,N] written once, 4 bytes each (fp32)
    compulsory = (64 * 256 + 256 * 256 + 64 * 256) * 4
    for out in outs:
        assert "error" not in out, out
        assert all(f in out for f in promised), (out["hardware"], sorted(out))
        assert out["bytes_hbm"] >= compulsory
    for cpu in outs[1:]:  # a CPU's off-chip memory is its DRAM: both names, one number
        assert cpu["bytes_hbm"] == cpu["bytes_dram"]


def test_predict_answers_blank_lines_so_outputs_line_up():
    good = json.dumps({"hardware": "h100-sxm", "op": GEMM})
    p = run("predict", stdin=f"{good}\n\n{good}\n   \n")
    outs = [json.loads(x) for x in p.stdout.splitlines()]
    assert len(outs) == 4
    assert "t_s" in outs[0] and "t_s" in outs[2]
    assert outs[1]["error"]["field"] == "line" and outs[3]["error"]["field"] == "line"
    assert p.returncode == 1


# --- 7. a forced kernel no machine offers -------------------------------------------------------------


def test_sweep_refuses_a_kernel_no_listed_hardware_offers():
    from simsparse.core.errors import SpecError
    from simsparse.sweep import load_spec

    spec = {"gemms": {"m": 16, "n": 1024, "k": 1024}, "hardware": ["h100-sxm"], "mapper": ["auto", "cpu_csr"]}
    with pytest.raises(SpecError) as e:
        load_spec(spec)
    msg = str(e.value)
    assert "mapper[1]" in msg and "'cpu_csr'" in msg and "cusparselt" in msg and "h100-sxm" in msg


def test_sweep_kernel_of_another_class_is_an_error_row_not_a_silent_fallback():
    from simsparse.sweep import sweep

    df = sweep({"gemms": {"m": 16, "n": 1024, "k": 1024}, "sparsity": ["unstructured@0.1"],
                "hardware": ["h100-sxm", "host"], "mapper": "cpu_csr"})
    gpu, cpu = (df[df.hardware == hw].iloc[0] for hw in ("h100-sxm", "host"))
    assert isinstance(gpu["error"], str) and "cpu_csr" in gpu["error"]
    assert not isinstance(cpu["error"], str) and cpu["kernel"] == "cpu_csr"


def test_simulate_kernel_error_names_the_option():
    line = one_error_line(run("simulate", "-H", "h100-sxm", "--kernel", "cpu_csr"))
    assert "--kernel" in line and "'cpu_csr'" in line and "cusparselt" in line


# --- 8. sweep specs and results with nothing usable -----------------------------------------------------


def test_misspelled_required_sweep_key_is_named():
    from simsparse.core.errors import SpecError
    from simsparse.sweep import load_spec

    with pytest.raises(SpecError) as e:
        load_spec({"gemms": {"m": 16, "n": 1024, "k": 1024}, "hardwre": ["h100-sxm"]})
    msg = str(e.value)
    assert "hardwre" in msg and "unknown field" in msg and "hardware" in msg


@pytest.mark.parametrize("kind", ["heatmap", "pareto"])
def test_plot_of_a_sweep_where_every_point_failed(kind, tmp_path):
    spec = tmp_path / "s.yaml"  # fp8 runs on no kernel of a V100
    spec.write_text("gemms: [{m: [1, 16], n: 4096, k: 4096, dtype: fp8}]\nsparsity: [dense, '2:4']\n"
                    "hardware: [v100]\n")
    assert run("sweep", str(spec), "--out", str(tmp_path / "o"), "-q").returncode == 0
    line = one_error_line(run("plot", kind, str(tmp_path / "o"), "-o", str(tmp_path / "h.png")))
    assert "all 4 points failed" in line and "fp8" in line
