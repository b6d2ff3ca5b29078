"""Roofline cost: time = max(FLOPs / achieved peak, bytes / achieved bandwidth) + fixed overhead.

The floor every class model refines (and the whole model for classes that have no
cycle-level model yet). Pure function of its arguments.
"""

from __future__ import annotations

from simsparse.core.formats import format_nbytes
from simsparse.core.mapping import Cost, Mapping
from simsparse.core.ops import Op


def weight_bytes(op: Op, fmt: str, **params: int) -> float:
    """Bytes of the weight operand stored in `fmt` (exact format byte counts at expected nnz).

    `params` are the format's own (n, m for nm; bh, bw for bsr; tile sizes for tiled_csl).
    """
    if not op.weight_is_param or op.kind in ("attention", "eltwise"):
        return op.bytes_dense["w"]
    density = 1.0 if fmt == "dense" else op.weight.density
    per = format_nbytes(fmt, op.n, op.k, density=density, value_bytes=op.dtype_bytes, **params)
    return float(per) * op.batch


def roofline_cost(op: Op, mapping: Mapping, *, peak_flops: float, mem_bw: float, flops_exec: float,
                  bytes_moved: float, overhead_s: float = 0.0, clock_hz: float = 1e9,
                  level: str = "dram", pj_per_flop: float = 0.0, pj_per_byte: float = 0.0,
                  tdp_w: float = 0.0) -> Cost:
    """max(compute, memory) + overhead, with the bound named.

    Energy: FLOPs and bytes times their pJ costs where the spec gives them; otherwise the
    upper bound t · TDP.
    """
    t_compute = flops_exec / peak_flops if peak_flops > 0 else 0.0
    t_memory = bytes_moved / mem_bw if mem_bw > 0 else 0.0
    t_core = max(t_compute, t_memory)
    t = t_core + overhead_s
    if overhead_s > t_core:
        bound = "latency"
    else:
        bound = "compute" if t_compute >= t_memory else "memory"
    util = (op.useful_flops / t) / peak_flops if t > 0 and peak_flops > 0 else 0.0
    if pj_per_flop or pj_per_byte:
        energy = (flops_exec * pj_per_flop + bytes_moved * pj_per_byte) * 1e-12
    else:
        energy = t * tdp_w
    return Cost(t_s=t, cycles=t * clock_hz, flops=flops_exec, bytes_by_level={level: bytes_moved},
                bound=bound, utilisation=min(util, 1.0), energy_j=energy,
                breakdown_s={"compute": t_compute, "memory": t_memory, "overhead": overhead_s})
