"""Plots: each writes a readable PNG; the tables behind them (speed-ups, Pareto front) are right."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
import pandas as pd
import pytest

from simsparse import plot
from simsparse.sweep import sweep

PNG = b"\x89PNG\r\n\x1a\n"


def is_png(path, min_bytes=5_000) -> bool:
    data = path.read_bytes()
    return data[:8] == PNG and len(data) >= min_bytes


@pytest.fixture(scope="module")
def llama_sweep():
    spec = {"workloads": [{"name": "llama-2-7b", "batch": [1, 16], "seq_len": 1, "phase": "decode",
                           "kv_len": 256}],
            "sparsity": ["dense", "2:4", "unstructured@0.2"], "hardware": ["h100-sxm", "v100"]}
    return sweep(spec)


@pytest.fixture(scope="module")
def trace_frame():
    return plot._trace_frames("llama-2-7b", ["h100-sxm"], ["dense", "2:4"], batch=4, seq_len=1,
                              phase="decode", kv_len=256)


def test_speedup_bars_still_works(tmp_path):
    table = pd.DataFrame({"hardware": ["a", "a", "b", "b"], "sparsity": ["dense", "2:4"] * 2,
                          "total_s": [2e-3, 1e-3, 4e-3, 3e-3], "speedup": [1, 2, 1, 4 / 3]})
    assert is_png(plot.speedup_bars(table, tmp_path / "sub" / "bars.png", title="t", baseline="dense"))


def test_roofline_and_breakdown(tmp_path, trace_frame):
    assert is_png(plot.roofline(trace_frame[trace_frame.sparsity == "2:4"], "h100-sxm", tmp_path / "r.png"))
    assert is_png(plot.breakdown(trace_frame, tmp_path / "b.png", title="llama"))


def test_speedup_table_pairs_each_row_with_its_dense_twin(llama_sweep):
    sp = plot.speedup_table(llama_sweep)
    assert (sp.loc[sp.weight == "dense", "speedup"] == 1.0).all()
    for r in sp[sp.weight != "dense"].itertuples():
        twin = llama_sweep[(llama_sweep.weight == "dense") & (llama_sweep.hardware == r.hardware) &
                           (llama_sweep.batch == r.batch)]
        assert r.speedup == pytest.approx(twin.t_s.iloc[0] / r.t_s)


def test_heatmap_and_pareto(tmp_path, llama_sweep):
    assert is_png(plot.speedup_heatmap(llama_sweep, tmp_path / "h.png", title="llama decode"))
    assert is_png(plot.pareto(llama_sweep, tmp_path / "p.png"))
    with pytest.raises(ValueError, match="baseline"):
        plot.speedup_heatmap(llama_sweep, tmp_path / "x.png", baseline="1:8")


def test_pareto_front_is_the_non_dominated_set():
    df = pd.DataFrame({"t_s": [1, 2, 3, 2, 4], "energy_j": [5, 3, 1, 4, 0.5], "name": list("abcde")})
    assert list(plot.pareto_front(df)["name"]) == ["a", "b", "c", "e"]
    rng = np.random.default_rng(0)
    big = pd.DataFrame({"t_s": rng.random(200), "energy_j": rng.random(200)})
    front = plot.pareto_front(big)
    for r in big.itertuples():  # nothing on the front is dominated by any point
        dominated = (front.t_s >= r.t_s) & (front.energy_j >= r.energy_j) & \
                    ((front.t_s > r.t_s) | (front.energy_j > r.energy_j))
        assert not dominated.any()


def test_validation_scatter_and_error_stats(tmp_path):
    df = pd.DataFrame({"predicted_s": [1e-5, 2e-4, 3e-3, 1e-2], "measured_s": [1e-5, 1e-4, 3e-3, 2e-2],
                       "kernel": ["cublas", "cusparselt"] * 2})
    st = plot.error_stats(df)
    assert st["n"] == 4 and st["mape"] == pytest.approx((0 + 1 + 0 + 0.5) / 4)
    assert st["within_25pct"] == 0.5
    assert is_png(plot.validation_scatter(df, tmp_path / "v.png", color="kernel"))
    assert is_png(plot.validation_scatter(df.iloc[:0], tmp_path / "empty.png"), 2_000)
    with pytest.raises(ValueError, match="measured_s"):
        plot.validation_scatter(df.drop(columns="measured_s"), tmp_path / "bad.png")


def test_plot_cli(tmp_path, llama_sweep):
    llama_sweep.to_parquet(tmp_path / "res.parquet")
    pd.DataFrame({"predicted_s": [1e-4, 2e-4], "measured_s": [1.1e-4, 1.5e-4]}).to_csv(tmp_path / "v.csv")

    def run(*args):
        return subprocess.run([sys.executable, "-m", "simsparse", "plot", *args], capture_output=True,
                              text=True, timeout=120)

    for kind, src in (("heatmap", tmp_path / "res.parquet"), ("validation", tmp_path / "v.csv"),
                      ("roofline", "llama-2-7b")):
        p = run(kind, str(src), "--out", str(tmp_path / f"{kind}.png"), "--batch", "1", "--kv-len", "128")
        assert p.returncode == 0, p.stderr
        assert is_png(tmp_path / f"{kind}.png")
    p = run("sankey", "x")
    assert p.returncode == 2 and "kind: got 'sankey'; allowed: roofline" in p.stderr
