"""CPU mapper: kernel × pixel block (tile_m) × threads, and the CPU-specific legality checks.

Sparse kernels walk the pixels (M) in blocks; the block is the mapping's tile_m:
* XNNPACK micro-kernels use the library's MR (32 pixels, registers);
* the numba kernels pick the largest block whose activation panel X[K, block] fits the
  share CACHE_USE of L2 (clamped to 256…4096 pixels), never more than M, and small enough to
  give every thread a block; one block plus a remainder narrower than REMAINDER_MIN of it run
  as one block (289 pixels: one block, not 256 + 33).
N and K are not tiled (tile_n = N, tile_k = K): each block runs over all output rows.
"""

from __future__ import annotations

import math

from hwmodels.cpu import CACHE_USE, KERNELS, NUMBA_KERNELS, threads_of, xnn_mr
from hwmodels.spec import CPUSpec
from simsparse.core.mapping import Mapping
from simsparse.core.ops import Op
from simsparse.core.sparsity import Block

PIXEL_KERNELS = ("xnn_spmm", "xnn_spmm_block", "cpu_group", "cpu_fanin", "cpu_nm", "cpu_csr",
                 "cpu_bsr", "cpu_bitmap")
MB_MIN, MB_MAX, MB_ALIGN = 256, 4096, 64
# A split into one full block and a remainder narrower than this share of it runs as one block
# (its panel grows by at most this share, still within L2): the split costs every stored weight a
# second set-up and X-stream start for a few pixels. Measured (benchmarks/cpu_pixel_blocks.py,
# validation/data/cpu-host/pixel-blocks-20261124T0910Z.json): one block is faster at 33 of 35 points,
# median 9 % (289 = 256 + 33, 784 = 640 + 144, 3136 = 2688 + 448 pixels). Spreading a small remainder
# over several full blocks gained nothing (median ratio 1.000 over 90 points,
# pixel-blocks-fold-all-20261124T0907Z.json), so a split into several blocks is kept as it is
REMAINDER_MIN = 0.25


def numba_block(m: int, k: int, dtype_bytes: float, l2_bytes: float, threads: int = 1,
                remainder_min: float = REMAINDER_MIN) -> int:
    """Pixels per block for the numba kernels: the X[K, block] panel fills CACHE_USE of L2; one
    block and a remainder narrower than `remainder_min` of it run as a single block."""
    fit = int(CACHE_USE * l2_bytes / (k * dtype_bytes)) // MB_ALIGN * MB_ALIGN
    mb = min(max(fit, MB_MIN), MB_MAX)
    if threads > 1:  # at least one block per thread
        mb = min(mb, -(-math.ceil(m / threads) // 16) * 16)
    if threads <= 1 and mb < m < (1.0 + remainder_min) * mb:
        mb = m
    return max(1, min(mb, m))


def block_for(op: Op, spec: CPUSpec, kernel: str, threads: int) -> int:
    if kernel in NUMBA_KERNELS:
        return numba_block(op.m, op.k, op.dtype_bytes, spec.l2_bytes, threads)
    return min(xnn_mr(spec), op.m)


def candidates(op: Op, spec: CPUSpec, kernel_names: list[str]) -> list[Mapping]:
    """One mapping per legal kernel: its pixel block and the spec's thread count."""
    out: list[Mapping] = []
    threads = threads_of(spec)
    for name in kernel_names:
        kinfo = KERNELS[name]
        params = {"threads": threads}
        if name in PIXEL_KERNELS and op.kind in ("gemm", "conv2d"):
            mb = block_for(op, spec, name, threads)
            m = Mapping(kernel=name, tile=(mb, op.n, op.k), weight_format=kinfo.weight_format, params=params)
        else:
            m = Mapping(kernel=name, weight_format=kinfo.weight_format, params=params)
        if not check(op, m, spec):
            out.append(m)
    return out


def check(op: Op, mapping: Mapping, spec: CPUSpec) -> list[str]:
    """CPU-specific legality: threads exist, accumulators fit L1, blocks align with the pattern."""
    problems: list[str] = []
    t = int(mapping.params.get("threads", 1) or 1)
    if not 1 <= t <= spec.cores:
        problems.append(f"threads: {t} not in [1, cores={spec.cores}]")
    tm, tn, tk = mapping.tile
    if tm == 0:
        return problems
    if (tn, tk) != (op.n, op.k):
        problems.append(f"tile: CPU kernels tile pixels only; need tile_n=N={op.n}, tile_k=K={op.k}, "
                        f"got ({tn}, {tk})")
    bh = op.weight.bh if isinstance(op.weight, Block) else 1
    acc_bytes = tm * bh * op.dtype_bytes
    if mapping.kernel in NUMBA_KERNELS and acc_bytes > spec.l1d_bytes:
        problems.append(f"accumulators: {tm} pixels x {bh} rows = {acc_bytes:.0f} B > L1 {spec.l1d_bytes:.0f} B")
    if mapping.kernel == "cpu_bsr" and isinstance(op.weight, Block) and op.k % op.weight.bw:
        problems.append(f"cpu_bsr: K={op.k} is not a multiple of bw={op.weight.bw}")
    return problems
