"""Benchmark: the CPU mapper's pixel block with a small remainder folded in, against the plain split.

    python benchmarks/cpu_pixel_blocks.py [--quick] [--core 1] [--json OUT]

`mappers.cpu.numba_block` fills half of L2 with the X[K, block] panel; where that leaves one full
block and a remainder narrower than REMAINDER_MIN of it (289 pixels = 256 + 33), it runs one block
instead. This benchmark times both blocks on every layer shape of the measurement tables where the
rule changes the block, for the numba CSR, bitmap, BSR 4x1 and 2:4 kernels, with the measurement
protocol of `simsparse measure --device cpu` (one pinned core, operands rotated over copies, median
of repeats >= 0.2 s) and the two blocks interleaved (A B A B A B, median of the three medians each)
so that a drift of the machine hits both alike.

Prints one row per point (time with each block, ratio folded / split: < 1 means folding is faster)
and a summary: the median ratio and the share of points where folding is not slower than 3 %.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

for _k in ("OPENBLAS_NUM_THREADS", "OMP_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_k, "1")

import numpy as np  # noqa: E402

from mappers.cpu import numba_block  # noqa: E402
from simsparse.measure_cpu import TABLES, Point, build, caches, pin, time_call, warm_up  # noqa: E402

KERNELS = (("cpu_csr", {"pattern": "unstructured", "density": 0.05}),
           ("cpu_csr", {"pattern": "unstructured", "density": 0.2}),
           ("cpu_bitmap", {"pattern": "unstructured", "density": 0.2}),
           ("cpu_bsr", {"pattern": "block", "block": [4, 1], "density": 0.2}),
           ("cpu_nm", {"pattern": "nm", "n": 2, "m": 4}))
ROUNDS = 3


def changed_shapes(l2: int) -> list[tuple[int, int, int, int, int]]:
    """(m, n, k, split block, folded block) for every table shape whose block the fold changes."""
    out = set()
    for table in TABLES.values():
        for _, layers in table:
            for k, n, m in layers:
                split, folded = numba_block(m, k, 4, l2, 1, remainder_min=0.0), numba_block(m, k, 4, l2, 1)
                if split != folded:
                    out.add((m, n, k, split, folded))
    return sorted(out)


def bench(shapes: list[tuple[int, int, int, int, int]], kernels, min_s: float) -> list[dict]:
    rows = []
    for m, n, k, split, folded in shapes:
        for kernel, pattern in kernels:
            pt = Point(kernel, m, n, k, pattern, "pixel-blocks")
            fa, ca, facts_a = build(pt, mb=split)
            fb, cb, facts_b = build(pt, mb=folded)
            assert facts_a["rel_err"] < 1e-4 and facts_b["rel_err"] < 1e-4, "kernel disagrees with numpy"
            ta, tb = [], []
            for _ in range(ROUNDS):
                ta.append(time_call(fa, ca, min_s)["t_median_s"])
                tb.append(time_call(fb, cb, min_s)["t_median_s"])
            t_split, t_fold = float(np.median(ta)), float(np.median(tb))
            rows.append({"m": m, "n": n, "k": k, "kernel": kernel, "weight": pattern, "mb_split": split,
                         "mb_folded": folded, "rotation_copies": ca, "split_us": t_split * 1e6,
                         "folded_us": t_fold * 1e6, "ratio": t_fold / t_split,
                         "rounds_split_us": [t * 1e6 for t in ta], "rounds_folded_us": [t * 1e6 for t in tb]})
            r = rows[-1]
            label = pattern.get("density", "2:4")
            print(f"{m:6d} {n:5d} {k:5d} {kernel:10s} {label!s:5s} mb {split:5d} -> {folded:5d}  "
                  f"{r['split_us']:9.1f} {r['folded_us']:9.1f} us  ratio {r['ratio']:.3f}", flush=True)
    return rows


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2 shapes, CSR only")
    ap.add_argument("--core", type=int, default=1)
    ap.add_argument("--min-s", type=float, default=0.2)
    ap.add_argument("--json", help="write the rows and the summary here")
    a = ap.parse_args(argv)
    pin(a.core)
    l2 = next((c["size_bytes"] for c in caches() if c["level"] == 2), 2**20)
    shapes, kernels = changed_shapes(l2), KERNELS
    if a.quick:
        shapes, kernels = shapes[:2], KERNELS[:1]
    warm_up()
    load0 = open("/proc/loadavg").read().split()[0]
    t0 = time.time()
    print(f"pixel block folded vs split (fp32, 1 core, L2 {l2} B): {len(shapes)} shapes x {len(kernels)} kernels")
    rows = bench(shapes, kernels, a.min_s)
    load1 = open("/proc/loadavg").read().split()[0]
    ratios = np.array([r["ratio"] for r in rows])
    summary = {"points": len(rows), "median_ratio": float(np.median(ratios)), "min_ratio": float(ratios.min()),
               "max_ratio": float(ratios.max()), "share_not_slower_3pct": float(np.mean(ratios <= 1.03)),
               "share_faster": float(np.mean(ratios < 1.0)), "load": [load0, load1],
               "wall_s": round(time.time() - t0, 1)}
    print(f"median folded/split {summary['median_ratio']:.3f} (min {summary['min_ratio']:.3f}, "
          f"max {summary['max_ratio']:.3f}); faster at {summary['share_faster']:.0%}, not slower than 3 % at "
          f"{summary['share_not_slower_3pct']:.0%} of {len(rows)} points; load {load0} -> {load1}")
    if a.json:
        with open(a.json, "w") as fh:
            json.dump({"what": "pixel block folded (mappers.cpu.numba_block, REMAINDER_MIN) vs split "
                               "(remainder_min=0), benchmarks/cpu_pixel_blocks.py",
                       "time_utc": time.strftime("%Y-%m-%dT%H:%MZ", time.gmtime()), "summary": summary,
                       "rows": rows}, fh, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
