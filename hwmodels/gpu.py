"""GPU Tensor Core and 2:4 sparse Tensor Core cost model.

Kernel families (each a named `kernel` usable in `predict`) and their cost. This first
version is a per-kernel roofline with efficiency factors from the spec; the
cycle-approximate model (tiles, waves, pipeline fill, split-K, L2) refines it.
"""

from __future__ import annotations

from hwmodels.kernels import KernelInfo, needs_activation_sparsity, needs_dtype, needs_nm
from hwmodels.roofline import roofline_cost, weight_bytes
from hwmodels.spec import GPUSpec
from simsparse.core.mapping import Cost, Mapping
from simsparse.core.ops import Op
from simsparse.core.sparsity import Activation

SPARSE_WEIGHT = ("unstructured", "nm", "block", "group", "channel", "constant_fan_in")
GEMM_KINDS = ("gemm", "conv2d")


def _needs_sparse_tc(op: Op, spec: object) -> str | None:
    return None if getattr(spec, "has_sparse_tc", False) else f"{spec.name} has no sparse Tensor Cores"


def _needs_tc_dtype(op: Op, spec: object) -> str | None:
    ok = getattr(spec, "tc_flops_per_clk_per_sm", {}).get(op.dtype, 0) > 0
    return None if ok else f"{spec.name} Tensor Cores do not run {op.dtype}"


KERNELS: dict[str, KernelInfo] = {k.name: k for k in (
    KernelInfo("cublas", "gpu", GEMM_KINDS, ("*",), "dense", "tensor", False,
               description="dense GEMM on Tensor Cores (zeros computed)", rules=(_needs_tc_dtype,)),
    KernelInfo("cusparselt", "gpu", GEMM_KINDS, ("nm",), "nm", "sparse_tensor", True,
               description="2:4 structured sparse GEMM on sparse Tensor Cores (compressed W + 2-bit metadata)",
               rules=(_needs_sparse_tc, needs_nm(2, 4), needs_dtype("fp16", "bf16", "int8", "fp8"))),
    KernelInfo("cusparse_csr", "gpu", GEMM_KINDS, SPARSE_WEIGHT, "csr", "cuda_core", True,
               description="unstructured CSR SpMM on CUDA cores (cuSPARSE)"),
    KernelInfo("sputnik", "gpu", GEMM_KINDS, SPARSE_WEIGHT, "csr", "cuda_core", True,
               description="1-D tiled CSR SpMM on CUDA cores (Sputnik)"),
    KernelInfo("flash_llm", "gpu", GEMM_KINDS, SPARSE_WEIGHT, "tiled_csl", "tensor", False,
               description="Tiled-CSL: load sparse, compute dense on Tensor Cores (Flash-LLM)",
               rules=(needs_dtype("fp16", "bf16"),)),
    KernelInfo("bsr_tc", "gpu", GEMM_KINDS, ("block",), "bsr", "tensor", True,
               description="block-sparse (BSR) GEMM on Tensor Cores (SMaT / torch BSR)",
               rules=(_needs_tc_dtype,)),
    KernelInfo("act_gemv", "gpu", ("gemm",), ("dense",), "dense", "cuda_core", False, True,
               description="activation-sparse GEMV: only W columns of nonzero activations are read "
                           "(TEAL / Deja Vu)", rules=(needs_activation_sparsity,)),
    KernelInfo("flash_attention", "gpu", ("attention",), ("*",), "dense", "tensor", False,
               description="fused attention (FlashAttention-style), causal/block-sparse tiles skipped"),
    KernelInfo("elementwise", "gpu", ("eltwise",), ("*",), "dense", "cuda_core", False,
               description="element-wise / normalisation kernel (memory bound)"),
)}


def _eff(spec: GPUSpec, key: str, default: float) -> float:
    return spec.efficiency.get(key, default)


def cost(op: Op, mapping: Mapping, spec: GPUSpec) -> Cost:
    """Cost of `op` run by `mapping.kernel` on `spec` (roofline with per-unit efficiencies)."""
    kinfo = KERNELS[mapping.kernel]
    b = op.bytes_dense
    w_bytes = weight_bytes(op, kinfo.weight_format, **_format_params(op, kinfo))
    x_bytes, y_bytes = b["x"], b["y"]
    flops = op.flops
    if kinfo.unit == "sparse_tensor":
        peak = spec.peak_flops(op.dtype, (2, 4))
    elif kinfo.unit == "tensor":
        peak = spec.peak_flops(op.dtype)
    else:
        peak = spec.cuda_fp32_peak
    if kinfo.name in ("cusparse_csr", "sputnik"):
        flops = op.flops * op.weight.density
    elif kinfo.name == "bsr_tc":
        flops = op.flops * op.weight.density
    elif kinfo.name == "act_gemv":
        act = op.activation
        col = act.column_density(op.m) if isinstance(act, Activation) else act.density
        flops = op.flops * col
        w_bytes *= col
    elif kinfo.name == "flash_attention":
        flops = op.flops * op.attn.score_fraction
    elif kinfo.name == "elementwise":
        flops = op.flops
    unit_eff = _eff(spec, f"{kinfo.unit}_eff", 0.7 if kinfo.unit != "cuda_core" else 0.3)
    bw_eff = _eff(spec, "hbm_eff", 0.85)
    overhead = _eff(spec, "launch_s", 5e-6)
    return roofline_cost(
        op, mapping, peak_flops=peak * unit_eff, mem_bw=spec.dram_bw * bw_eff, flops_exec=flops,
        bytes_moved=x_bytes + w_bytes + y_bytes, overhead_s=overhead, clock_hz=spec.clock_hz,
        level="hbm", pj_per_flop=spec.pj_per_flop.get(op.dtype, 0.0), pj_per_byte=spec.pj_per_byte_dram,
        tdp_w=spec.tdp_w)


def _format_params(op: Op, kinfo: KernelInfo) -> dict[str, int]:
    if kinfo.weight_format == "nm":
        return {"n": 2, "m": 4}
    if kinfo.weight_format == "bsr":
        return {"bh": getattr(op.weight, "bh", 16), "bw": getattr(op.weight, "bw", 16)}
    return {}
