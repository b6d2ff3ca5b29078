"""Throughput of `simsparse predict`: 10,000 random GEMM lines through the CLI, on one core.

    python benchmarks/predict_10k.py [--lines 10000] [--seed 0] [--repeat-shapes]

Lines draw the hardware (H100, H200, A100, V100), M log-uniform in 1..16384, (N, K) from LLM
and ResNet layer shapes, dtype fp16/bf16 and a weight pattern (dense, 2:4, unstructured or
block at a random density, activation-sparse GEMV) independently, so almost every line is a
new op (the per-op memo seldom hits; `--repeat-shapes` draws M from 8 values instead).
The CLI runs single-threaded (BLAS threads = 1; `--pin` adds `taskset -c 0`). Prints lines/s
for the whole run (interpreter start included) and for the answering alone, by wall clock and
by the child's CPU time (user + sys: the one-core cost, robust to other load on the machine).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import resource
import shutil
import subprocess
import sys
import tempfile
import time

SHAPES = [(4096, 4096), (11008, 4096), (4096, 11008), (14336, 4096), (4096, 14336), (8192, 8192),
          (28672, 8192), (8192, 28672), (1024, 8192), (2048, 2048), (8192, 2048), (768, 768),
          (3072, 768), (768, 3072), (256, 2304), (512, 4608), (1024, 256), (2048, 512)]
HARDWARE = ["h100-sxm", "h200", "a100-sxm4-80g", "v100"]


def random_line(rng: random.Random, repeat_shapes: bool) -> dict:
    n, k = rng.choice(SHAPES)
    m = rng.choice([1, 8, 16, 64, 128, 512, 2048, 8192]) if repeat_shapes else int(2 ** rng.uniform(0, 14))
    hw = rng.choice(HARDWARE)
    dtype = "fp16" if hw == "v100" else rng.choice(["fp16", "bf16"])
    line: dict = {"hardware": hw, "op": {"kind": "gemm", "m": m, "n": n, "k": k, "dtype": dtype}}
    kind = rng.random()
    if kind < 0.3:
        pass
    elif kind < 0.55:
        line["weight"] = {"pattern": "2:4"}
    elif kind < 0.8:
        line["weight"] = {"pattern": "unstructured", "density": round(rng.uniform(0.01, 0.6), 3)}
    elif kind < 0.95:
        b = rng.choice([16, 32])
        line["weight"] = {"pattern": "block", "block": [b, b], "density": round(rng.uniform(0.05, 0.6), 3)}
    else:
        line["op"]["m"] = 1
        line["activation"] = {"density": round(rng.uniform(0.05, 0.9), 3)}
    return line


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--lines", type=int, default=10_000)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeat-shapes", action="store_true")
    ap.add_argument("--pin", action="store_true", help="pin the CLI to core 0 with taskset")
    args = ap.parse_args()
    rng = random.Random(args.seed)
    lines = [json.dumps(random_line(rng, args.repeat_shapes)) for _ in range(args.lines)]
    with tempfile.NamedTemporaryFile("w", suffix=".jsonl", delete=False) as f:
        f.write("\n".join(lines) + "\n")
        path = f.name
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
    pin = ["taskset", "-c", "0"] if args.pin and shutil.which("taskset") else []
    cli = [sys.executable, "-m", "simsparse", "predict", "--input", path]

    def run(cmd: list[str]) -> tuple[subprocess.CompletedProcess, float, float]:
        before = resource.getrusage(resource.RUSAGE_CHILDREN)
        t0 = time.perf_counter()
        proc = subprocess.run(cmd, env=env, capture_output=True, text=True, check=False)
        wall = time.perf_counter() - t0
        after = resource.getrusage(resource.RUSAGE_CHILDREN)
        cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
        return proc, wall, cpu

    # interpreter + import cost alone, to separate it from answering
    _, wall0, cpu0 = run([*pin, *cli[:-2], "--input", os.devnull])
    proc, wall, cpu = run([*pin, *cli])
    os.unlink(path)
    outs = [json.loads(x) for x in proc.stdout.splitlines()]
    errors = sum("error" in o for o in outs)
    n = len(lines)
    print(f"{len(outs)} answers ({errors} errors) for {n} lines")
    print(f"  wall: {wall:.2f} s ({n / wall:,.0f} lines/s; start-up {wall0:.2f} s, answering "
          f"{(wall - wall0) / n * 1e6:.0f} us/line)")
    print(f"  cpu:  {cpu:.2f} s ({n / cpu:,.0f} lines/s; start-up {cpu0:.2f} s, answering "
          f"{(cpu - cpu0) / n * 1e6:.0f} us/line = {n / max(cpu - cpu0, 1e-9):,.0f} lines/s)")
    return 0 if len(outs) == len(lines) and errors == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
