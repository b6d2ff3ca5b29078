"""Public API: simulate a trace (or one op) on a machine and get a tidy result."""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

import pandas as pd

import hwmodels
import mappers
from hwmodels.spec import HardwareSpec
from simsparse.core.errors import bad
from simsparse.core.mapping import MAPPER_CHOICES, Cost, Mapping
from simsparse.core.ops import Op, Trace

FIDELITIES = ("analytic",)


@dataclass(frozen=True)
class OpResult:
    op: Op
    mapping: Mapping
    cost: Cost


@dataclass(frozen=True)
class SimResult:
    """The per-op mappings and costs of one trace on one machine."""

    trace: Trace
    hardware: HardwareSpec
    results: tuple[OpResult, ...]

    @property
    def total_s(self) -> float:
        return sum(r.cost.t_s for r in self.results)

    @property
    def energy_j(self) -> float:
        return sum(r.cost.energy_j for r in self.results)

    @property
    def flops(self) -> float:
        """The trace's FLOPs as written, every weight dense (Op.flops): the same for every pattern."""
        return sum(r.op.flops for r in self.results)

    def to_frame(self) -> pd.DataFrame:
        """One row per op, one column per quantity, units in the column names."""
        rows = [op_row(r.op, r.mapping, r.cost, hwmodels.measured(r.op, r.mapping, self.hardware))
                for r in self.results]
        df = pd.DataFrame(rows)
        df.insert(0, "hardware", self.hardware.name)
        df.insert(0, "trace", self.trace.name)
        return df

    def summary(self) -> dict[str, Any]:
        agg = aggregate(((r.op, r.mapping, r.cost, 1) for r in self.results), self.hardware)
        return {"trace": self.trace.name, "hardware": self.hardware.name, "ops": len(self.results),
                "total_s": agg["t_s"], "flops": agg["flops"], "useful_flops": agg["useful_flops"],
                "executed_flops": agg["executed_flops"], "energy_j": agg["energy_j"],
                "tflops_per_s": agg["tflops_per_s"],
                "bound_by_time": agg["bound"], "main_gemm_kernel": agg["kernel"],
                "measured_share": agg["measured_share"]}


MATMUL_KINDS = ("gemm", "conv2d")  # the ops whose kernel names a result (aggregate's "kernel")


def aggregate(items: Iterable[tuple[Op, Mapping, Cost, int]], spec: HardwareSpec) -> dict[str, Any]:
    """Totals of costed ops, each (op, mapping, cost, count): time, cycles, energy, bytes per level;
    FLOPs three ways: `flops` as written (every weight dense, Op.flops), `useful_flops` (the nonzero
    work, Op.useful_flops) and `executed_flops` (what the kernels execute, padding and stored zeros
    included, Cost.flops); `tflops_per_s`: useful FLOPs per second (never above the machine's peak);
    `utilisation` weighted by time; `bound`: the bound holding the most time; `kernel`: the kernel
    holding the most GEMM / conv time (of all ops' where there is none); `measured_share`: the share of
    the time priced by kernels measured on `spec` (hwmodels.measured). SimResult.summary and a sweep's
    rows both read it."""
    t = cyc = e = fl = uf = ex = util_t = t_measured = 0.0
    n_ops = 0
    by_bound: dict[str, float] = {}
    by_matmul: dict[str, float] = {}
    by_any: dict[str, float] = {}
    by_level: dict[str, float] = {}
    for op, mapping, cost, n in items:
        dt = n * cost.t_s
        t += dt
        cyc += n * cost.cycles
        e += n * cost.energy_j
        fl += n * op.flops
        uf += n * op.useful_flops
        ex += n * cost.flops
        util_t += cost.utilisation * dt
        n_ops += n
        if hwmodels.measured(op, mapping, spec):
            t_measured += dt
        by_bound[cost.bound] = by_bound.get(cost.bound, 0.0) + dt
        by_any[mapping.kernel] = by_any.get(mapping.kernel, 0.0) + dt
        if op.kind in MATMUL_KINDS:
            by_matmul[mapping.kernel] = by_matmul.get(mapping.kernel, 0.0) + dt
        for level, nbytes in cost.bytes_by_level.items():
            by_level[level] = by_level.get(level, 0.0) + n * nbytes
    by_kernel = by_matmul or by_any
    return {"t_s": t, "cycles": cyc, "energy_j": e, "flops": fl, "useful_flops": uf, "executed_flops": ex,
            "tflops_per_s": uf / t / 1e12 if t else 0.0, "n_ops": n_ops,
            "utilisation": util_t / t if t else 0.0,
            "bound": max(by_bound, key=by_bound.get) if by_bound else "",
            "kernel": max(by_kernel, key=by_kernel.get) if by_kernel else "",
            "measured_share": t_measured / t if t else 0.0, "bytes_by_level": by_level}


def op_row(op: Op, mapping: Mapping, cost: Cost, measured: bool) -> dict[str, Any]:
    """The tidy row of one costed op; `measured`: its kernel was timed on this machine (hwmodels.measured)."""
    row: dict[str, Any] = {
        "op": op.name, "kind": op.kind, "phase": op.phase, "m": op.m, "n": op.n, "k": op.k,
        "batch": op.batch, "dtype": op.dtype, "weight_pattern": op.weight.label,
        "weight_density": op.weight.density if op.weight.pattern != "constant_fan_in" or
        getattr(op.weight, "fan_in", None) else None,
        "activation_density": op.activation.density,
        "kernel": mapping.kernel, "mapping": mapping.describe(), "measured": measured,
        "cycles": cost.cycles, "t_s": cost.t_s, "flops": op.flops, "useful_flops": op.useful_flops,
        "executed_flops": cost.flops,
        "bound": cost.bound, "utilisation": cost.utilisation, "energy_j": cost.energy_j,
    }
    for level, nbytes in cost.bytes_by_level.items():
        row[f"bytes_{level}"] = nbytes
    return row


def _as_trace(x: Trace | Op | list[Op]) -> Trace:
    if isinstance(x, Trace):
        return x
    if isinstance(x, Op):
        return Trace(x.name or "op", (x,))
    if isinstance(x, (list, tuple)) and x and all(isinstance(o, Op) for o in x):
        return Trace("ops", tuple(x))
    raise bad("trace_or_op", type(x).__name__, "a Trace, an Op or a list of Ops")


def simulate(trace_or_op: Trace | Op | list[Op], hardware: str | HardwareSpec, mapper: str = "auto",
             fidelity: str = "analytic", kernel: str | None = None, chained: bool = False) -> SimResult:
    """Map and cost every op of a trace on one machine.

    mapper="auto" lets the class mapper pick the fastest legal kernel and tiling per op;
    mapper="measured" picks the fastest among the kernels measured on this machine in the op's
    dtype and run conditions (spec.measured_kernels), and falls back to "auto" for an op none of
    them can run (its `measured` flag then says so); a kernel name (e.g. "cusparselt") forces that
    kernel wherever it is legal and falls back to "auto" for ops it cannot run.

    chained=False (the default) prices every op with its operands cold, as the kernel benchmarks the
    models are calibrated on do. chained=True runs the ops back to back, as a forward pass does: an op
    whose input the op before it just wrote (Trace.fresh_input_bytes) gets those bytes as
    ``input_fresh_bytes`` in its mapping's params, and a class model that knows its caches (CPU) reads
    that input from the cache level holding it instead of DRAM (other classes ignore it). Experimental:
    on this host's 19 measured network x pattern cases (38 passes; validation/data/cpu-host/network-*.json,
    the model of the twenty-fourth fit) it prices the 1x1 layers 3-17 % fast where cold pricing has them
    -2…+33 %; ResNet-18's three strided downsamples, whose input no op has just written, come out 31 %
    (dense) and 49 % (sparse) fast either way. The whole passes come out -12…+1 % chained, against
    -5…+6 % cold
    (validation/data/cpu-host/README.md, "Chained forward passes").
    """
    if fidelity not in FIDELITIES:
        raise bad("fidelity", fidelity, ", ".join(FIDELITIES))
    spec = hwmodels.load(hardware)
    trace = _as_trace(trace_or_op)
    forced = kernel or (None if mapper in MAPPER_CHOICES else mapper)
    if forced is not None and forced not in hwmodels.kernels(spec):
        raise bad("kernel" if kernel else "mapper", forced,
                  ", ".join(MAPPER_CHOICES) + " or one of " + ", ".join(hwmodels.kernels(spec)))
    measured_only = forced is None and mapper == "measured"
    fresh = trace.fresh_input_bytes() if chained else (0.0,) * len(trace)
    out = []
    for op, nbytes in zip(trace, fresh, strict=True):
        use = forced
        if use is not None and hwmodels.kernels(spec)[use].why_not(op, spec) is not None:
            use = None
        context = {"input_fresh_bytes": nbytes} if nbytes > 0 else None
        mapping, cost = mappers.best(op, spec, kernel=use, measured_only=measured_only, context=context)
        out.append(OpResult(op, mapping, cost))
    return SimResult(trace, spec, tuple(out))
