"""FPGA N:M training accelerator: roofline over the DSP PE array and DDR/HBM.

A first-order model until the cycle-level FPGA model arrives with its issue: compute at the
PE array's peak (× m/n on N:M patterns the design supports), bytes at DDR bandwidth, so that
FPGA specs run through simulate, predict and sweeps.
"""

from __future__ import annotations

from hwmodels.kernels import KernelInfo
from hwmodels.roofline import roofline_cost, weight_bytes
from hwmodels.spec import FPGASpec
from simsparse.core.mapping import Cost, Mapping
from simsparse.core.ops import Op
from simsparse.core.sparsity import NM

GEMM_KINDS = ("gemm", "conv2d")


def _nm_supported(op: Op, spec: object) -> str | None:
    w = op.weight
    label = f"{w.n}:{w.m}" if isinstance(w, NM) else w.label
    ok = label in getattr(spec, "nm_supported", [])
    return None if ok else f"{spec.name} supports N:M patterns {spec.nm_supported}, not {label}"


KERNELS: dict[str, KernelInfo] = {k.name: k for k in (
    KernelInfo("fpga_dense", "fpga", GEMM_KINDS + ("attention", "eltwise"), ("*",), "dense", "pe", False,
               description="dense GEMM on the PE array (roofline)"),
    KernelInfo("fpga_nm", "fpga", GEMM_KINDS, ("nm",), "nm", "pe", True,
               description="N:M sparse GEMM on the PE array, zero groups skipped (roofline)",
               rules=(_nm_supported,)),
)}


def cost(op: Op, mapping: Mapping, spec: FPGASpec) -> Cost:
    """max(FLOPs / PE peak, bytes / DDR bandwidth) + nothing else (first-order)."""
    kinfo = KERNELS[mapping.kernel]
    b = op.bytes_dense
    if kinfo.name == "fpga_nm":
        w = op.weight
        peak = spec.peak_flops(op.dtype, (w.n, w.m))
        w_bytes = weight_bytes(op, "nm", n=w.n, m=w.m)
    else:
        peak = spec.peak_flops(op.dtype)
        w_bytes = b["w"]
    return roofline_cost(op, mapping, peak_flops=peak, mem_bw=spec.dram_bw, flops_exec=op.flops,
                         bytes_moved=b["x"] + w_bytes + b["y"], clock_hz=spec.clock_hz, level="ddr",
                         pj_per_flop=spec.pj_per_flop.get(op.dtype, 0.0),
                         pj_per_byte=spec.pj_per_byte_dram, tdp_w=spec.tdp_w)
