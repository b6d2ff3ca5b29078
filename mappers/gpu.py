"""GPU mapper: kernel × CTA tile × split-K candidates, and the GPU-specific legality checks."""

from __future__ import annotations

import math

from hwmodels.gpu import KERNELS
from hwmodels.spec import GPUSpec
from simsparse.core.mapping import Mapping
from simsparse.core.ops import Op
from simsparse.core.sparsity import NM

# CTA tiles (tile_m, tile_n, tile_k) as cuBLAS/CUTLASS instantiate them on Tensor Cores
TC_TILES = ((128, 256, 64), (256, 128, 64), (128, 128, 64), (64, 128, 64), (128, 64, 64), (64, 64, 64))
CUDA_CORE_TILES = ((32, 64, 32), (64, 64, 32), (16, 128, 32))
PIPELINE_STAGES = 3


def _split_k_options(op: Op, tile: tuple[int, int, int], spec: GPUSpec) -> list[int]:
    """Split K only when the M×N tile grid cannot fill the SMs and K is long enough."""
    tm, tn, tk = tile
    ctas = math.ceil(op.m / tm) * math.ceil(op.n / tn) * op.batch
    out = [1]
    for s in (2, 4, 8, 16):
        if ctas * s <= 2 * spec.sm_count and op.k // s >= 4 * tk:
            out.append(s)
    return out


def candidates(op: Op, spec: GPUSpec, kernel_names: list[str]) -> list[Mapping]:
    """Legal (kernel, tile, split-K) combinations for `op`."""
    out: list[Mapping] = []
    for name in kernel_names:
        kinfo = KERNELS[name]
        if op.kind in ("attention", "eltwise") or name == "act_gemv":
            out.append(Mapping(kernel=name, weight_format=kinfo.weight_format))
            continue
        tiles = TC_TILES if kinfo.unit in ("tensor", "sparse_tensor") else CUDA_CORE_TILES
        for tile in tiles:
            m = Mapping(kernel=name, tile=tile, weight_format=kinfo.weight_format,
                        params={"stages": PIPELINE_STAGES})
            if check(op, m, spec):
                continue
            for s in _split_k_options(op, tile, spec):
                out.append(Mapping(kernel=name, tile=tile, split_k=s, weight_format=kinfo.weight_format,
                                   params={"stages": PIPELINE_STAGES}))
    return out


def check(op: Op, mapping: Mapping, spec: GPUSpec) -> list[str]:
    """GPU-specific legality: shared memory and registers hold the tile; N:M groups align."""
    problems: list[str] = []
    tm, tn, tk = mapping.tile
    if tm == 0:
        return problems
    bpe = op.dtype_bytes
    stages = int(mapping.params.get("stages", PIPELINE_STAGES))
    a_bytes = tm * tk * bpe
    b_bytes = tn * tk * bpe
    if mapping.weight_format == "nm":
        b_bytes = b_bytes * 9 / 16  # compressed values + 2-bit metadata per kept value
    smem = stages * (a_bytes + b_bytes)
    if smem > spec.smem_bytes_per_sm:
        problems.append(f"shared memory: {stages} stages x tile needs {smem:.0f} B > "
                        f"{spec.smem_bytes_per_sm:.0f} B per SM")
    acc_bytes = tm * tn * 4  # fp32 accumulators live in registers
    if acc_bytes > spec.regs_bytes_per_sm:
        problems.append(f"registers: {tm}x{tn} fp32 accumulators = {acc_bytes} B > {spec.regs_bytes_per_sm:.0f} B")
    if isinstance(op.weight, NM) and mapping.weight_format == "nm" and tk % 4:
        problems.append(f"tile_k={tk} splits 2:4 groups (must be a multiple of 4)")
    return problems
