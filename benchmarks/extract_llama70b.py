"""Time and peak memory of extracting the Llama-2-70B decode trace from its config.

    python benchmarks/extract_llama70b.py          # batch 16, kv 4096 (the acceptance point)

Prints wall time of the extraction (imports excluded, reported separately) and the peak
resident set size of the whole process. Acceptance: < 5 s and < 1 GB.
"""

from __future__ import annotations

import resource
import sys
import time


def peak_rss_mb() -> float:
    """Peak resident set of this process since it started.

    Linux: VmHWM of /proc/self/status, the high-water mark of this program's own address space. Not
    ru_maxrss: that counts the parent's pages the child shared between fork and exec, so a benchmark run
    from a large parent (a pytest worker late in a run) reports the parent's size (a 1.5 GB parent: 1512 MB
    instead of 30 MB)."""
    try:
        with open("/proc/self/status") as fh:
            for line in fh:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) / 2**10  # kB
    except OSError:
        pass
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return rss / 2**20 if sys.platform == "darwin" else rss / 2**10


def main(batch: int = 16, kv_len: int = 4096) -> dict[str, float]:
    t0 = time.perf_counter()
    import workloads

    t1 = time.perf_counter()
    trace = workloads.hf("llama-2-70b", batch=batch, phase="decode", kv_len=kv_len)
    flops = trace.flops
    t2 = time.perf_counter()
    out = {"ops": len(trace), "tflop": flops / 1e12, "import_s": t1 - t0, "extract_s": t2 - t1,
           "peak_rss_mb": peak_rss_mb(), "torch_imported": float("torch" in sys.modules)}
    print(f"llama-2-70b decode b={batch} kv={kv_len}: {out['ops']} ops, {out['tflop']:.3f} TFLOP")
    print(f"import {out['import_s']:.3f} s, extract {out['extract_s']:.4f} s, "
          f"peak RSS {out['peak_rss_mb']:.0f} MB, torch imported: {bool(out['torch_imported'])}")
    return out


if __name__ == "__main__":
    main()
