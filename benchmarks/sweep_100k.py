"""Benchmark: a 100,000-point kernel-level sweep (GEMM shapes × 8 sparsity patterns × 5 GPUs).

    python benchmarks/sweep_100k.py --workers 2          # the acceptance run (< 60 s on 2 cores)
    python benchmarks/sweep_100k.py --workers 0          # in-process
    python benchmarks/sweep_100k.py --points 10000       # a smaller grid, same structure
    python benchmarks/sweep_100k.py --dask-local 2       # through Dask, on a local 2-worker cluster

Prints points/s and where the time went (planning, running, writing the store). Results go
to a fresh temporary store unless --out is given (then a re-run only reads it back).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import tempfile
import time

PATTERNS = ["dense", "2:4", "1:4", "4:8", "unstructured@0.5", "unstructured@0.1", "block16x16@0.3",
            "group8@0.25"]
GPUS = ["h100-sxm", "h200", "a100-sxm4-80g", "v100", "t4"]
# 25 token counts × 10 output widths × 10 reduction lengths = 2,500 shapes (all multiples of 16)
M = [1, 2, 4, 8, 16, 32, 48, 64, 96, 128, 192, 256, 384, 512, 768, 1024, 1536, 2048, 3072, 4096,
     6144, 8192, 12288, 16384, 32768]
N = [256, 512, 1024, 2048, 4096, 5120, 8192, 11008, 14336, 28672]
K = [256, 512, 1024, 2048, 4096, 5120, 8192, 11008, 14336, 28672]


def spec(points: int = 100_000) -> dict:
    """The benchmark spec; `points` < 100,000 trims the M axis (same structure)."""
    per_m = len(N) * len(K) * len(PATTERNS) * len(GPUS)
    m = M[: max(1, min(len(M), points // per_m))]
    return {"name": "sweep_100k", "gemms": [{"m": m, "n": N, "k": K, "dtype": "fp16"}],
            "sparsity": {"weight": PATTERNS}, "hardware": GPUS}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--points", type=int, default=100_000)
    ap.add_argument("--out", default=None, help="store directory (default: a fresh temp dir, removed)")
    ap.add_argument("--chunk-size", type=int, default=None)
    ap.add_argument("--dask", default=None, help="scheduler address, e.g. tcp://host:8786")
    ap.add_argument("--dask-local", type=int, default=0, help="start a LocalCluster of N worker processes")
    ap.add_argument("--quiet", action="store_true")
    args = ap.parse_args()

    import simsparse
    from simsparse.sweep import sweep

    out = args.out or tempfile.mkdtemp(prefix="sweep100k-")
    cluster = None
    dask = args.dask
    if args.dask_local:
        from distributed import LocalCluster

        cluster = LocalCluster(n_workers=args.dask_local, threads_per_worker=1, processes=True,
                               dashboard_address=None)
        dask = cluster.scheduler_address
    stats: dict = {}
    t0 = time.perf_counter()
    load0 = os.getloadavg()[0]
    cpu0 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    try:
        df = sweep(spec(args.points), out=out, workers=args.workers, dask=dask, chunk_size=args.chunk_size,
                   progress=not args.quiet, stats=stats)
    finally:
        if args.out is None:
            shutil.rmtree(out, ignore_errors=True)
        if cluster is not None:
            cluster.close()
    wall = time.perf_counter() - t0
    cpu1 = [resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN)]
    cpu = [(b.ru_utime + b.ru_stime) - (a.ru_utime + a.ru_stime) for a, b in zip(cpu0, cpu1, strict=True)]
    how = f"dask={dask}" if dask else f"workers={args.workers}"
    print(f"simsparse {simsparse.__version__}  python {platform.python_version()}  "
          f"{platform.machine()}  cpus={os.cpu_count()}  {how}")
    print(f"points={len(df):,}  computed={stats['computed']:,}  errors={stats['errors']:,}  "
          f"chunks={stats['chunks']}x{stats['chunk_size']}")
    print(f"plan {stats['plan_s']:.2f} s  run {stats['run_s']:.2f} s  read-back "
          f"{stats['total_s'] - stats['plan_s'] - stats['run_s']:.2f} s  wall {wall:.2f} s")
    print(f"{stats['computed'] / wall:,.0f} points/s end to end "
          f"({stats['points_per_s']:,.0f} points/s while running)")
    print(f"CPU time: this process {cpu[0]:.1f} s, local worker processes {cpu[1]:.1f} s "
          f"({(cpu[0] + cpu[1]) / max(stats['computed'], 1) * 1e6:,.0f} us/point; Dask workers not counted); "
          f"load average {load0:.2f} -> {os.getloadavg()[0]:.2f} (other users of the cores slow the wall time)")


if __name__ == "__main__":
    main()
