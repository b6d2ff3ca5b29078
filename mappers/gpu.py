"""GPU mapper: kernel x CTA tile x split-K x pipeline stages, and the GPU legality checks.

Tile kernels (cuBLAS, cuSPARSELt, BSR on Tensor Cores, Flash-LLM, grouped GEMM, fused
attention) get every configuration their library instantiates on the architecture
(`hwmodels.gpu.LIBRARY_TILES`; on sm_90 the tiles the profiler recorded for cuBLAS, `NVJET_TILES`,
and for its fp32 SIMT kernels, `SIMT_TILES`; split-K in 1..16 or the library's own fixed split,
2..max pipeline stages) that fits the SM;
streaming CUDA-core kernels (cuSPARSE CSR/BSR, Sputnik, activation-sparse GEMV, element-wise)
choose their own split and get one mapping each. `best` prices all candidates of all kernels in
one numpy pass (`hwmodels.gpu.evaluate`) and keeps the fastest — the same answer as pricing
each `candidates()` mapping with `hwmodels.cost` and taking the minimum.
"""

from __future__ import annotations

from collections import OrderedDict

import numpy as np

from hwmodels import gpu as model
from hwmodels.spec import GPUSpec
from mappers.check import split_ranges
from simsparse.core.mapping import Cost, Mapping
from simsparse.core.ops import Op
from simsparse.core.sparsity import NM, Block


def legality_key(op: Op) -> tuple:
    """What the GPU kernels' legality rules (`hwmodels.gpu.KERNELS`, `KernelInfo.why_not`) read of
    an op: kind, dtype, weight, activation, batch > 1 and expert tokens, never the shape, so ops
    that differ only in M, N, K share one answer (`mappers.search.legal_kernels`). A rule that
    reads more of the op must add it here (tests/test_gpu_mapper.py checks random ops)."""
    return (op.kind, op.dtype, op.weight, op.activation, op.batch > 1, bool(op.meta.get("expert_tokens")))


def _configs(op: Op, spec: GPUSpec, kernel: str) -> np.ndarray:
    return model.tile_configs(op, kernel, spec)


def _mapping(kernel: str, row) -> Mapping:
    tm, tn, tk, s, st = row.tolist() if isinstance(row, np.ndarray) else (int(v) for v in row)
    params: dict = {"stages": st}
    if s == model.STREAM_K:
        params["stream_k"] = True
    return Mapping(kernel=kernel, tile=(tm, tn, tk), split_k=max(s, 1),
                   weight_format=model.KERNELS[kernel].weight_format, params=params)


def candidates(op: Op, spec: GPUSpec, kernel_names: list[str]) -> list[Mapping]:
    """Every legal (kernel, tile, split-K, stages) mapping of `op`."""
    out: list[Mapping] = []
    for name in kernel_names:
        if name in model.TILE_KERNELS:
            out.extend(_mapping(name, row) for row in _configs(op, spec, name))
        else:
            out.append(Mapping(kernel=name, weight_format=model.KERNELS[name].weight_format))
    return out


_BEST: OrderedDict[tuple, tuple[GPUSpec, tuple[Mapping, Cost]]] = OrderedDict()


def best(op: Op, spec: GPUSpec, kernel_names: list[str]) -> tuple[Mapping, Cost]:
    """The fastest legal mapping over `kernel_names` and its cost (vectorised over candidates;
    only the winner's Cost is built). Memoised per (op, spec, kernels): treat the result as
    read-only."""
    meta = op.meta.get("expert_tokens")
    key = (id(spec), op, tuple(meta) if meta else None, tuple(kernel_names))
    hit = _BEST.get(key)
    if hit is not None and hit[0] is spec:
        return hit[1]
    out = _best(op, spec, kernel_names)
    _BEST[key] = (spec, out)
    if len(_BEST) > 4096:
        _BEST.popitem(last=False)
    return out


def _best(op: Op, spec: GPUSpec, kernel_names: list[str]) -> tuple[Mapping, Cost]:
    tile = tuple(k for k in kernel_names if k in model.TILE_KERNELS)
    best_t, winner = np.inf, None
    if tile:
        t, rows, problems = model.evaluate(op, spec, tile)
        if len(t):
            i = int(np.argmin(t))
            if np.isfinite(t[i]):
                best_t, winner = float(t[i]), ("tile", problems[int(rows[i, 0])], rows[i, 1:])
    for name in kernel_names:
        if name not in model.TILE_KERNELS:
            parts = model.stream_time(op, name, spec)
            if parts["t_s"] < best_t:
                best_t, winner = parts["t_s"], ("stream", name, parts)
    if winner is None:
        raise ValueError(f"op: no configuration of {', '.join(kernel_names)} fits {spec.name} for "
                         f"{op.kind} {op.shape_str()} {op.dtype}")
    if winner[0] == "stream":
        name = winner[1]
        return (Mapping(kernel=name, weight_format=model.KERNELS[name].weight_format),
                model.make_cost(op, name, spec, winner[2]))
    p, row = winner[1], winner[2]
    mapping = _mapping(p.kernel, row)
    return mapping, model.tile_cost(op, p, spec, *mapping.tile, int(row[3]), mapping.params["stages"])


def check(op: Op, mapping: Mapping, spec: GPUSpec) -> list[str]:
    """GPU-specific legality: the tile fits shared memory and registers, split-K slices are
    non-empty, N:M groups and BSR blocks are not split by the tile."""
    problems: list[str] = []
    tm, tn, tk = mapping.tile
    if tm == 0:
        if mapping.kernel in model.TILE_KERNELS and mapping.split_k != 1:
            problems.append("split_k: needs a tile")
        return problems
    if mapping.kernel not in model.TILE_KERNELS:
        return [f"tile: {mapping.kernel} chooses its own split; give no tile"]
    if min(tm, tn, tk) <= 0:
        return [f"tile: {mapping.tile} must be positive"]
    stages = int(mapping.params.get("stages", 2))
    if stages < 2:
        problems.append(f"stages: {stages} < 2 (a pipeline needs double buffering)")
    p = model.tile_problem(op, mapping.kernel, spec, mapping.params.get("variant"))
    smem = model.smem_per_cta(p, tm, tn, tk, stages)
    if smem > spec.smem_bytes_per_sm:
        problems.append(f"shared memory: {stages} stages x tile needs {smem:.0f} B > "
                        f"{spec.smem_bytes_per_sm:.0f} B per SM")
    regs = model.REG_BYTES_PER_ACC * tm * tn
    if regs > spec.regs_bytes_per_sm:
        problems.append(f"registers: {tm}x{tn} fp32 accumulators need {regs} B > {spec.regs_bytes_per_sm:.0f} B")
    if mapping.split_k > 1 and mapping.split_k > -(-op.k // tk):
        problems.append(f"split_k: {mapping.split_k} slices of K={op.k} leave some without a {tk}-wide k-step")
    if mapping.params.get("stream_k"):
        problems += _check_stream_k(op, mapping, p, spec)
    if isinstance(op.weight, NM) and mapping.weight_format == "nm" and tk % op.weight.m:
        problems.append(f"tile_k={tk} splits {op.weight.label} groups (must be a multiple of {op.weight.m})")
    if mapping.kernel == "bsr_tc" and isinstance(op.weight, Block):
        if tn % op.weight.bh or tk % op.weight.bw:
            problems.append(f"tile {tn}x{tk} (N x K) splits {op.weight.bh}x{op.weight.bw} blocks")
    return problems


def _check_stream_k(op: Op, mapping: Mapping, p: model.TileProblem, spec: GPUSpec) -> list[str]:
    """Stream-K: the (tile, k-step) iteration space, cut into contiguous shares of the resident
    CTAs, covers every k-step of every output tile exactly once."""
    problems = []
    if mapping.split_k != 1:
        problems.append(f"split_k: {mapping.split_k} with stream_k (stream-K replaces split-K; give 1)")
    if p.decomp not in ("split_k+stream_k", "stream_k") or model.arch_of(spec) not in model.STREAM_K_ARCHS:
        problems.append(f"stream_k: {mapping.kernel} on {spec.name} has no stream-K kernels")
    tm, tn, tk = mapping.tile
    stages = int(mapping.params.get("stages", 2))
    r = model.machine_rates(spec)
    slots = spec.sm_count * model.occupancy(tm, tn, tk, stages, p, r)
    if p.max_ctas:
        slots = min(slots, p.max_ctas)
    tiles = -(-p.m // tm) * p.batch * -(-p.n // tn)
    units = tiles * -(-p.k // tk)
    shares = split_ranges(units, min(slots, max(1, units // p.sk_min_steps)))
    pos = 0
    for a, b in shares:
        if a != pos or b <= a:
            problems.append(f"stream_k: share [{a}, {b}) leaves a gap or overlap at {pos}")
            break
        pos = b
    if pos != units:
        problems.append(f"stream_k: shares end at {pos}, the iteration space has {units} k-steps")
    return problems


def prefetch(items: list[tuple[Op, GPUSpec, list[str]]]) -> None:
    """Price the tile candidates of many (op, spec, kernel names) at once, so that `best` on each
    finds them memoised (what `predict` does for a chunk of lines it can read ahead)."""
    groups: dict[tuple, tuple[GPUSpec, tuple[str, ...], list[Op]]] = {}
    for op, spec, names in items:
        tile = tuple(k for k in names if k in model.TILE_KERNELS)
        if tile:
            groups.setdefault((id(spec), tile), (spec, tile, []))[2].append(op)
    for spec, tile, ops in groups.values():
        model.evaluate_many(ops, spec, tile)
