"""High-sparsity ASIC: roofline over a zero-skipping PE array.

A first-order model until the cycle-level ASIC model arrives with its issue: the PEs skip
zero weights and zero activations up to the design's maximum sparse speed-up; weights
travel compressed (CSR), so that ASIC specs run through simulate, predict and sweeps.
"""

from __future__ import annotations

from hwmodels.kernels import KernelInfo
from hwmodels.roofline import roofline_cost, weight_bytes
from hwmodels.spec import ASICSpec
from simsparse.core.mapping import Cost, Mapping
from simsparse.core.ops import Op

KERNELS: dict[str, KernelInfo] = {k.name: k for k in (
    KernelInfo("asic_dense", "asic", ("gemm", "conv2d", "attention", "eltwise"), ("*",), "dense", "pe", False,
               description="dense GEMM on the PE array (roofline)"),
    KernelInfo("asic_sparse", "asic", ("gemm", "conv2d"), ("*",), "csr", "pe", True, True,
               description="zero-skipping GEMM: nonzero weight x nonzero activation pairs only (roofline)"),
)}


def cost(op: Op, mapping: Mapping, spec: ASICSpec) -> Cost:
    """max(FLOPs / PE peak, bytes / DRAM bandwidth), zero skipping capped at max_sparse_speedup."""
    b = op.bytes_dense
    if mapping.kernel == "asic_sparse":
        # useful work only, but never faster than the design's sparse speed-up limit
        flops = max(op.useful_flops, op.flops / spec.max_sparse_speedup)
        w_bytes = weight_bytes(op, "csr") if not op.weight.is_dense else b["w"]
    else:
        flops, w_bytes = op.flops, b["w"]
    return roofline_cost(op, mapping, peak_flops=spec.peak_flops(op.dtype), mem_bw=spec.dram_bw,
                         flops_exec=flops, bytes_moved=b["x"] + w_bytes + b["y"], clock_hz=spec.clock_hz,
                         level="dram", pj_per_flop=spec.pj_per_flop.get(op.dtype, 0.0),
                         pj_per_byte=spec.pj_per_byte_dram, tdp_w=spec.tdp_w)
