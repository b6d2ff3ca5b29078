"""Run a whole CNN trace on this machine's CPU with the kernels the mapper picked, and time it.

The kernel campaigns (``simsparse.measure_cpu``) time one layer at a time with cold operands. A network runs
its layers back to back: a layer reads the activation the layer before it wrote, still in cache, and repeated
inferences find the weights in the L3. This module times that. It also compares the model's sum over the
layers with the measured forward pass, per layer and per kind of layer.

Execution follows the trace in order, in CHW layout, one image, fp32, one pinned core:

* a 1x1 convolution on the mapping's numba SpMM kernel (``cpu_csr``, ``cpu_bsr``, ``cpu_bitmap``, ``cpu_nm``) at the
  mapping's pixel block, or on dense BLAS (``cpu_dense_gemm``);
* a depthwise convolution on ``cpu_dwconv``;
* any other convolution (KxK, or a strided 1x1 such as a ResNet downsample) on its column matrix
  (``kernels.cpu.im2col``): by BLAS on ``cpu_dense_gemm``, else by the mapping's SpMM kernel on the columns;
* a GEMM with one row (the classifier) as a BLAS GEMV;
* a max pool (ResNet's stem) on ``kernels.cpu.max_pool2d``;
* the element-wise ops in numpy: an add, a sigmoid or SiLU, squeeze-excite's per-channel scaling, and a
  global pool as a mean over the pixels.

Each op reads the previous op's output where its input has the same size (the chain of a real forward pass),
otherwise a buffer of its own (a ResNet downsample reads its own copy of the block's input; a residual add's
second operand is a buffer of its own). The data the ops compute are random, not a trained network's: the time of these
kernels does not depend on the values. Weights get the op's sparsity pattern (a random mask at its density).

    python -m simsparse.execute_cpu mobilenet_v2 --pattern unstructured@0.1 --out FILE.json

``--eltwise`` times the element-wise ops of ELTWISE_POINTS alone instead, cold and warm, with the executor's own
steps: the data of the cpu_eltwise stage (``python -m simsparse.calibrate_cpu --eltwise FILE``).
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime as _dt
import json
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

MIN_S = 2.0  # time forward passes until at least this many seconds have passed
MIN_REPEATS = 20


def kind_of(op) -> str:
    """The category a network's time is reported by (as calibrate_cpu.end_to_end reports it)."""
    g = op.conv
    if g is not None and g.is_depthwise:
        return "depthwise"
    if g is not None and (g.kh, g.kw, g.groups) == (1, 1, 1):
        return "1x1"
    if g is not None:
        return "other conv"
    return op.kind


def _scaled(rng: np.random.Generator, shape: tuple[int, ...], fan_in: float) -> np.ndarray:
    """Random float32 weights scaled by 1 / sqrt(fan_in), so activations keep their scale down the chain
    (no overflow to inf, no underflow to subnormals, either of which could change a kernel's speed)."""
    return rng.standard_normal(shape, dtype=np.float32) * np.float32(1.0 / np.sqrt(max(fan_in, 1.0)))


def _weights(op, rng: np.random.Generator, seed: int) -> np.ndarray:
    """Dense float32 W[N, K] with the op's weight pattern applied (a random mask at its density)."""
    w = _scaled(rng, (op.n, op.k), op.k * op.weight.density)
    if op.weight.density < 1.0:
        w *= op.weight.mask((op.n, op.k), seed)
    return w


def _step(op, mapping, rng: np.random.Generator, seed: int, src: Callable[[int], np.ndarray]
          ) -> Callable[[], np.ndarray]:
    """run(): executes `op` once, reading its input through src(size), and returns its output array."""
    from simsparse.kernels import cpu as K

    g = op.conv
    kernel = mapping.kernel
    if op.batch != 1 and not (g is not None and g.is_depthwise):
        raise ValueError(f"op {op.name}: batch {op.batch}; the executor runs one image (batch 1)")
    if g is not None and g.is_depthwise:
        if kernel != "cpu_dwconv":
            raise ValueError(f"op {op.name}: depthwise on {kernel!r}; this machine runs cpu_dwconv")
        w = _scaled(rng, (g.c_out, g.kh, g.kw), g.kh * g.kw)
        y = np.empty((g.c_out, g.h_out, g.w_out), np.float32)
        size = g.c_in * g.h * g.w
        return lambda: K.depthwise_conv2d(w, src(size).reshape(g.c_in, g.h, g.w), g.stride, g.pad, out=y)
    # a KxK, strided or padded convolution runs on its column matrix (im2col); a 1x1 / stride 1 one on its input
    copies = g is not None and not g.reads_in_place
    if copies and g.groups != 1:
        raise ValueError(f"op {op.name}: grouped convolution ({g.groups} groups) is not supported")
    if copies and kernel == "cpu_dense_gemm":
        w = _scaled(rng, (g.c_out, g.c_in, g.kh, g.kw), g.c_in * g.kh * g.kw)
        y = np.empty((g.c_out, g.h_out * g.w_out), np.float32)
        size = g.c_in * g.h * g.w
        return lambda: K.conv2d_im2col(w, src(size).reshape(g.c_in, g.h, g.w), g.stride, g.pad, out=y)
    if op.kind in ("gemm", "conv2d"):
        wd = _weights(op, rng, seed)
        y = np.empty((op.n, op.m), np.float32)
        mb = mapping.tile[0] or op.m
        if op.m == 1:
            yv = y.reshape(op.n)
            return lambda: K.dense_gemv(wd, src(op.k), out=yv)
        if kernel not in K.SPMM_KERNELS:
            raise ValueError(f"op {op.name}: kernel {kernel!r} does not run on this machine; allowed: "
                             f"{', '.join(K.SPMM_KERNELS)}, cpu_dwconv (use mapper='measured')")
        run = K.runner(kernel, K.encoder(kernel, op.weight)(wd), mb)
        if copies:  # a sparse kernel on the column matrix [C*kh*kw, OH*OW]
            size = g.c_in * g.h * g.w
            return lambda: run(K.im2col(src(size).reshape(g.c_in, g.h, g.w), g.kh, g.kw, g.stride, g.pad), y)
        return lambda: run(src(op.k * op.m).reshape(op.k, op.m), y)
    if op.kind == "eltwise":
        kind = op.meta.get("op_type")
        if kind == "add":
            other = _scaled(rng, (op.m,), 1.0)
            y = np.empty(op.m, np.float32)
            return lambda: np.add(src(op.m), other, out=y)
        if kind in ("sigmoid", "silu"):
            y = np.empty(op.m, np.float32)
            t = np.empty(op.m, np.float32)

            def unary() -> np.ndarray:
                x = src(op.m)
                np.negative(x, out=t)
                np.exp(t, out=t)
                np.add(t, 1.0, out=t)
                if kind == "sigmoid":
                    return np.reciprocal(t, out=y)
                return np.divide(x, t, out=y)  # x * sigmoid(x)
            return unary
        if kind == "mul":
            # squeeze-excite scaling: the feature map times one value per channel (the output before it)
            c = op.meta.get("scale_channels") or op.m
            fmap = _scaled(rng, (op.m,), 1.0).reshape(c, op.m // c)
            y = np.empty_like(fmap)
            return lambda: np.multiply(fmap, src(c).reshape(c, 1), out=y)
        if kind == "pool" and op.meta.get("pool") == "max":
            c, h, w, k = (op.meta[f] for f in ("c", "h", "w", "k"))
            stride, pad = op.meta.get("stride", 1), op.meta.get("pad", 0)
            y = np.empty((c, (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1), np.float32)
            if y.size != op.numel_out:
                raise ValueError(f"op {op.name}: max pool of {c}x{h}x{w} gives {y.size} elements, the op writes "
                                 f"{op.numel_out}")
            return lambda: K.max_pool2d(src(op.m).reshape(c, h, w), k, stride, pad, out=y)
        if kind == "pool":
            # global average pool over the pixels of a CHW map: it reads op.m elements and writes one per
            # channel (op.numel_out)
            # (as a BLAS GEMV with a 1/pixels vector: numpy's mean over short rows costs ~50 ns a row)
            c = op.numel_out
            y = np.empty(c, np.float32)
            inv = np.full(op.m // c, 1.0 / (op.m // c), np.float32)
            return lambda: np.dot(src(op.m).reshape(c, op.m // c), inv, out=y)
    raise ValueError(f"op {op.name}: kind {op.kind!r} ({op.meta.get('op_type')}) is not supported by the executor")


def build(results: list, seed: int = 0) -> list[tuple[Any, Callable[[], np.ndarray]]]:
    """One step per simulated op (its Op, its run()), wired so that each op reads the output before it
    where the sizes match."""
    rng = np.random.default_rng(seed)
    state: dict[str, Any] = {"last": None}
    own: dict[int, np.ndarray] = {}

    def src_for(i: int) -> Callable[[int], np.ndarray]:
        def src(size: int) -> np.ndarray:
            last = state["last"]
            if last is not None and last.size == size:
                return last.reshape(-1)
            if i not in own:
                own[i] = rng.standard_normal(size, dtype=np.float32)
            return own[i]
        return src

    steps = []
    ops = [r.op for r in results]
    for i, r in enumerate(results):
        op = r.op
        if op.kind == "eltwise" and op.meta.get("op_type") == "mul" and i > 0:
            prev = ops[i - 1]  # the per-channel scale (squeeze-excite's sigmoid)
            if op.m % prev.m == 0:
                op = dataclasses.replace(op, meta={**op.meta, "scale_channels": prev.m * prev.n})
        run = _step(op, r.mapping, rng, seed + i, src_for(i))

        def chained(run=run) -> np.ndarray:
            out = run()
            state["last"] = out
            return out

        steps.append((r.op, chained))
    return steps


def time_steps(steps: list, min_s: float = MIN_S, min_repeats: int = MIN_REPEATS) -> dict[str, Any]:
    """Forward passes until `min_s` and `min_repeats`: median total and per-step medians (seconds)."""
    for _, run in steps:  # once to compile and to touch every buffer
        run()
    totals, per = [], [[] for _ in steps]
    t_end = time.perf_counter() + min_s
    while len(totals) < min_repeats or time.perf_counter() < t_end:
        t0 = time.perf_counter_ns()
        prev = t0
        for j, (_, run) in enumerate(steps):
            run()
            now = time.perf_counter_ns()
            per[j].append(now - prev)
            prev = now
        totals.append(prev - t0)
    tot = np.array(totals) * 1e-9
    return {"total_s": float(np.median(tot)), "total_p10_s": float(np.percentile(tot, 10)),
            "total_p90_s": float(np.percentile(tot, 90)), "repeats": len(totals),
            "per_op_s": [float(np.median(p)) * 1e-9 for p in per]}


def network_steps(name: str, pattern: str, spec, seed: int = 0) -> tuple[Any, list]:
    """(the model's results, the executor's steps) of the deployed network `name` with `pattern` on its 1x1
    layers, on the kernels of mapper='measured'; ValueError (naming the field or op) for what it cannot run."""
    import workloads
    from simsparse.api import simulate
    from workloads.cnn import fold_for_deployment

    trace = fold_for_deployment(workloads.get(name, dtype="fp32"))
    if pattern != "dense":
        trace = workloads.apply_sparsity(trace, pattern)
    res = simulate(trace, spec, mapper="measured")
    return res, build(res.results, seed)


def run_network(name: str, pattern: str, spec_name: str = "host", core: int = 1, seed: int = 0,
                min_s: float = MIN_S) -> dict[str, Any]:
    """Measure one forward pass of the deployed network `name` with `pattern` on its 1x1 layers (one pinned
    core, the kernels of mapper='measured') and set it beside the model's prediction."""
    import hwmodels
    from simsparse.measure_cpu import machine_identity, pin

    blas = pin(core)
    spec = hwmodels.load(spec_name).replace(threads=1)
    res, steps = network_steps(name, pattern, spec, seed)
    timing = time_steps(steps, min_s)
    layers = []
    for r, t in zip(res.results, timing["per_op_s"], strict=True):
        layers.append({"op": r.op.name, "kind": kind_of(r.op), "kernel": r.mapping.kernel, "measured_kernel":
                       hwmodels.measured(r.op, r.mapping, spec), "m": r.op.m, "n": r.op.n, "k": r.op.k,
                       "batch": r.op.batch, "predicted_s": r.cost.t_s, "measured_s": t})
    by_kind: dict[str, dict[str, float]] = {}
    for la in layers:
        d = by_kind.setdefault(la["kind"], {"predicted_s": 0.0, "measured_s": 0.0, "ops": 0})
        d["predicted_s"] += la["predicted_s"]
        d["measured_s"] += la["measured_s"]
        d["ops"] += 1
    predicted = sum(la["predicted_s"] for la in layers)
    return {"type": "network", "network": name, "pattern": pattern, "spec": spec_name, "threads": 1, "core": core,
            "mapper": "measured", "time_utc": _dt.datetime.now(_dt.UTC).isoformat(timespec="seconds"),
            "machine": machine_identity(blas), "predicted_s": predicted, "measured_s": timing["total_s"],
            "error": predicted / timing["total_s"] - 1.0, "timing": {k: v for k, v in timing.items() if k != "per_op_s"},
            "by_kind": by_kind, "layers": layers}


# element-wise ops of the zoo's CNNs (batch 1, fp32): (op_type, elements read per input, extra): add at ResNet-50's
# and MobileNet v2's residual sizes, SiLU / sigmoid / SE scaling at EfficientNet-B0's, ResNet's stem max pool
# and global pools; extra is (C, H, W, k, stride, pad) for a max pool, the channel count for a scale or a pool
ELTWISE_POINTS: tuple[tuple[str, int, Any], ...] = (
    *(("add", n, None) for n in (802816, 401408, 200704, 100352, 75264, 25088, 12544)),
    *(("silu", n, None) for n in (1204224, 401408, 451584, 188160, 94080, 56448)),
    ("sigmoid", 401408, None), ("sigmoid", 56448, None),
    *(("mul", c * hw, c) for c, hw in ((96, 12544), (144, 3136), (240, 784), (480, 196), (1152, 49))),
    ("pool", 64 * 112 * 112, (64, 112, 112, 3, 2, 1)), ("pool", 128 * 56 * 56, (128, 56, 56, 3, 2, 1)),
    *(("pool", c * 49, c) for c in (512, 1280, 2048)),
)
ROTATE_BYTES = 128 << 20  # a cold point rotates over operand copies spanning at least this (4 x the host's L3)


def eltwise_op(op_type: str, numel: int, extra: Any = None):
    """The trace's Op of one ELTWISE_POINTS entry, with the meta the executor reads."""
    from simsparse.core.ops import Op
    from workloads.torch_extract import ELTWISE_FLOPS

    meta: dict[str, Any] = {"op_type": op_type}
    numel_out = None
    if op_type == "mul":
        meta["scale_channels"] = extra
    elif op_type == "pool" and isinstance(extra, tuple):
        c, h, w, k, stride, pad = extra
        meta.update(pool="max", c=c, h=h, w=w, k=k, stride=stride, pad=pad)
        numel_out = c * ((h + 2 * pad - k) // stride + 1) * ((w + 2 * pad - k) // stride + 1)
    elif op_type == "pool":
        meta["pool"] = "avg"
        numel_out = extra
    op = Op.eltwise(numel, dtype="fp32", flops_per_elem=ELTWISE_FLOPS[op_type], n_inputs=2 if op_type == "add" else 1,
                    name=f"{op_type}_{numel}", numel_out=numel_out)
    op.meta.update(meta)
    return op


def time_eltwise(op, spec, min_s: float = 0.3) -> dict[str, Any]:
    """One element-wise op on this core, cold (rotating over operand copies that span ROTATE_BYTES: nothing
    of a copy is left in the caches when it comes round again) and warm (one copy, called back to back), with
    the model's cold price and its price for an input just written (chained) beside them."""
    from hwmodels import cpu
    from simsparse.core.mapping import Mapping
    from simsparse.measure_cpu import time_call

    footprint = 4 * (op.numel_in * op.n_inputs + op.numel_out)
    copies = max(2, min(512, -(-ROTATE_BYTES // footprint)))
    m = Mapping("cpu_eltwise", params={"threads": 1})
    runs = []
    for i in range(copies):
        rng = np.random.default_rng(i)
        buf = rng.standard_normal(op.numel_in, dtype=np.float32)
        runs.append(_step(op, m, rng, i, lambda size, buf=buf: buf[:size]))
    cold = time_call(lambda i: runs[i](), copies, min_s=min_s)
    warm = time_call(lambda i: runs[0](), 1, min_s=min_s)
    chained = Mapping("cpu_eltwise", params={"threads": 1, "input_fresh_bytes": 4 * op.numel_in})
    return {"op_type": op.meta["op_type"], "op": op.to_dict(), "copies": copies, "footprint_bytes": footprint,
            "cold": cold, "warm": warm, "predicted_cold_s": cpu.cost(op, m, spec).t_s,
            "predicted_chained_s": cpu.cost(op, chained, spec).t_s}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m simsparse.execute_cpu", description=__doc__,
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("networks", nargs="*", help="workload names (mobilenet_v1, mobilenet_v2, ...)")
    ap.add_argument("--eltwise", action="store_true",
                    help="time the element-wise ops of ELTWISE_POINTS alone, cold and warm, instead of networks")
    ap.add_argument("--pattern", action="append", default=None,
                    help="weight pattern of the 1x1 layers (repeatable; default: dense and unstructured@0.1)")
    ap.add_argument("--core", type=int, default=1)
    ap.add_argument("--min-s", type=float, default=MIN_S, help="seconds of forward passes per network and pattern")
    ap.add_argument("--passes", type=int, default=2, help="measure every network and pattern this many times")
    ap.add_argument("--out", type=Path, default=None, help="write the results (JSON) here")
    a = ap.parse_args(argv)
    if not a.networks and not a.eltwise:
        ap.error("name at least one network, or --eltwise")
    out = []
    if a.eltwise:
        import hwmodels
        from simsparse.measure_cpu import machine_identity, pin

        blas = pin(a.core)
        spec = hwmodels.load("host").replace(threads=1)
        points = [eltwise_op(*p) for p in ELTWISE_POINTS]
        for p in range(a.passes):
            for op in points if p % 2 == 0 else points[::-1]:
                r = {**time_eltwise(op, spec), "pass": p + 1}
                out.append(r)
                print(f"{op.name:16s} cold {r['cold']['t_median_s'] * 1e6:8.1f} us (model {r['predicted_cold_s'] * 1e6:8.1f})"
                      f"  warm {r['warm']['t_median_s'] * 1e6:8.1f} us (model chained {r['predicted_chained_s'] * 1e6:8.1f})",
                      file=sys.stderr)
        out = [{"type": "machine", **machine_identity(blas), "time_utc": _dt.datetime.now(_dt.UTC).isoformat(
            timespec="seconds")}, *out]
    cases = [(name, pattern) for name in a.networks for pattern in a.pattern or ["dense", "unstructured@0.1"]]
    if cases:  # every case built once before anything is timed: a name, pattern or op the executor cannot run
        import hwmodels  # stops here, not after an hour of measurements

        spec = hwmodels.load("host").replace(threads=1)
        for name, pattern in cases:
            try:
                network_steps(name, pattern, spec)
            except ValueError as e:
                ap.error(f"{name} {pattern}: {e}")
    for p in range(a.passes):  # whole passes over the cases, the second in reverse order
        for name, pattern in cases if p % 2 == 0 else cases[::-1]:
            r = {**run_network(name, pattern, core=a.core, min_s=a.min_s), "pass": p + 1}
            out.append(r)
            kinds = "  ".join(f"{k} {v['measured_s'] * 1e3:.2f}/{v['predicted_s'] * 1e3:.2f}" for k, v in r["by_kind"].items())
            print(f"{name:15s} {pattern:18s} measured {r['measured_s'] * 1e3:7.2f} ms  predicted "
                  f"{r['predicted_s'] * 1e3:7.2f} ms  ({r['error']:+.1%})   ms measured/predicted: {kinds}",
                  file=sys.stderr)
    if a.out:
        a.out.write_text(json.dumps(out, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
