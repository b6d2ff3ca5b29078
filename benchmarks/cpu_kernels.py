"""Benchmark: our numba CSR SpMM vs scipy.sparse CSR vs dense BLAS, on CNN 1x1 shapes; and our numba
depthwise convolution vs torch's (when torch is installed), on MobileNet / EfficientNet depthwise layers.

    python benchmarks/cpu_kernels.py [--quick] [--core 1]

One run prints one table: per (layer shape, sparsity) the time of each implementation and
the ratios scipy/ours and dense/ours (> 1 means ours is faster). All three compute
Y[N, M] = W[N, K] · X[K, M] in fp32 on one pinned core (numba and BLAS 1 thread), median of
repeats (>= 0.2 s each), operands warm in cache (the same for all three). Goal: beat
scipy.sparse at every sparsity, and dense BLAS above 90 % sparsity.

The second table times simsparse.kernels.cpu.depthwise_conv2d (CHW, the kernel cpu_dwconv models) against
torch.nn.functional.conv2d with groups = C (one thread, NCHW fp32) on the same layers, both checked
against numpy; ratio torch/ours > 1 means ours is faster.
"""

from __future__ import annotations

import argparse
import os
import sys

for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import numpy as np  # noqa: E402
import scipy.sparse as sp  # noqa: E402

from mappers.cpu import numba_block  # noqa: E402
from simsparse.core.formats import CSR  # noqa: E402
from simsparse.kernels.cpu import depthwise_conv2d, depthwise_reference, spmm_csr  # noqa: E402
from simsparse.measure_cpu import (  # noqa: E402
    DEPTHWISE,
    MOBILENET_V1_1X1,
    MOBILENET_V2_1X1,
    RESNET50_1X1,
    caches,
    pin,
    time_call,
)

SPARSITIES = (0.5, 0.7, 0.8, 0.9, 0.95, 0.98)


def bench(shapes: list[tuple[int, int, int]], sparsities: tuple[float, ...], min_s: float) -> list[dict]:
    l2 = next((c["size_bytes"] for c in caches() if c["level"] == 2), 2**20)
    rng = np.random.default_rng(0)
    rows = []
    for cin, cout, hw in shapes:
        k, n, m = cin, cout, hw
        x = rng.standard_normal((k, m), dtype=np.float32)
        y = np.empty((n, m), np.float32)
        mb = numba_block(m, k, 4, l2, 1)
        for s in sparsities:
            w = ((rng.random((n, k)) >= s) * rng.standard_normal((n, k))).astype(np.float32)
            ours = CSR.encode(w)
            theirs = sp.csr_matrix(w)
            ref = w @ x
            got = spmm_csr(ours, x, mb, out=y)
            assert np.allclose(got, ref, rtol=1e-3, atol=1e-3), "numba CSR SpMM disagrees with numpy"
            assert np.allclose(theirs @ x, ref, rtol=1e-3, atol=1e-3)
            t_ours = time_call(lambda i, a=ours, b=x, o=y, mb=mb: spmm_csr(a, b, mb, out=o), 1, min_s)["t_median_s"]
            t_scipy = time_call(lambda i, a=theirs, b=x: a @ b, 1, min_s)["t_median_s"]
            t_dense = time_call(lambda i, a=w, b=x, o=y: np.matmul(a, b, out=o), 1, min_s)["t_median_s"]
            rows.append({"shape": f"{cin}->{cout}@{hw}", "sparsity": s, "ours_us": t_ours * 1e6,
                         "scipy_us": t_scipy * 1e6, "dense_us": t_dense * 1e6,
                         "scipy/ours": t_scipy / t_ours, "dense/ours": t_dense / t_ours})
    return rows


def bench_depthwise(layers: list[tuple[int, int, int, int]], min_s: float) -> list[dict]:
    """(C, H, k, stride) layers: our numba CHW depthwise convolution vs torch's grouped conv2d (one thread)."""
    try:
        import torch
        import torch.nn.functional as F
    except ImportError:
        torch = None
    if torch is not None:
        torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    rows = []
    for c, h, k, stride in layers:
        pad = k // 2
        x = rng.standard_normal((c, h, h), dtype=np.float32)
        w = rng.standard_normal((c, k, k), dtype=np.float32)
        oh = (h + 2 * pad - k) // stride + 1
        y = np.empty((c, oh, oh), np.float32)
        ref = depthwise_reference(w, x, stride, pad)
        assert np.allclose(depthwise_conv2d(w, x, stride, pad, out=y), ref, rtol=1e-3, atol=1e-3)
        t_ours = time_call(lambda i, w=w, x=x, s=stride, p=pad, y=y: depthwise_conv2d(w, x, s, p, out=y), 1,
                           min_s)["t_median_s"]
        row = {"layer": f"{c}x{h}x{h} k{k} s{stride}", "ours_us": t_ours * 1e6, "torch_us": float("nan"),
               "torch/ours": float("nan"), "gflops_ours": 2 * c * oh * oh * k * k / t_ours * 1e-9}
        if torch is not None:
            xt, wt = torch.from_numpy(x)[None], torch.from_numpy(w)[:, None]
            with torch.inference_mode():
                assert np.allclose(F.conv2d(xt, wt, stride=stride, padding=pad, groups=c)[0].numpy(), ref,
                                   rtol=1e-3, atol=1e-3)
                t_torch = time_call(lambda i, xt=xt, wt=wt, s=stride, p=pad, c=c:
                                    F.conv2d(xt, wt, stride=s, padding=p, groups=c), 1, min_s)["t_median_s"]
            row.update(torch_us=t_torch * 1e6, **{"torch/ours": t_torch / t_ours})
        rows.append(row)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="3 shapes, 3 sparsities")
    ap.add_argument("--core", type=int, default=1)
    ap.add_argument("--min-s", type=float, default=0.2)
    a = ap.parse_args(argv)
    pin(a.core)
    shapes = sorted(set(MOBILENET_V1_1X1 + MOBILENET_V2_1X1 + RESNET50_1X1), key=lambda s: (-s[2], s[0]))
    sparsities = SPARSITIES
    if a.quick:
        shapes, sparsities = [shapes[2], shapes[len(shapes) // 2], shapes[-1]], (0.5, 0.9, 0.98)
    load0 = open("/proc/loadavg").read().split()[0]
    rows = bench(shapes, sparsities, a.min_s)
    load1 = open("/proc/loadavg").read().split()[0]
    print(f"numba CSR SpMM vs scipy.sparse CSR vs dense BLAS (fp32, 1 core; load {load0} -> {load1})")
    print(f"{'shape (Cin->Cout@HW)':22s} {'sparsity':>8s} {'ours us':>9s} {'scipy us':>9s} {'dense us':>9s} "
          f"{'scipy/ours':>10s} {'dense/ours':>10s}")
    for r in rows:
        print(f"{r['shape']:22s} {r['sparsity']:8.2f} {r['ours_us']:9.1f} {r['scipy_us']:9.1f} {r['dense_us']:9.1f} "
              f"{r['scipy/ours']:10.2f} {r['dense/ours']:10.2f}")
    beat_scipy = all(r["scipy/ours"] > 1 for r in rows)
    hi = [r for r in rows if r["sparsity"] > 0.9]
    beat_dense = all(r["dense/ours"] > 1 for r in hi)
    print(f"beats scipy.sparse at every point: {beat_scipy} "
          f"(min ratio {min(r['scipy/ours'] for r in rows):.2f}); "
          f"beats dense BLAS at every point above 90 % sparsity: {beat_dense} "
          f"(min ratio {min((r['dense/ours'] for r in hi), default=float('nan')):.2f})")
    # the depthwise layers: every 9th of the campaign-31 table (a third of them with --quick)
    layers = DEPTHWISE[::27] if a.quick else DEPTHWISE[::9]
    dw = bench_depthwise(layers, a.min_s)
    print("\nnumba CHW depthwise convolution vs torch conv2d(groups=C) (fp32, 1 core)")
    print(f"{'layer (C x H x W k s)':22s} {'ours us':>9s} {'torch us':>9s} {'torch/ours':>10s} {'ours GFLOP/s':>12s}")
    for r in dw:
        print(f"{r['layer']:22s} {r['ours_us']:9.1f} {r['torch_us']:9.1f} {r['torch/ours']:10.2f} {r['gflops_ours']:12.1f}")
    ratios = [r["torch/ours"] for r in dw if np.isfinite(r["torch/ours"])]  # NaN: torch not installed
    if ratios:
        print(f"torch/ours: min {min(ratios):.2f}, median {float(np.median(ratios)):.2f}, max {max(ratios):.2f}")
    else:
        print("torch is not installed: only our kernel was timed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
