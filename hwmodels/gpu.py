"""GPU Tensor Core and 2:4 sparse Tensor Core cost model: cycle-approximate, per kernel family.

Every named kernel (usable as `kernel` in `predict`) belongs to one of two model shapes:

**Tile kernels** (`cublas`, `cusparselt`, `bsr_tc`, `flash_llm`, `grouped_gemm`,
`flash_attention`) run a grid of CTAs, each owning a tm×tn output tile and marching over its
K slice in tk steps through a `stages`-deep shared-memory pipeline. For one mapping
(tile, split-K s, stages) the model is, with all times in seconds:

    tiles   = ceil(M/tm) · ceil(N/tn) · batch · s            CTAs in the grid
    k_iters = ceil(ceil(K/s) / tk · visit)                   k-steps per CTA (visit < 1: BSR)
    occ     = CTAs per SM that fit shared memory and registers;  slots = SMs · occ
    step    = max(mma, smem, sfu) + serial   cycles per k-step:
                mma    = 2·tm·tn·tk / (Tensor-Core FLOP/clk/SM · tc_eff)   issue rate per dtype
                smem   = operand bytes of the step / 128 B/clk             operand delivery
                         (BSR: / the L2 bandwidth per SM: gathered x rows come from L2)
                sfu    = softmax exponentials / 16 per clk                 (attention only)
                serial = sparse-format decode that does not overlap        (Flash-LLM, BSR index)
    t_cta   = (k_iters · step + cta_cycles) / clock                        + prologue/epilogue per CTA
    chain   = t_cta + k_iters · latency_per_step / clock                   one CTA's dependent chain
    wave(n) = max(max(ceil(n/SMs) · t_cta, chain),                         tensor pipe; latency hidden
                                                                           by co-resident CTAs
                  n · hbm_bytes_per_cta / (HBM bw · gemm_hbm_eff),          shared HBM
                  cta_bytes / (stages · stage_bytes / mem_latency))        Little's law per CTA
              + mem_latency                                                pipeline fill
    main    = floor(tiles/slots) · wave(slots) + wave(tiles mod slots)     wave quantisation
    reduce  = s > 1: fp32 partials written and read back + one memory round trip  split-K
    t       = launch_s · kernels + fixed + main + reduce

Stream-K mappings (split_k code 0, cuBLAS/CUTLASS on sm_80+) cut the tiles x k-steps space into
equal shares, one per resident CTA (no wave quantisation), plus a fix-up of the split tiles.
cuSPARSELt's default plan (alg_id 0, what torch runs) is the kernel its heuristic launches, as
recorded from the H200 (`CUSPARSELT_DEFAULT_TILES`): one 128 (N) x 256 (tokens) tile on a
persistent grid (`TileProblem.max_ctas`), data-parallel or "segment-K" (a stream-K split of K
whose shares keep at least `sk_min_steps` k-steps) as `cslt_segment_k` decides, plus
`default_plan_s`; a searched plan gets the mapper's best configuration. A kernel may stream HBM
below `gemm_hbm_eff` (`TileProblem.hbm_frac`: the default plan at small M). cuBLAS on sm_90
chooses from the tiles its nvjet kernels were recorded with (`NVJET_TILES`, e.g. 96 x 128, so a
grid fills the SMs in one pass); its fp32 SIMT kernels from `SIMT_TILES`, where each k-step also
pays the accumulator block's shared-memory operand reads (`simt_smem_reads`) and an SM issues at
its peak only with `SIMT_WARPS_FOR_PEAK` warps resident. FlashAttention-2 fixes its KV split by
its own heuristic (`fa2_num_splits`, `TileProblem.fixed_split`) and then runs 64-row CTAs.

HBM bytes are the compulsory operands (weights in the kernel's storage format with exact byte
counts, activations, output), the write-back of dirty L2 lines the reads displace
(`l2_dirty_frac`), and, when the operands do not fit in L2, the re-reads implied by the wave
footprint (each wave of CTAs reads its rows of x and columns of W once). L2→SM bytes (every CTA
reads its full A and W panels) are reported as `bytes_l2`. Tile-kernel main loops stream at
`gemm_hbm_eff` of the datasheet bandwidth, copy-like kernels at `hbm_eff`.

**Streaming kernels** (`cusparse_csr`, `cusparse_bsr`, `sputnik`, `act_gemv`, `elementwise`) are
CUDA-core kernels whose library chooses the work split; their time is

    t = launch_s · kernels + fixed + max(decode, FMA time, bytes / (HBM bw · hbm_eff)) + mem_latency

with a per-nonzero (per-block) decode cost in SM cycles summed over the SMs, an achieved
fraction of the CUDA-core FP32 FMA peak, and the library's extra device work per call (`fixed`);
see `stream_time` for the per-family details (SpMV at M = 1, the GEMV's fp32 atomics).

Host overhead (what one eager call costs the CPU: torch dispatch, cuSPARSELt descriptor / plan
set-up in `torch._cslt_sparse_mm`, cuSPARSE buffer queries) is a separate named parameter per
call path (`host_s.<kernel>.<variant>`). It is reported in `Cost.breakdown_s["host"]`, not added
to `t_s`: `t_s` is device time, as measured with CUDA events behind a host lead; a stream of
eager calls runs at max(t_s, host).

Parameters live in the spec's `efficiency:` dict (calibrated on measurements, source = the data
file); `PARAMS` below holds their meaning and the uncalibrated prior used where a spec has none.
Two evaluation paths: `tile_time_scalar` reads like the equations above; `tile_time_vec`
evaluates every (kernel, tile, split-K, stages) candidate of an op in one numpy pass. Tests keep
them in agreement.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, NamedTuple

import numpy as np

from hwmodels.kernels import KernelInfo, needs_activation_sparsity, needs_dtype, needs_nm
from hwmodels.spec import GPUSpec
from simsparse.core.mapping import Cost, Mapping
from simsparse.core.ops import DTYPE_BYTES, Op
from simsparse.core.sparsity import Activation, Block

SPARSE_WEIGHT = ("unstructured", "nm", "block", "group", "channel", "constant_fan_in")
GEMM_KINDS = ("gemm", "conv2d")

# --- architectural constants (per SM, same on every NVIDIA SM since Volta) -----------------
# shared memory: 32 banks x 4 B per clock; PMC10448217 table t0015 derived smem bandwidth
# 32348 GB/s / (144 SMs x 1.755 GHz) = 128 B/clk (V100: 16451 / (84 x 1.53) = 128)
SMEM_BYTES_PER_CLK = 128.0
# special-function (exp) rate: FlashAttention-3 paper (Shah et al. 2024): H100 SXM5 has
# "989 TFLOPS of FP16 matmul but only 3.9 TFLOPS of special functions" -> 3.9e12/(132 x 1.83e9)
SFU_OPS_PER_CLK = 16.0
# registers a CTA needs per fp32 accumulator: the accumulator itself plus operand fragments
# and addressing (CUTLASS 128x256 Hopper tiles fill the 256 KB register file: 1 CTA/SM)
REG_BYTES_PER_ACC = 8
MAX_CTAS_PER_SM = 8


# --- kernels -----------------------------------------------------------------------------

def _needs_sparse_tc(op: Op, spec: object) -> str | None:
    return None if getattr(spec, "has_sparse_tc", False) else f"{spec.name} has no sparse Tensor Cores"


def _needs_tc_dtype(op: Op, spec: object) -> str | None:
    ok = getattr(spec, "tc_flops_per_clk_per_sm", {}).get(op.dtype, 0) > 0
    return None if ok else f"{spec.name} Tensor Cores do not run {op.dtype}"


def _needs_sm80(op: Op, spec: object) -> str | None:
    """Kernels written for Ampere and later (cp.async, mma.sync m16n8k16), e.g. Flash-LLM."""
    arch = getattr(spec, "arch", "")
    ok = arch.startswith("sm_") and arch[3:].isdigit() and int(arch[3:]) >= 80
    return None if ok else f"needs an sm_80+ GPU (Ampere or later); {spec.name} is {arch or 'unknown'}"


def _needs_tc_dtype_or_fp32(op: Op, spec: object) -> str | None:
    """cuBLAS runs fp32 without TF32 as SGEMM on CUDA cores."""
    return None if op.dtype == "fp32" else _needs_tc_dtype(op, spec)


def _needs_grouped(op: Op, spec: object) -> str | None:
    if op.batch > 1 or op.meta.get("expert_tokens"):
        return None
    return "grouped_gemm needs several problems (batch > 1 or op.meta['expert_tokens'])"


def _needs_cuda_core_dtype(op: Op, spec: object) -> str | None:
    if op.dtype not in ("fp32", "fp16", "bf16"):
        return f"needs fp32/fp16/bf16, got {op.dtype}"
    if op.dtype == "bf16" and _needs_sm80(op, spec):  # bf16 arithmetic arrived with Ampere (sm_80)
        return f"bf16 needs an sm_80+ GPU (Ampere or later); {spec.name} is {getattr(spec, 'arch', '') or 'unknown'}"
    return None


KERNELS: dict[str, KernelInfo] = {k.name: k for k in (
    KernelInfo("cublas", "gpu", GEMM_KINDS, ("*",), "dense", "tensor", False,
               description="dense GEMM on Tensor Cores (cuBLAS through torch F.linear; zeros computed; fp32 "
                           "without TF32 = SGEMM on CUDA cores)",
               rules=(_needs_tc_dtype_or_fp32,)),
    KernelInfo("cusparselt", "gpu", GEMM_KINDS, ("nm",), "nm", "sparse_tensor", True,
               description="2:4 structured sparse GEMM on sparse Tensor Cores (cuSPARSELt; compressed W "
                           "= 9/16 of dense bytes for fp16)",
               rules=(_needs_sparse_tc, needs_nm(2, 4), needs_dtype("fp16", "bf16", "int8", "fp8"),
                      _needs_tc_dtype)),
    KernelInfo("cusparse_csr", "gpu", GEMM_KINDS, SPARSE_WEIGHT, "csr", "cuda_core", True,
               description="unstructured CSR SpMM on CUDA cores (cuSPARSE through torch / CuPy)",
               rules=(_needs_cuda_core_dtype,)),
    KernelInfo("cusparse_bsr", "gpu", GEMM_KINDS, ("block",), "bsr", "cuda_core", True,
               description="block-sparse BSR SpMM on CUDA cores (torch W_bsr @ x: cuSPARSE bsrmm for fp32, torch's "
                           "generic kernel for half precision when its Triton path cannot run)",
               rules=(_needs_cuda_core_dtype,)),
    KernelInfo("sputnik", "gpu", GEMM_KINDS, SPARSE_WEIGHT, "csr", "cuda_core", True,
               description="1-D tiled CSR SpMM on CUDA cores (Sputnik; not measured here)",
               rules=(_needs_cuda_core_dtype,)),
    KernelInfo("flash_llm", "gpu", GEMM_KINDS, SPARSE_WEIGHT, "tiled_csl", "tensor", False,
               description="Tiled-CSL: load sparse, compute dense on Tensor Cores (Flash-LLM; not measured)",
               rules=(needs_dtype("fp16", "bf16"), _needs_tc_dtype, _needs_sm80)),
    KernelInfo("bsr_tc", "gpu", GEMM_KINDS, ("block",), "bsr", "tensor", True,
               description="block-sparse (BSR) GEMM on Tensor Cores (SMaT-style; torch Triton bsr_dense_mm)",
               rules=(_needs_tc_dtype,)),
    KernelInfo("act_gemv", "gpu", ("gemm",), ("*",), "dense", "cuda_core", False, True,
               description="activation-sparse GEMV: only W rows of nonzero activations are read "
                           "(TEAL / Deja Vu; fused gather kernel)", rules=(needs_activation_sparsity,)),
    KernelInfo("grouped_gemm", "gpu", ("gemm",), ("*",), "dense", "tensor", False,
               description="grouped GEMM over MoE experts, one launch (op.batch experts; token counts "
                           "from op.meta['expert_tokens'])", rules=(_needs_tc_dtype, _needs_grouped)),
    KernelInfo("flash_attention", "gpu", ("attention",), ("*",), "dense", "tensor", False,
               description="fused attention (FlashAttention-style), causal / block-sparse tiles skipped",
               rules=(_needs_tc_dtype,)),
    KernelInfo("elementwise", "gpu", ("eltwise",), ("*",), "dense", "cuda_core", False,
               description="element-wise / normalisation kernel (memory bound)"),
)}

TILE_KERNELS = ("cublas", "cusparselt", "bsr_tc", "flash_llm", "grouped_gemm", "flash_attention")
COLMAJOR_SEGMENT_BYTES = 64  # the reuse unit of a column-major dense operand's gathers (cuSPARSE csrmm, CuPy)
CSRMM_COLS_PER_CTA = 16  # columns of a column-major x one CTA of cuSPARSE csrmm_alg1 works on (CuPy #9850: gridDim.y = ceil(M / 16))
STREAM_KERNELS = ("cusparse_csr", "cusparse_bsr", "sputnik", "act_gemv", "elementwise")

# call path a kernel is priced on unless the mapping names one (measurement `variant`s)
DEFAULT_VARIANT = {
    "cublas": "linear", "cusparselt": "cslt_sparse_mm", "cusparse_csr": "torch_csr_matmul",
    "cusparse_bsr": "torch_bsr_matmul", "bsr_tc": "torch_bsr_triton",
    "act_gemv": "cupy_fused_gather_gemv",
}


# --- parameters --------------------------------------------------------------------------

@dataclass(frozen=True)
class Param:
    """One efficiency parameter: its prior (used uncalibrated), bounds for fitting, meaning."""

    key: str
    prior: float
    lo: float
    hi: float
    meaning: str


PARAMS: dict[str, Param] = {p.key: p for p in (
    Param("launch_s", 2.5e-6, 5e-7, 2e-5, "device time of one kernel launch behind a host lead "
          "(empty-kernel ceiling), paid per kernel of a call"),
    Param("hbm_eff", 0.90, 0.3, 1.0, "achieved fraction of datasheet HBM bandwidth (STREAM triad on "
          "H100: 92 %, HARDWARE_FACTS §1g)"),
    Param("gemm_hbm_eff", 0.8, 0.3, 1.0, "achieved fraction of datasheet HBM bandwidth while Tensor-Core "
          "GEMM main loops stream their tiles (below a plain copy's)"),
    Param("l2_dirty_frac", 1.0, 0.0, 1.0, "fraction of L2 holding dirty lines at kernel start (output of "
          "the previous kernel; the harness's L2 flush is a 2xL2 write): written back to HBM while the "
          "kernel's reads displace them"),
    Param("mem_latency_s", 8e-7, 1e-7, 5e-6, "loaded memory latency: pipeline fill per wave and the "
          "Little's-law limit stages·stage_bytes/latency on one CTA's bandwidth"),
    Param("tc_rate.bf16", 1.0, 0.5, 1.5, "achieved Tensor-Core rate on bf16 data relative to fp16 (the "
          "power limit lowers clocks less for bf16's narrower mantissa)"),
    Param("cublas.tc_eff", 0.75, 0.2, 1.0, "achieved fraction of the dense Tensor-Core issue rate in "
          "cuBLAS main loops"),
    Param("epilogue_bytes_per_clk", 0.0, 0.0, 1e5, "bytes of output tile per SM clock a persistent kernel's "
          "epilogue writes out (registers -> shared memory -> TMA store) without overlapping the next tile's "
          "main loop; 0 (the prior) = fully hidden"),
    Param("cublas.simt_eff", 0.8, 0.2, 1.0, "achieved fraction of CUDA-core FP32 FMA peak in cuBLAS "
          "SGEMM (fp32 with TF32 off)"),
    Param("cusparselt.tc_eff", 0.55, 0.1, 1.0, "achieved fraction of the 2:4 sparse Tensor-Core issue "
          "rate (2x dense) in cuSPARSELt main loops of a searched plan (torch mm_search)"),
    Param("cusparselt.default_tc_eff", 0.55, 0.1, 1.0, "achieved fraction of the 2:4 sparse Tensor-Core "
          "issue rate in cuSPARSELt's default plan (alg_id 0)"),
    Param("cusparselt.bf16_small_m_hbm_frac", 1.0, 0.05, 1.0, "HBM throughput of the default plan's bf16 "
          "kernel at M <= 128 tokens relative to gemm_hbm_eff (the same kernel as at M = 256: as fast as "
          "fp16's where few CTAs run, 1.5-1.8x slower where all CTAs stream the weights)"),
    Param("cusparselt.hbm_frac", 1.0, 0.3, 1.0, "HBM throughput of cuSPARSELt kernels (beyond their "
          "small-M cases) relative to cuBLAS's gemm_hbm_eff"),
    Param("cusparselt.segment_fixup_s", 1e-6, 0.0, 2e-5, "default plan with segment-K: seconds per extra "
          "K share of a tile that the tile's owner waits for and adds (fp32 partial through L2/HBM)"),
    Param("cusparselt.bf16_searched_small_m_hbm_frac", 1.0, 0.05, 1.0, "HBM throughput of a searched bf16 "
          "plan at M <= 128 tokens relative to gemm_hbm_eff (probe: searched bf16 at M <= 16 is 0.7x cuBLAS, "
          "fp16 1.3x)"),
    Param("cusparselt.fp16_small_m_hbm_frac", 1.0, 0.05, 1.0, "HBM throughput of the default plan's fp16 "
          "kernel at M <= 64 tokens relative to gemm_hbm_eff (same kernel as at M = 128, whose weight "
          "stream is ~1.3x faster on the probe's large-N shapes)"),
    Param("cusparselt.cta_cycles", 500.0, 0.0, 20000.0, "SM cycles per resident CTA outside the main loop of "
          "a searched plan (metadata / descriptor prologue; persistent on sm_90: once per slot, the tiles' "
          "write-out is epilogue_bytes_per_clk)"),
    Param("cusparselt.default_plan_s", 5e-6, 0.0, 5e-5, "extra device time per call of cuSPARSELt's default "
          "plan (alg_id 0) over its tile work"),
    Param("bsr_tc.tc_eff", 0.45, 0.05, 1.0, "achieved fraction of the dense Tensor-Core rate on the "
          "visited blocks of a BSR GEMM"),
    Param("bsr_tc.cycles_per_block", 40.0, 0.0, 2000.0, "serial SM cycles per visited block (index "
          "load and address computation that does not overlap the MMA)"),
    Param("bsr_tc.latency_per_block", 500.0, 0.0, 20000.0, "latency cycles per visited block of one program "
          "(dependent block-index load, then the gather of its x rows from L2): hidden by the other "
          "programs resident on the SM, so it only sets a floor of one program's chain"),
    Param("bsr_tc.cycles_per_token", 0.0, 0.0, 100.0, "serial SM cycles per token of a block's x "
          "gather (address + load of the bw values one token needs), per visited block"),
    Param("bsr_tc.fixed_s", 5e-6, 0.0, 1e-4, "device time per call besides the block-sparse main loop "
          "(output initialisation and the Triton kernel's prologue)"),
    Param("flash_llm.tc_eff", 0.6, 0.05, 1.0, "achieved Tensor-Core fraction of Flash-LLM (prior: "
          "Flash-LLM paper reports ~60-70 % of cuBLAS at 80 % sparsity)"),
    Param("flash_llm.cycles_per_nnz", 0.0625, 0.0, 4.0, "SM cycles per nonzero to extract Tiled-CSL "
          "into shared memory (serial with the MMA)"),
    Param("flash_attention.tc_eff", 0.75, 0.1, 1.0, "achieved Tensor-Core fraction in fused attention "
          "(FlashAttention-3: 740 TFLOPS fp16 = 75 % of H100 peak)"),
    Param("grouped_gemm.tc_eff", 0.7, 0.1, 1.0, "achieved Tensor-Core fraction of a grouped GEMM over MoE "
          "experts (CUTLASS grouped kernel behind torch._grouped_mm)"),
    Param("grouped_gemm.hbm_frac", 1.0, 0.3, 1.33, "its HBM throughput relative to gemm_hbm_eff (expert "
          "weights streamed at few tokens per expert)"),
    Param("flash_attention.fixed_s", 0.0, 0.0, 5e-5, "fused attention's device time per call besides the "
          "tile work (softmax statistics set-up, output normalisation pass)"),
    Param("flash_attention.hbm_frac", 1.0, 0.5, 1.33, "fused attention's HBM throughput relative to "
          "gemm_hbm_eff (decode streams the KV cache read-only)"),
    Param("flash_attention.fa2_tc_eff", 0.35, 0.1, 1.0, "achieved Tensor-Core fraction of FlashAttention-2 "
          "(torch's flash SDPA backend), softmax serial with the MMA (FlashAttention-3 paper: FA2 reaches "
          "35 % of H100 peak)"),
    Param("cusparse_csr.flop_eff", 0.1, 0.001, 1.0, "achieved fraction of CUDA-core FP32 FMA peak on "
          "the nnz·M products of CSR SpMM with a row-major dense operand (torch)"),
    Param("cusparse_csr.cycles_per_segment_colmajor", 1.0, 0.001, 100.0, "column-major dense operand "
          "(CuPy): SM cycles per 64-byte segment of x that a row's nonzeros touch, per output column"),
    Param("cusparse_csr.cycles_per_nnz", 10.0, 0.0, 500.0, "SM cycles per stored nonzero (index decode "
          "and gather), independent of M"),
    Param("cusparse_csr.fixed_s", 1.5e-5, 0.0, 1e-4, "device time per call besides the SpMM main "
          "kernel (cuSPARSE's extra kernels: buffer set-up, row analysis)"),
    Param("cusparse_csr.cycles_per_l2_segment_colmajor", 0.5, 0.0, 100.0, "column-major dense operand "
          "(CuPy): SM cycles per 64-byte segment of x fetched from L2 into an SM's L1 (on top of "
          "cycles_per_segment_colmajor for every segment a row touches)"),
    Param("cusparse_csr.fixed_s_cupyx", 1e-5, 0.0, 1e-4, "CuPy's call (cupy.zeros for y, then "
          "cusparseSpMM): device time per call besides its two launches, the memset's bytes and the "
          "main kernel's work"),
    Param("cusparse_bsr.gather_eff", 0.02, 0.001, 1.0, "torch's half-precision BSR kernel: achieved "
          "fraction of the L2 bandwidth gathering x (blocks x bw x M values), serial with the block decode"),
    Param("cusparse_bsr.gather_eff_fp32", 0.2, 0.01, 1.0, "cuSPARSE bsrmm (fp32): achieved fraction of the "
          "L2 bandwidth gathering x — every stored block reads its bw rows of x (M values each) for bh "
          "output rows, so the L2->SM bytes are blocks x bw x M, half as many per FMA for 32x32 blocks "
          "as for 16x16"),
    Param("cusparse_bsr.cycles_per_block", 500.0, 0.0, 20000.0, "SM cycles per stored block (index "
          "decode), independent of M"),
    Param("cusparse_bsr.cycles_per_block_fp32", 100.0, 0.0, 20000.0, "the same for fp32 operands (cuSPARSE "
          "bsrmm proper)"),
    Param("cusparse_bsr.cycles_per_value", 1.0, 0.0, 100.0, "SM cycles per stored value of a block "
          "(loaded and converted element by element), independent of M"),
    Param("cusparse_bsr.cycles_per_value_fp32", 1.0, 0.0, 100.0, "the same for fp32 operands (cuSPARSE "
          "bsrmm proper)"),
    Param("cusparse_bsr.fixed_s_fp32", 5e-6, 0.0, 1e-4, "the same for fp32 operands (cuSPARSE bsrmm)"),
    Param("cusparse_bsr.fixed_s", 1.5e-5, 0.0, 1e-4, "device time per call besides the bsrmm main "
          "kernel"),
    Param("sputnik.flop_eff", 0.5, 0.01, 1.0, "achieved CUDA-core FMA fraction of Sputnik (prior: "
          "Gale et al. 2020 report Sputnik ~1.5x cuSPARSE)"),
    Param("sputnik.cycles_per_nnz", 1.0, 0.0, 200.0, "SM cycles per nonzero of Sputnik"),
    Param("act_gemv.hbm_eff", 0.75, 0.05, 1.0, "achieved fraction of datasheet HBM bandwidth reading "
          "the gathered weight rows of an activation-sparse GEMV"),
    Param("act_gemv.atomic_serial_s", 5e-8, 1e-9, 1e-6, "time of one fp32 atomic add to an address "
          "another add to the same address waits for (same-address atomics serialise at the L2 slice)"),
    Param("act_gemv.atomics_per_s", 1.5e10, 1e8, 1e12, "fp32 atomic adds per second the L2 sustains "
          "for the GEMV's split index list"),
)}


def param(spec: GPUSpec, key: str) -> float:
    """A calibrated efficiency from the spec, else the prior (`PARAMS[key].prior`)."""
    v = spec.efficiency.get(key)
    if v is not None:
        return float(v)
    if key.startswith("host_s."):
        return HOST_PRIORS.get(key, 0.0)
    return PARAMS[key].prior


# host overhead of one eager call per call path (seconds); priors, overridden by the spec's
# `efficiency: host_s.<kernel>.<variant>` fitted on measured `host_call_s`
HOST_PRIORS = {
    "host_s.cublas.linear": 6e-6,
    "host_s.cusparselt.semi_structured_linear": 4e-5,  # pytorch#153825: descriptors per call
    "host_s.cusparselt.cslt_sparse_mm": 3e-5,
    "host_s.cusparselt.cslt_sparse_mm_cudagraph": 8e-6,
    "host_s.cusparse_csr.torch_csr_matmul": 3e-5,
    "host_s.cusparse_csr.cupyx_csr_matmul": 4e-5,
    "host_s.cusparse_bsr.torch_bsr_matmul": 3e-5,
    "host_s.bsr_tc.triton_bsr_dense_mm": 5e-5,
    "host_s.act_gemv.cupy_fused_gather_gemv": 1.5e-5,
}


# --- CTA tiles the libraries instantiate, per architecture --------------------------------
# (tm, tn) over (tokens M, output features N). Hopper cuBLAS/CUTLASS warp-specialised kernels
# use 64..256-wide wgmma tiles; for small M the libraries swap operands so the token tile can be
# 8..32 wide (wgmma N = 8..256). K step = one 128-byte swizzle row on sm_90 (64 fp16), 64 bytes
# on older parts (32 fp16), as in CUTLASS's default configurations.
LIBRARY_TILES: dict[str, tuple[tuple[int, int], ...]] = {
    "sm_90": ((8, 128), (16, 128), (32, 128), (64, 64), (64, 128), (64, 256), (128, 64),
              (128, 128), (128, 256), (256, 128)),
    "sm_80": ((16, 128), (32, 128), (64, 64), (64, 128), (128, 64), (128, 128), (128, 256),
              (256, 128)),
    "sm_75": ((32, 128), (64, 64), (64, 128), (128, 64), (128, 128), (128, 256), (256, 128)),
    "sm_70": ((32, 128), (64, 64), (64, 128), (128, 64), (128, 128), (128, 256), (256, 128)),
}
# cuBLAS's Hopper kernels (nvjet_sm90_*) pick from a finer menu than powers of two, so that a
# grid fills the SMs in one pass (e.g. 2048 x 768 x 3072 runs 96 x 128 tiles: 22 x 6 = 132 CTAs
# on 132 SMs). (tokens, N) tiles as the profiler named them on the H200 (fit-half shapes of the
# probe and of the campaigns, fp16/bf16, every tile seen at least twice; "TNT" kernels name
# {N}x{tokens}, "TNN" ones {tokens}x{N}): validation/data/h200/h200-probe-kernels-20261123.jsonl.gz
NVJET_TILES = ((8, 64), (8, 128), (8, 192), (8, 256), (16, 64), (16, 128), (16, 192), (16, 256), (24, 64),
               (32, 64), (32, 128), (32, 192), (32, 256), (48, 64), (64, 64), (64, 128), (64, 192), (64, 256),
               (64, 320), (72, 64), (80, 64), (80, 128), (96, 64), (96, 128), (96, 192), (96, 256), (104, 64),
               (112, 64), (112, 128), (128, 128), (128, 192), (128, 256), (128, 320), (144, 64), (144, 128),
               (168, 128), (176, 64), (176, 128), (192, 192))
# cuBLAS's fp32 (SIMT, no TF32) GEMM tiles, (tokens, N), as the H200 profile named them
# (sm80_xmma_gemm_f32f32_..._tilesize{tokens}x{N}x8, split-K in grid z; fit-half probe shapes,
# validation/data/h200/h200-probe-fp32-20261124.jsonl.gz), and their warps per CTA (block sizes
# 64 for the 32-token tiles, 128 for the others)
SIMT_TILES = ((32, 32), (32, 64), (32, 128), (64, 64), (64, 256), (128, 64), (128, 128), (256, 64))
# warps an SM needs resident to issue FMAs at its peak (two per scheduler): on the H200 probe a
# 32 x 128 tile (2 warps) at M = 16 runs 1.8x slower per FMA than a 128 x 128 tile (4 warps) at
# M = 128 over the same grid (216 CTAs, ~2 per SM) of 13824 x 5120
SIMT_WARPS_FOR_PEAK = 8


def simt_warps(tm):
    """Warps per CTA of cuBLAS's SIMT tiles (scalars or numpy arrays of token tiles)."""
    return np.where(np.asarray(tm) <= 32, 2.0, 4.0)


def simt_smem_reads(tm, tn):
    """Shared-memory elements a SIMT tile reads per unit of K: each of its 32 x simt_warps threads
    holds an rm x rn block of the tm x tn accumulators (rm the largest power of two <= its square
    root) and loads rm + rn operands for rm·rn FMAs. A 128 x 128 tile (8 x 16 per thread) needs
    3/16 of a load per FMA; a 32 x 32 one on 64 threads (4 x 4) 1/2. Scalars or numpy arrays."""
    per_thread = np.asarray(tm) * tn / (32.0 * simt_warps(tm))
    rm = 2.0 ** np.floor(np.log2(np.sqrt(per_thread)))
    rn = per_thread / rm
    return tm * tn * (rm + rn) / (rm * rn)


def _is_simt(p: TileProblem) -> bool:
    """Whether `p` runs cuBLAS's SIMT GEMM tiles (fp32 without Tensor Cores, M > 1)."""
    return p.tile_family[0] == "simt" and not p.tile_family[1]


TILE_K_BYTES = {"sm_90": 128, "sm_80": 64, "sm_75": 64, "sm_70": 64}
MAX_STAGES = {"sm_90": 7, "sm_80": 5, "sm_75": 2, "sm_70": 2}
SPLIT_K = (1, 2, 4, 8, 16)
STREAM_K = 0  # split_k code of a stream-K mapping (Osama et al. 2023; CUTLASS 3 / cuBLAS on sm_80+)
STREAM_K_ARCHS = ("sm_90", "sm_80")
# cuSPARSELt's default plan (alg_id 0, what torch's _cslt_sparse_mm and the semi-structured
# F.linear path run), as the profiler saw it on the H200 (cuSPARSELt 0.8; every fit-half probe
# shape, validation/data/h200/h200-probe-kernels-20261123.jsonl.gz, kernel names and grids): ONE
# kernel, sm90_xmma_sparse_gemm_..._tilesize128x256x64, i.e. 128 rows of W (N) x 256 tokens (M)
# per CTA, at every M (so its time is flat in M up to 256 tokens: slower than cuBLAS in decode);
# fp16 runs it in clusters of 4 CTAs (cgasize4x1x1) on a persistent grid of at most 120 CTAs,
# bf16 without clusters on at most 132 (= SMs). The heuristic turns "segment-K" on or off
# (`cslt_segment_k`); nothing else changes with the shape.
CUSPARSELT_DEFAULT_TILES = ((256, 128),)
CUSPARSELT_DEFAULT_CLUSTER = {"fp16": 4, "bf16": 1}
# a searched plan (torch mm_search over cuSPARSELt's algorithms) picks among these kernels, as the
# profiler recorded them on the H200 (fit-half probe shapes; names ..._tilesize{N}x{tokens}x{K}):
# 64 or 128 rows of W x 64, 128 or 256 tokens, 64 or 128 of K per step; bf16 only ever ran the
# 256-token kernels. (tokens, N) pairs; the token tile's minimum per dtype:
CUSPARSELT_SEARCHED_TILES = tuple((tm, tn) for tm in (64, 128, 256) for tn in (64, 128))
CUSPARSELT_SEARCHED_MIN_TOKENS = {"fp16": 64, "bf16": 256}
CUSPARSELT_SEARCHED_TK = (64, 128)
# persistent grid of the fp16 kernel on 132-SM sm_90 parts (30 clusters of 4), scaled by SMs elsewhere
CUSPARSELT_FP16_MAX_CTAS_PER_132_SM = 120
# segment-K never cut a tile's K into shares of fewer than ~12 k-steps of 64 (768 of K) on the probe
CUSPARSELT_SEGMENT_MIN_STEPS = 12
# with more than 8 K segments per tile segment-K launches its kernel twice, the second summing the
# partials (fit-half probes: all 218 recorded calls with 9-22 segments per tile ran two launches,
# all 356 with 2-7 one; validation/data/h200/h200-probe-narrow-20261124.jsonl.gz)
CUSPARSELT_SEGMENT_KERNEL_SHARES = 8
# the default plan streams weights slower at few tokens (same kernel): fp16 up to 64 padded tokens,
# bf16 up to 128 (bf16 at small M 1.5-1.8x slower than fp16, equal from M = 256; H200 probe)
CUSPARSELT_FP16_SMALL_M = 64
CUSPARSELT_BF16_SMALL_M = 128
ATTN_TILES = ((64, 32), (64, 64), (128, 64), (128, 128))  # (Br query rows, Bc kv rows) per CTA step


# FlashAttention-2's split-KV decode kernel (torch's flash backend: flash_fwd_splitkv_kernel, then
# flash_fwd_splitkv_combine): 64 query rows per CTA at every head size (Tri Dao's flash-attention,
# csrc/flash_attn/src/flash_fwd_launch_template.h, run_mha_fwd_splitkv_dispatch)
FA2_SPLIT_BLOCK_M = 64
FA2_MAX_SPLITS = 128


def fa2_kv_block(head_dim: int) -> int:
    """Keys per k-step of FlashAttention-2's split-KV kernel, by head size (flash_api.cpp,
    set_params_splitkv: 256 up to head_dim 64, 128 up to 128, 64 above)."""
    return 256 if head_dim <= 64 else 128 if head_dim <= 128 else 64


def fa2_num_splits(rows: int, kv_len: int, head_dim: int, sm_count: int) -> int:
    """KV splits FlashAttention-2 picks (flash_api.cpp, num_splits_heuristic, as torch 2.11 runs it).

    `rows` = batch x heads x query blocks of 64 (decode with GQA counts the query heads of a KV
    head as rows of one block). Nothing to split when the row blocks nearly fill twice the SMs;
    otherwise the fewest splits whose wave efficiency (waves / whole waves over 2 x SMs) is
    within 85 % of the best over 1..min(128, 2 x SMs, kv blocks), skipping split counts that
    leave the blocks per split unchanged. Reproduces every split the H200 profile recorded
    (24 decode geometries of validation/data/h200/h200-attention-20261123.jsonl.gz: 2..32 splits
    or none).
    """
    slots = 2 * sm_count
    if rows >= 0.8 * slots:
        return 1
    blocks = -(-kv_len // fa2_kv_block(head_dim))
    top = min(FA2_MAX_SPLITS, slots, blocks)

    def eligible(s: int) -> bool:
        return s == 1 or -(-blocks // s) != -(-blocks // (s - 1))

    eff = {s: (w := rows * s / slots) / math.ceil(w) for s in range(1, top + 1) if eligible(s)}
    best = max(eff.values())
    return next(s for s, e in eff.items() if e >= 0.85 * best)


def arch_of(spec: GPUSpec) -> str:
    return spec.arch if spec.arch in LIBRARY_TILES else "sm_80"


# --- the problem a tile kernel solves ------------------------------------------------------

class TileProblem(NamedTuple):
    """Scalars of one (op, kernel, spec) for the tile model. Bytes are whole operands.

    The first group depends on the tile kernel, dtype and machine only (`static_key`); the
    second on the op's shape and sparsity.
    """

    kernel: str
    elem_bytes: float  # bytes per element of x, W tiles and y
    w_tile_frac: float  # shared-memory bytes of a W stage relative to dense (9/16 for 2:4 fp16)
    a_per_step: float  # 1: the x tile is loaded every k-step (GEMM); 0: once per CTA (attention Q)
    q_once: float  # tiles of tm·tn elements held for the whole CTA (attention Q)
    flop_mult: float  # GEMMs per k-step (2 for attention: S = QKᵀ and O = PV)
    peak_per_clk: float  # achieved Tensor-Core FLOP/clk/SM (datasheet rate x tc_eff)
    sfu_per_mk: float  # cycles per tm·tk element overlapping the MMA (softmax exp)
    serial_per_step: float  # cycles per k-step that do not overlap the MMA (block index decode)
    block_rows: int  # bh: a tile visits a K block if any of its tn/bh block rows keeps it
    tile_family: tuple  # (family, a, b) selecting the library's tile list
    decomp: str  # work decompositions the library offers: "none", "split_k", "split_k+stream_k"
    split_kernel: bool  # split-K partials reduced by a second kernel (cuSPARSELt), not in-kernel
    m: int  # rows of the token axis as the kernel sees them (padded where the library pads)
    n: int
    k: int
    batch: int
    block_density: float  # fraction of K blocks kept (1 = dense)
    w_traffic_frac: float  # bytes of a W tile moved from memory relative to dense (Tiled-CSL: ~d(b+2)/b)
    serial_per_nk: float  # cycles per tn·tk element that do not overlap the MMA (format decode)
    x_bytes: float
    w_bytes: float
    y_bytes: float
    out_elems: float  # output elements (for split-K partials)
    launches: int  # kernels per call besides split-K reduction
    fixed_s: float = 0.0  # device time per call besides launches and the tile work (library plan overhead)
    expert_tokens: tuple[int, ...] = ()  # grouped GEMM: tokens per expert (empty = batch x m)
    feed_bytes_per_clk: float = SMEM_BYTES_PER_CLK  # operand delivery per SM per clock (BSR: from L2)
    cta_cycles: float = 0.0  # SM cycles per CTA outside the main loop (prologue set-up, epilogue write-out)
    latency_per_step: float = 0.0  # latency cycles per k-step of one CTA (dependent index load): hidden by co-resident CTAs
    hbm_frac: float = 1.0  # the kernel's HBM throughput relative to gemm_hbm_eff (bf16 2:4 default plan, small M)
    max_ctas: int = 0  # persistent grid: at most this many CTAs resident at once (0: SMs x occupancy)
    sk_min_steps: int = 1  # stream-K shares keep at least this many k-steps (cuSPARSELt segment-K: 12)
    sk_fixup_s: float = 0.0  # stream-K: seconds per extra share of a tile its owner waits for and adds
    # stream-K: with more shares per tile than this, the partials are summed by a second launch of
    # the kernel (cuSPARSELt segment-K), costing a launch + sk_fixup_s + every share's partial,
    # not a serial fix-up per share; 0 = always in-kernel
    sk_kernel_shares: int = 0
    # persistent, warp-specialised kernel (one CTA per slot loops over tiles): the next tile's loads
    # overlap the current tile's epilogue, so the pipeline fill and the CTA prologue / epilogue
    # (cta_cycles) are paid once per resident CTA, not once per tile and wave
    persistent: bool = False
    epilogue_s: float = 0.0  # persistent: seconds per output tile byte its epilogue does not overlap
    # k-steps of the longest CTA over the average CTA's (causal attention: the last query tile
    # sees every key, the average half of them); an SM's wave is never shorter than that CTA
    longest_cta: float = 1.0
    serial_per_mk: float = 0.0  # cycles per tm·tk element that do not overlap the MMA (per-token gather)
    # K split count the library fixes by its own heuristic (FlashAttention-2's split-KV decode); 0:
    # the model picks the split among SPLIT_K like cuBLAS's heuristic does
    fixed_split: int = 0

    def static_key(self) -> tuple:
        return (self.kernel, self.elem_bytes, self.w_tile_frac, self.a_per_step, self.q_once, self.flop_mult,
                self.peak_per_clk, self.sfu_per_mk, self.serial_per_step, self.block_rows, self.tile_family,
                self.decomp, self.split_kernel, self.feed_bytes_per_clk, self.cta_cycles,
                self.latency_per_step, self.hbm_frac, self.max_ctas, self.sk_min_steps, self.sk_fixup_s,
                self.sk_kernel_shares,
                self.persistent, self.epilogue_s, self.longest_cta, self.serial_per_mk, self.fixed_split)


@dataclass(frozen=True)
class MachineRates:
    """Machine numbers the tile model uses (spec + calibrated efficiencies)."""

    sm_count: int
    clock_hz: float
    hbm_bw: float  # achieved bytes/s of tile-kernel main loops (datasheet x gemm_hbm_eff)
    l2_bytes: float
    smem_bytes: float
    regs_bytes: float
    mem_latency_s: float
    launch_s: float
    dirty_bytes: float  # dirty L2 lines at kernel start, written back as the kernel streams through L2
    stream_bw: float  # achieved bytes/s of a streaming (copy-like) kernel (datasheet x hbm_eff)


_RATES: dict[int, tuple[GPUSpec, MachineRates]] = {}


def machine_rates(spec: GPUSpec) -> MachineRates:
    hit = _RATES.get(id(spec))
    if hit is not None and hit[0] is spec:
        return hit[1]
    r = MachineRates(spec.sm_count, spec.clock_hz, spec.dram_bw * param(spec, "gemm_hbm_eff"), spec.l2_bytes,
                     spec.smem_bytes_per_sm, spec.regs_bytes_per_sm, param(spec, "mem_latency_s"),
                     param(spec, "launch_s"), param(spec, "l2_dirty_frac") * spec.l2_bytes,
                     spec.dram_bw * param(spec, "hbm_eff"))
    if len(_RATES) > 64:
        _RATES.clear()
    _RATES[id(spec)] = (spec, r)
    return r


def smem_per_cta(p: TileProblem, tm, tn, tk, stages):
    """Shared memory of one CTA: `stages` x (x tile + W tile) + a resident Q tile (attention)."""
    return (stages * (p.a_per_step * tm + p.w_tile_frac * tn) * tk * p.elem_bytes
            + p.q_once * tm * tn * p.elem_bytes)


def occupancy(tm: int, tn: int, tk: int, stages: int, p: TileProblem, r: MachineRates) -> int:
    """CTAs per SM that fit shared memory (stages x stage bytes) and registers (accumulators)."""
    by_smem = int(r.smem_bytes // max(smem_per_cta(p, tm, tn, tk, stages), 1.0))
    by_regs = int(r.regs_bytes // (REG_BYTES_PER_ACC * tm * tn))
    return max(1, min(by_smem, by_regs, MAX_CTAS_PER_SM))


def tile_time_scalar(p: TileProblem, r: MachineRates, tm: int, tn: int, tk: int, split_k: int,
                     stages: int) -> dict[str, float]:
    """The tile model for one mapping, written as the equations in the module docstring.

    split_k = STREAM_K (0) is a stream-K mapping: the tiles x k-steps iteration space cut into
    equal contiguous shares, one per resident CTA (no wave quantisation), partial tiles fixed up.
    """
    stream_k = split_k == STREAM_K
    s = 1 if stream_k else split_k
    if p.expert_tokens:
        tiles_mb = sum(math.ceil(e / tm) for e in p.expert_tokens if e > 0) or 1
    else:
        tiles_mb = math.ceil(p.m / tm) * p.batch
    tiles_n = math.ceil(p.n / tn)
    tiles = tiles_mb * tiles_n
    ctas = tiles * s
    # k-steps per CTA; BSR tiles visit a K block when any of their tn/bh block rows keep it
    visit = 1.0 - (1.0 - p.block_density) ** (tn / p.block_rows)
    k_slice = math.ceil(p.k / s)
    k_iters = math.ceil(k_slice / tk * visit)
    occ = occupancy(tm, tn, tk, stages, p, r)
    slots = min(r.sm_count * occ, p.max_ctas) if p.max_ctas else r.sm_count * occ
    waves_dp = math.ceil(ctas / slots)
    if stream_k:
        units = tiles * k_iters
        ctas = min(slots, max(1, units // p.sk_min_steps))
        k_iters = math.ceil(units / ctas)
    # cycles of one k-step: MMA issue, smem operand delivery, SFU (overlapped) + serial decode
    stage_bytes = (p.a_per_step * tm + p.w_tile_frac * tn) * tk * p.elem_bytes
    mma = p.flop_mult * 2 * tm * tn * tk / p.peak_per_clk
    simt = _is_simt(p)
    feed = stage_bytes
    if simt:  # CUDA-core FMAs read operands from smem
        feed = max(feed, float(simt_smem_reads(tm, tn)) * tk * p.elem_bytes)
    smem = feed / p.feed_bytes_per_clk
    sfu = p.sfu_per_mk * tm * tk
    step = max(mma, smem, sfu) + p.serial_per_nk * tn * tk + p.serial_per_step + p.serial_per_mk * tm * tk
    # SM time of one CTA (issue slots shared by the CTAs resident on the SM) + its prologue/epilogue
    t_cta = (k_iters * step + (0.0 if p.persistent else p.cta_cycles)) / r.clock_hz \
        + p.epilogue_s * (1 + p.q_once) * tm * tn * p.elem_bytes
    # one CTA's dependent chain: its issue time plus the per-step latency (block index load) that
    # other resident CTAs hide (an SM is never faster than one CTA's chain)
    t_chain = t_cta + k_iters * p.latency_per_step / r.clock_hz
    # bytes: every CTA streams its panels from L2; HBM sees the operands once plus re-reads
    step_traffic = (p.a_per_step * tm + p.w_traffic_frac * tn) * tk * p.elem_bytes
    cta_bytes = k_iters * step_traffic + (1 + p.q_once) * tm * tn * p.elem_bytes
    l2_total = ctas * cta_bytes
    waves = math.ceil(ctas / slots)
    operands = p.x_bytes + p.w_bytes
    # compulsory traffic + write-back of the dirty L2 lines the operands displace
    hbm = operands + p.y_bytes + min(operands, r.dirty_bytes)
    if operands > r.l2_bytes:
        # a wave covers ~ wm x wn tiles (swizzled raster): it reads wm x-panels and wn W-panels
        wm = min(max(round(math.sqrt(slots * tn / tm)), 1), tiles_mb)
        wn = min(max(math.ceil(slots / wm), 1), tiles_n)
        # panels read over all waves: a panel is re-read only by another wave's raster, so never
        # more often than the grid has raster blocks along the other axis
        x_panels = min(waves_dp * wm, tiles_mb * math.ceil(tiles_n / wn))
        w_panels = min(waves_dp * wn, tiles_n * math.ceil(tiles_mb / wm))
        reads = (p.a_per_step * x_panels * tm + p.w_traffic_frac * w_panels * tn) * k_slice * visit * p.elem_bytes
        hbm += max(0.0, min(l2_total, reads) - operands)
    hbm_per_cta = hbm / ctas
    inflight_bw = stages * max(stage_bytes, 1.0) / r.mem_latency_s  # Little's law, one CTA

    def wave(n_ctas: int) -> tuple[float, float]:
        per_sm = math.ceil(n_ctas / r.sm_count)
        # CUDA-core FMAs issue at the SM's peak only with SIMT_WARPS_FOR_PEAK warps resident
        busy = min(1.0, per_sm * float(simt_warps(tm)) / SIMT_WARPS_FOR_PEAK) if simt else 1.0
        compute = max(per_sm * t_cta / busy, t_chain, p.longest_cta * t_cta)
        memory = max(n_ctas * hbm_per_cta / (r.hbm_bw * p.hbm_frac), cta_bytes / inflight_bw)
        return compute, memory

    full, tail = divmod(ctas, slots)
    c_full, m_full = wave(slots)
    c_tail, m_tail = wave(tail) if tail else (0.0, 0.0)
    if p.persistent:  # one fill and one prologue / epilogue per resident CTA
        fill = r.mem_latency_s + math.ceil(min(ctas, slots) / r.sm_count) * p.cta_cycles / r.clock_hz
    else:
        fill = waves * r.mem_latency_s
    main = full * max(c_full, m_full) + max(c_tail, m_tail) + fill
    # fp32 partials written and read back, then one memory round trip for the in-kernel fix-up:
    # split-K: every output element s times; stream-K: at most one split tile per CTA
    partial = 2 * s * p.out_elems * 4 if s > 1 else 8.0 * tm * tn * min(tiles, ctas) if stream_k else 0.0
    reduce = partial / r.hbm_bw + r.mem_latency_s if (s > 1 or stream_k) else 0.0
    if stream_k and p.sk_kernel_shares and ctas / tiles > p.sk_kernel_shares:
        # a second launch reads every share's fp32 partial tile and writes the output
        reduce = 8.0 * tm * tn * ctas / r.hbm_bw + r.mem_latency_s + r.launch_s + p.sk_fixup_s
    elif stream_k and p.sk_fixup_s:
        reduce += max(ctas / tiles - 1.0, 0.0) * p.sk_fixup_s
    if s > 1 and p.split_kernel:
        reduce += r.launch_s
    launch = p.launches * r.launch_s + p.fixed_s
    return {
        "t_s": launch + main + reduce,
        "compute_s": full * c_full + c_tail, "memory_s": full * m_full + m_tail,
        "fill_s": fill, "reduce_s": reduce, "launch_s": launch,
        "flops": ctas * k_iters * p.flop_mult * 2.0 * tm * tn * tk,
        "bytes_hbm": hbm + partial, "bytes_l2": l2_total,
        "ctas": ctas, "waves": waves, "occupancy": occ, "k_iters": k_iters,
    }


# --- the vector path: every candidate of an op in one numpy pass ----------------------------

@dataclass(frozen=True)
class _Grid:
    """Candidate rows of one or more tile kernels with everything that does not depend on the
    op's shape or sparsity precomputed (cached per kernels x machine)."""

    which: np.ndarray  # problem index per row
    cfg: np.ndarray  # int rows (tm, tn, tk, split_k, stages)
    tm: np.ndarray
    tn: np.ndarray
    tk: np.ndarray
    s: np.ndarray  # split_k code (0 = stream-K)
    s_div: np.ndarray  # K slices (1 for stream-K)
    sk: np.ndarray  # stream-K rows
    s_is1: np.ndarray  # rows offered whatever the grid size (no split, or stream-K)
    hbm_scale: np.ndarray  # 1 / the kernel's HBM throughput relative to gemm_hbm_eff
    br: np.ndarray  # block rows (bh) per row
    a_step_bytes: np.ndarray  # x bytes per k-step
    w_step_bytes: np.ndarray  # dense W bytes per k-step
    step_s: np.ndarray  # seconds per k-step (MMA / smem / SFU + serial per step), issue time shared on the SM
    lat_s: np.ndarray  # latency seconds per k-step of one CTA, hidden by co-resident CTAs
    cta_s: np.ndarray  # seconds per CTA outside the main loop (prologue / epilogue)
    wave_fill_s: np.ndarray  # pipeline fill per wave (0 for a persistent kernel)
    once_fill_s: np.ndarray  # persistent kernel: one pipeline fill per call (0 otherwise)
    once_cta_s: np.ndarray  # persistent kernel: prologue / epilogue seconds per resident CTA (0 otherwise)
    tnk_s: np.ndarray  # tn·tk / clock: seconds per serial cycle per W element of a step
    tile_out: np.ndarray  # bytes written (and Q read) once per CTA
    slots: np.ndarray
    c_slots: np.ndarray  # CTAs per SM in a full wave
    lat_per_byte: np.ndarray  # Little's law: seconds per byte of one CTA's stream
    red_coef: np.ndarray  # split-K: seconds per output element of partial traffic
    red_const: np.ndarray  # split-K / stream-K: one memory round trip for the in-kernel fix-up
    sk_red: np.ndarray  # stream-K: seconds of partial traffic per split tile
    sk_min: np.ndarray  # stream-K: fewest k-steps per share
    sk_fix: np.ndarray  # stream-K: seconds per extra share of a tile (serial fix-up)
    sk_kshares: np.ndarray  # stream-K: shares per tile above which a second launch reduces (inf: never)
    wm0: np.ndarray  # wave raster height before clipping to the grid
    a_eb: np.ndarray  # x bytes per row of a panel per K element
    w_eb: np.ndarray  # dense W bytes per column of a panel per K element
    rows: np.ndarray  # (problem index, tm, tn, tk, split_k, stages)
    warps: np.ndarray  # SIMT rows: warps per CTA (an SM needs SIMT_WARPS_FOR_PEAK); 0 elsewhere
    has_sk: bool = False
    has_lat: bool = False
    has_warps: bool = False
    persistent: bool = False
    longest: float = 1.0


_ARRAY_FIELDS = tuple(f for f in _Grid.__dataclass_fields__
                      if f not in ("has_sk", "has_lat", "has_warps", "persistent", "longest"))
_GRIDS: OrderedDict[tuple, tuple[GPUSpec, _Grid]] = OrderedDict()


def _grid(problems: list[TileProblem], spec: GPUSpec, r: MachineRates, split: bool = True) -> _Grid:
    """The candidate grid of `problems` (cached per machine and static keys); without the
    split-K rows when `split` is false."""
    key = (id(spec), tuple(p.static_key() for p in problems), split)
    hit = _GRIDS.get(key)
    if hit is not None and hit[0] is spec:
        return hit[1]
    if len(problems) == 1 and split:
        g = _grid_one(problems[0], spec, r)
    elif len(problems) == 1:
        full = _grid(problems, spec, r)
        g = _Grid(**{f: getattr(full, f)[full.s_is1] for f in _ARRAY_FIELDS}, has_sk=full.has_sk,
                  has_lat=full.has_lat, has_warps=full.has_warps, persistent=full.persistent,
                  longest=full.longest)
    else:
        parts = [_grid(problems[i:i + 1], spec, r, split) for i in range(len(problems))]
        cols = {f: np.concatenate([getattr(q, f) for q in parts]) for f in _ARRAY_FIELDS}
        cols["has_sk"] = any(q.has_sk for q in parts)
        cols["has_lat"] = any(q.has_lat for q in parts)
        cols["has_warps"] = any(q.has_warps for q in parts)
        cols["persistent"] = any(q.persistent for q in parts)
        cols["longest"] = max(q.longest for q in parts)
        cols["which"] = np.concatenate([np.full(len(q.which), i, dtype=np.int64) for i, q in enumerate(parts)])
        cols["rows"] = np.column_stack([cols["which"], cols["cfg"]])
        g = _Grid(**cols)
    _GRIDS[key] = (spec, g)
    if len(_GRIDS) > 512:
        _GRIDS.popitem(last=False)
    return g


def _grid_one(p: TileProblem, spec: GPUSpec, r: MachineRates) -> _Grid:
    base = _stage_levels(arch_of(spec), *p.tile_family, float(p.elem_bytes), float(p.w_tile_frac),
                         float(p.a_per_step), float(p.q_once), float(spec.smem_bytes_per_sm),
                         float(spec.regs_bytes_per_sm))
    splits = (1,) if p.decomp == "none" else (STREAM_K,) if p.decomp == "stream_k" else SPLIT_K
    if p.decomp == "split_k+stream_k" and arch_of(spec) in STREAM_K_ARCHS:
        splits = (*splits, STREAM_K)
    if p.fixed_split:  # the library's own choice, offered whatever the grid size
        splits = (p.fixed_split,)
    nb, ns = len(base), len(splits)
    cfg = np.column_stack([np.repeat(base[:, :3], ns, axis=0), np.tile(np.array(splits, dtype=np.int64), nb),
                           np.repeat(base[:, 3], ns)]).reshape(-1, 5).astype(np.int64)
    tm, tn, tk, s, st = cfg.T.astype(float)
    eb = p.elem_bytes
    a_step = p.a_per_step * tm * tk * eb
    w_step = tn * tk * eb
    stage_bytes = a_step + p.w_tile_frac * w_step
    simt = _is_simt(p)
    feed = stage_bytes
    if simt:  # CUDA-core FMAs read operands from smem
        feed = np.maximum(feed, simt_smem_reads(tm, tn) * tk * eb)
    step = np.maximum(np.maximum(p.flop_mult * 2 * tm * tn * tk / p.peak_per_clk, feed / p.feed_bytes_per_clk),
                      p.sfu_per_mk * tm * tk) + p.serial_per_step + p.serial_per_mk * tm * tk
    smem = st * stage_bytes + p.q_once * tm * tn * eb
    occ = np.clip(np.minimum(np.floor(r.smem_bytes / np.maximum(smem, 1.0)),
                             np.floor(r.regs_bytes / (REG_BYTES_PER_ACC * tm * tn))), 1, MAX_CTAS_PER_SM)
    slots = np.minimum(r.sm_count * occ, p.max_ctas) if p.max_ctas else r.sm_count * occ
    split = s > 1
    sk = s == STREAM_K
    return _Grid(which=np.zeros(len(cfg), dtype=np.int64), cfg=cfg, tm=tm, tn=tn, tk=tk, s=s,
                 s_div=np.where(sk, 1.0, s), sk=sk, s_is1=~split | bool(p.fixed_split),
                 hbm_scale=np.full(len(cfg), 1.0 / p.hbm_frac),
                 br=np.full(len(cfg), float(p.block_rows)), a_step_bytes=a_step, w_step_bytes=w_step,
                 step_s=step / r.clock_hz, lat_s=np.full(len(cfg), p.latency_per_step / r.clock_hz),
                 cta_s=(0.0 if p.persistent else p.cta_cycles / r.clock_hz)
                 + p.epilogue_s * (1 + p.q_once) * tm * tn * eb,
                 wave_fill_s=np.full(len(cfg), 0.0 if p.persistent else r.mem_latency_s),
                 once_fill_s=np.full(len(cfg), r.mem_latency_s if p.persistent else 0.0),
                 once_cta_s=np.full(len(cfg), p.cta_cycles / r.clock_hz if p.persistent else 0.0), tnk_s=tn * tk / r.clock_hz, tile_out=(1 + p.q_once) * tm * tn * eb,
                 slots=slots, c_slots=np.ceil(slots / r.sm_count),
                 lat_per_byte=r.mem_latency_s / (st * np.maximum(stage_bytes, 1.0)),
                 red_coef=split * (8 * s / r.hbm_bw),
                 red_const=(split | sk) * r.mem_latency_s + split * (r.launch_s if p.split_kernel else 0.0),
                 sk_red=sk * (8 * tm * tn / r.hbm_bw),
                 wm0=np.maximum(np.round(np.sqrt(slots * tn / tm)), 1), a_eb=p.a_per_step * tm * eb, w_eb=tn * eb,
                 sk_min=np.full(len(cfg), float(p.sk_min_steps)), sk_fix=sk * p.sk_fixup_s,
                 sk_kshares=np.full(len(cfg), float(p.sk_kernel_shares) if p.sk_kernel_shares else np.inf),
                 rows=np.column_stack([np.zeros(len(cfg), dtype=np.int64), cfg]), has_sk=bool(sk.any()),
                 warps=simt_warps(tm) if simt else np.zeros(len(cfg)), has_warps=simt,
                 has_lat=p.latency_per_step > 0, persistent=p.persistent, longest=p.longest_cta)


_SPLIT = np.array(SPLIT_K, dtype=np.int64)


def _min_tiles(p: TileProblem, spec: GPUSpec) -> int:
    """A lower bound on the tile grid of `p` over its library tiles (largest tm and tn)."""
    tm_max, tn_max = _max_tile(arch_of(spec), p.tile_family[0])
    if p.tile_family[0] == "flash_attention":
        tn_max = p.n
    if p.expert_tokens:
        tiles_m = sum(-(-e // tm_max) for e in p.expert_tokens if e > 0) or 1
    else:
        tiles_m = -(-p.m // tm_max) * p.batch
    return tiles_m * -(-p.n // tn_max)


@lru_cache(maxsize=64)
def _max_tile(arch: str, family: str) -> tuple[int, int]:
    if family == "flash_attention":
        return max(a for a, _ in ATTN_TILES), 0
    if family == "bsr_tc":
        return 128, 256
    mn = CUSPARSELT_DEFAULT_TILES if family == "cslt_default" else \
        CUSPARSELT_SEARCHED_TILES if family == "cslt_searched" else NVJET_TILES if family == "nvjet" else \
        LIBRARY_TILES[arch]
    return max(a for a, _ in mn), max(b for _, b in mn)


def _needs_split(problems: list[TileProblem], spec: GPUSpec) -> bool:
    """Whether split-K rows are priced: only when the coarsest tile grid leaves SMs idle, or the
    library fixes a split itself."""
    return any(_min_tiles(p, spec) <= spec.sm_count or p.fixed_split > 1 for p in problems)


def tile_time_vec(problems: list[TileProblem], spec: GPUSpec) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`tile_time_scalar`'s t_s for every candidate of `problems` in one numpy pass.

    Returns (t_s, allowed, rows) with rows = (problem index, tm, tn, tk, split_k, stages).
    `allowed` is the split-K rule of `tile_configs` (split only while the grid leaves SMs idle
    and every slice keeps a k-step); t_s is priced for every row regardless.
    """
    r = machine_rates(spec)
    split = _needs_split(problems, spec)
    g = _grid(problems, spec, r, split)
    dyn = [_dyn(p, r) for p in problems]
    if len(problems) == 1:
        cols = [float(v) for v in dyn[0]]
    else:
        cols = list(np.array(dyn, dtype=float).T[:, g.which])
    t, allowed = _price(g, cols, dyn, r, split, problems)
    return t, allowed, g.rows


def tile_time_many(problem_lists: list[list[TileProblem]], spec: GPUSpec, split: bool = True
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """`tile_time_vec` for many ops at once (one numpy pass over ops x candidates).

    All lists must have the same static keys (same kernels, dtype, machine) and no grouped GEMM.
    Returns (t_s[op, row], allowed[op, row], rows) over the candidate grid (without its split-K
    rows when `split` is false, as `tile_time_vec` leaves them out for a grid that fills the SMs).
    """
    r = machine_rates(spec)
    g = _grid(problem_lists[0], spec, r, split)
    n_ops, n_p = len(problem_lists), len(problem_lists[0])
    dyn = [_dyn(p, r) for plist in problem_lists for p in plist]
    # op fields as (ops, rows) columns; the grid's per-row arrays broadcast against them
    table = np.array(dyn, dtype=float).reshape(n_ops, n_p, -1)[:, g.which, :]
    cols = [table[:, :, f] for f in range(table.shape[2])]
    t, allowed = _price(g, cols, dyn, r, split, [])
    return t, np.broadcast_to(allowed, t.shape), g.rows


def _dyn(p: TileProblem, r: MachineRates) -> tuple:
    """The op-dependent fields of a problem, in the order `_price` unpacks them."""
    return (p.m, p.n, p.k, p.batch, p.block_density, p.x_bytes + p.w_bytes, p.y_bytes, p.out_elems,
            p.launches * r.launch_s + p.fixed_s, p.w_traffic_frac, p.serial_per_nk)


def _price(g: _Grid, cols: list, dyn: list[tuple], r: MachineRates, split: bool,
           problems: list[TileProblem]) -> tuple[np.ndarray, np.ndarray]:
    """The equations of `tile_time_scalar` over the rows of `g` (op fields in `cols`)."""
    m, n, k, batch, bd, operands, yb, oe, fixed, wtf, ser = cols
    any_sparse = any(d[4] < 1.0 for d in dyn)
    any_big = any(d[5] > r.l2_bytes for d in dyn)
    any_serial = any(d[10] > 0 for d in dyn)
    tiles_mb = np.ceil(m / g.tm) * batch
    for i, p in enumerate(problems):  # grouped GEMM: ragged token counts per expert
        if p.expert_tokens:
            sel = g.which == i
            e = np.array([x for x in p.expert_tokens if x > 0] or [1], dtype=float)
            tiles_mb[sel] = np.ceil(e[None, :] / g.tm[sel, None]).sum(axis=1)
    tiles_n = np.ceil(n / g.tn)
    tiles = tiles_mb * tiles_n
    ctas = tiles * g.s_div
    k_slice = np.ceil(k / g.s_div)
    if any_sparse:
        visit = 1.0 - (1.0 - bd) ** (g.tn / g.br)
        k_iters = np.ceil(k_slice / g.tk * visit)
    else:
        visit = 1.0
        k_iters = np.ceil(k_slice / g.tk)
    ctas_dp = ctas
    has_sk = g.has_sk
    if has_sk:  # stream-K: tiles x k-steps in equal shares over the resident CTAs
        units = tiles * k_iters
        ctas = np.where(g.sk, np.minimum(g.slots, np.maximum(1.0, np.floor(units / g.sk_min))), ctas)
        k_iters = np.where(g.sk, np.ceil(units / ctas), k_iters)
    t_cta = (k_iters * (g.step_s + ser * g.tnk_s) if any_serial else k_iters * g.step_s) + g.cta_s
    cta_bytes = k_iters * (g.a_step_bytes + wtf * g.w_step_bytes) + g.tile_out
    per_slots = ctas / g.slots
    waves = np.ceil(per_slots)
    hbm = operands + yb + np.minimum(operands, r.dirty_bytes)
    if any_big:
        wm = np.minimum(g.wm0, tiles_mb)
        wn = np.minimum(np.maximum(np.ceil(g.slots / wm), 1), tiles_n)
        waves_dp = np.ceil(ctas_dp / g.slots) if has_sk else waves
        x_panels = np.minimum(waves_dp * wm, tiles_mb * np.ceil(tiles_n / wn))
        w_panels = np.minimum(waves_dp * wn, tiles_n * np.ceil(tiles_mb / wm))
        reads = (x_panels * g.a_eb + w_panels * wtf * g.w_eb) * k_slice * visit
        reread = np.maximum(0.0, np.minimum(ctas * cta_bytes, reads) - operands)
        hbm = hbm + reread * (operands > r.l2_bytes)
    hbm_cta_t = hbm * g.hbm_scale / (ctas * r.hbm_bw)
    per_cta_mem = cta_bytes * g.lat_per_byte
    full = np.floor(per_slots)
    tail = ctas - full * g.slots
    c_full, c_tail = g.c_slots * t_cta, np.ceil(tail / r.sm_count) * t_cta
    if g.has_warps:  # CUDA-core FMAs issue at the SM's peak only with SIMT_WARPS_FOR_PEAK warps resident
        need = np.where(g.warps > 0, SIMT_WARPS_FOR_PEAK, 1.0)
        c_full = c_full / np.minimum(1.0, g.c_slots * np.maximum(g.warps, 1.0) / need)
        c_tail = c_tail / np.minimum(1.0, np.maximum(np.ceil(tail / r.sm_count), 1.0) * np.maximum(g.warps, 1.0) / need)
    if g.has_lat:  # an SM is never faster than one CTA's chain (issue + the latency others hide)
        chain = t_cta + k_iters * g.lat_s
        c_full, c_tail = np.maximum(c_full, chain), np.maximum(c_tail, chain) * (tail > 0)
    if g.longest > 1.0:  # nor than its longest CTA (causal attention)
        c_full, c_tail = np.maximum(c_full, g.longest * t_cta), np.maximum(c_tail, g.longest * t_cta) * (tail > 0)
    main = (full * np.maximum(c_full, np.maximum(g.slots * hbm_cta_t, per_cta_mem))
            + np.maximum(c_tail, np.maximum(tail * hbm_cta_t, per_cta_mem) * (tail > 0))
            + waves * g.wave_fill_s)
    if g.persistent:  # one fill, and one prologue / epilogue per resident CTA (c_slots per SM)
        main = main + g.once_fill_s + np.ceil(np.minimum(ctas, g.slots) / r.sm_count) * g.once_cta_s
    t = main + fixed
    if has_sk:
        shares = ctas / tiles
        fix = g.sk_red * np.minimum(tiles, ctas) + g.sk_fix * np.maximum(shares - 1.0, 0.0)
        second = g.sk & (shares > g.sk_kshares)  # a second launch sums every share's partial
        if second.any():
            fix = np.where(second, g.sk_red * ctas + r.launch_s + g.sk_fix, fix)
        t = t + fix + g.red_const
    if split:
        t = t + g.red_coef * oe + (0.0 if has_sk else g.red_const)
        allowed = g.s_is1 | ((ctas_dp <= 2 * r.sm_count) & (g.s <= np.ceil(k / g.tk)))
    else:  # no split-K rows: every row allowed
        allowed = g.s_is1
    return t, allowed


# --- operand bytes (closed forms of simsparse.core.formats, inlined for speed; tests agree) --

def _whole(bits: float) -> float:
    """Bytes of `bits` packed back to back, rounded up once (formats._whole_bytes)."""
    return float(math.ceil(round(bits / 8, 6)))


def nm_weight_bytes(n: int, k: int, elem_bytes: float, nm: tuple[int, int] = (2, 4)) -> float:
    """N:M compressed W (cuSPARSELt): kept values + ceil(log2 m)-bit index per kept value."""
    kept = n * (k // nm[1]) * nm[0]
    return _whole(kept * elem_bytes * 8) + _whole(kept * (nm[1] - 1).bit_length())


def csr_weight_bytes(n: int, k: int, nnz: float, elem_bytes: float) -> float:
    """CSR: values + int32 column indices + int32 row pointer (formats.csr_nbytes)."""
    return _whole(nnz * elem_bytes * 8) + _whole(nnz * 32) + (n + 1) * 4


def bsr_weight_bytes(n: int, k: int, bh: int, bw: int, n_blocks: float, elem_bytes: float) -> float:
    """BSR: dense bh x bw blocks + int32 block-column index per block + int32 block-row pointer."""
    return _whole(n_blocks * bh * bw * elem_bytes * 8) + _whole(n_blocks * 32) + (math.ceil(n / bh) + 1) * 4


def tiled_csl_weight_bytes(n: int, k: int, nnz: float, elem_bytes: float, tile: int = 64) -> float:
    """Tiled-CSL (Flash-LLM): (value, uint16 position) per nonzero + int32 offset per tile + 1."""
    return _whole(nnz * elem_bytes * 8) + _whole(nnz * 16) + (math.ceil(n / tile) * math.ceil(k / tile) + 1) * 4


def _dense_w(op: Op) -> float:
    return float(op.n * op.k * op.dtype_bytes)


# --- tile problems per kernel ----------------------------------------------------------------

def _peak_per_clk(spec: GPUSpec, dtype: str) -> float:
    """Tensor-Core FLOP/clk/SM for the dtype, times its power-limited rate relative to fp16."""
    per_clk = spec.tc_flops_per_clk_per_sm.get(dtype, 0.0)
    if per_clk <= 0:  # fp32 without a TC path: CUDA cores (SGEMM, or attention in fp32)
        return spec.cuda_fp32_flops_per_clk_per_sm
    key = f"tc_rate.{dtype}"
    return per_clk * (param(spec, key) if key in PARAMS else 1.0)


def _l2_bw(spec: GPUSpec) -> float:
    """L2 -> SM bandwidth of the whole chip in bytes/s (datasheet-derived `l2_bw_gbps`; shared
    memory's 128 B/clk per SM where the spec has none)."""
    return _l2_bytes_per_clk_per_sm(spec) * spec.sm_count * (spec.boost_clock_hz or spec.clock_hz)


def _l2_bytes_per_clk_per_sm(spec: GPUSpec) -> float:
    """L2 -> SM bandwidth per SM per clock (datasheet-derived L2 bandwidth; shared memory's rate
    where the spec has none). A BSR k-step gathers the x rows of its block's columns from L2:
    consecutive blocks of a row sit at unrelated columns, so nothing is reused in shared memory."""
    if spec.l2_bw_gbps <= 0:
        return SMEM_BYTES_PER_CLK
    return min(SMEM_BYTES_PER_CLK, spec.l2_bw_gbps * 1e9 / (spec.sm_count * (spec.boost_clock_hz or spec.clock_hz)))


# op-dependent fields of a TileProblem, in field order (the rest is fixed per machine, kernel,
# dtype and call path: `_STATIC_KEYS`)
_OP_FIELDS = ("m", "n", "k", "batch", "block_density", "w_traffic_frac", "serial_per_nk", "x_bytes", "w_bytes",
              "y_bytes", "out_elems", "launches")
_OP_LO = TileProblem._fields.index("m")
_OP_HI = _OP_LO + len(_OP_FIELDS)
assert TileProblem._fields[_OP_LO:_OP_HI] == _OP_FIELDS
_TEMPLATES: dict[tuple, tuple[GPUSpec, TileProblem]] = {}


def cslt_default_max_ctas(dtype: str, spec: GPUSpec) -> int:
    """The default plan's persistent grid: fp16 in clusters of 4 (sm_90: 120 CTAs on 132 SMs),
    bf16 one CTA per SM."""
    if CUSPARSELT_DEFAULT_CLUSTER.get(dtype, 1) > 1 and arch_of(spec) == "sm_90":
        return max(4, int(spec.sm_count * CUSPARSELT_FP16_MAX_CTAS_PER_132_SM / 132) // 4 * 4)
    return spec.sm_count


def cslt_segment_n(dtype: str, n: int, spec: GPUSpec) -> int:
    """N as the default plan's grid covers it: fp16's N tiles rounded up to whole clusters of 4.
    The recorded grids launch the rounded tile count; with segment-K the phantom tiles take their
    K shares like real ones (data-parallel grids launch them too, but they exit at once)."""
    cluster = CUSPARSELT_DEFAULT_CLUSTER.get(dtype, 1) if arch_of(spec) == "sm_90" else 1
    tn = CUSPARSELT_DEFAULT_TILES[0][1]
    return -(-n // (tn * cluster)) * tn * cluster


def cslt_default_tiles(dtype: str, m_pad: int, n: int, spec: GPUSpec) -> int:
    """Tiles of the default plan's grid (cluster-rounded: `cslt_segment_n`)."""
    tm, tn = CUSPARSELT_DEFAULT_TILES[0]
    return cslt_segment_n(dtype, n, spec) // tn * -(-m_pad // tm)


def cslt_segment_k(dtype: str, m_pad: int, n: int, k: int, spec: GPUSpec) -> bool:
    """Whether cuSPARSELt's default heuristic runs segment-K (a stream-K split of K), as recorded
    on the H200's fit-half probe shapes (it reproduces all 1,692 recorded choices there):

    * more tiles than the persistent grid: on when the last wave would be at most half full
      (0 < (tiles mod grid) / grid <= 0.5) and K is long enough to cut (fp16 K >= 768,
      bf16 K >= 5120);
    * one wave or less: fp16 when the grid is at most 56 tiles and K >= 1152, bf16 when at most
      64 tiles and K >= 10240 (few CTAs, long K: split K to occupy more SMs; the narrow-layer probe,
      h200-probe-narrow-20261124, showed bf16 splitting from K = 10240, where the first probe had
      no bf16 shape between 8192 and 13824).
    """
    if arch_of(spec) != "sm_90":  # recorded on sm_90 only: elsewhere the plain data-parallel grid
        return False
    cap = cslt_default_max_ctas(dtype, spec)
    tiles = cslt_default_tiles(dtype, m_pad, n, spec)
    fp16 = dtype != "bf16"
    if tiles > cap:
        frac = (tiles % cap) / cap
        return 0 < frac <= 0.5 and k >= (768 if fp16 else 5120)
    return tiles <= 56 and k >= 1152 if fp16 else tiles <= 64 and k >= 10240


def _cslt_small_m(dtype: str, m_pad: int) -> bool:
    """Whether the default plan streams weights at its small-M rate (`cusparselt.<dtype>_small_m_hbm_frac`)."""
    return m_pad <= (CUSPARSELT_BF16_SMALL_M if dtype == "bf16" else CUSPARSELT_FP16_SMALL_M if dtype == "fp16" else 0)


def tile_problem(op: Op, kernel: str, spec: GPUSpec, variant: str | None = None) -> TileProblem:
    """The TileProblem of `op` run by tile kernel `kernel` on `spec`.

    Fast path of `tile_problem_reference` (same fields, tests agree): the fields that do not
    depend on the op's shape and sparsity come from the first problem built for the same
    (machine, kernel, dtype, call path, static choice); only the op's own fields are computed.
    """
    if kernel not in ("cublas", "cusparselt", "bsr_tc", "flash_llm") or op.kind not in GEMM_KINDS:
        return tile_problem_reference(op, kernel, spec, variant)
    b = DTYPE_BYTES[op.dtype]  # as in op.bytes_dense; the weight formats take it as a float
    bf = float(b)
    m, n, k, batch = op.m, op.n, op.k, op.batch
    dense_w = float(n * k * b)
    if kernel == "cusparselt":
        m_pad = -(-m // 8) * 8
        key = (id(spec), kernel, op.kind, op.dtype, variant, _cslt_small_m(op.dtype, m_pad),
               variant != "cslt_sparse_mm_searched_cudagraph" and cslt_segment_k(op.dtype, m_pad, n, k, spec))
    elif kernel == "bsr_tc":
        w = op.weight
        bh, bw = (w.bh, w.bw) if isinstance(w, Block) else (16, 16)
        key = (id(spec), kernel, op.kind, op.dtype, variant, bh, bw)
    else:
        key = (id(spec), kernel, op.kind, op.dtype, variant, op.m == 1)
    hit = _TEMPLATES.get(key)
    if hit is None or hit[0] is not spec:
        p = tile_problem_reference(op, kernel, spec, variant)
        if len(_TEMPLATES) > 1024:
            _TEMPLATES.clear()
        _TEMPLATES[key] = (spec, p)
        return p
    t = hit[1]
    x_bytes, y_bytes = float(batch * m * k * b), float(batch * m * n * b)
    if kernel == "cublas":
        fields = (m, n, k, batch, t.block_density, t.w_traffic_frac, t.serial_per_nk, x_bytes, dense_w * batch,
                  y_bytes, float(batch * m * n), t.launches)
    elif kernel == "cusparselt":
        w_bytes = nm_weight_bytes(n, k, bf) * batch
        frac = w_bytes / (dense_w * batch)
        launches = 2 if (variant == "semi_structured_linear" and m % 8) else 1
        # segment-K shares the cluster-rounded tile grid (phantom tiles too)
        n_grid = cslt_segment_n(op.dtype, n, spec) if t.decomp == "stream_k" else n
        fields = (m_pad, n_grid, k, batch, t.block_density, frac, t.serial_per_nk, x_bytes, w_bytes, y_bytes,
                  float(batch * m_pad * n), launches)
        return TileProblem._make((*t[:2], frac, *t[3:_OP_LO], *fields, *t[_OP_HI:]))
    elif kernel == "bsr_tc":
        n_blocks = w.density * (n // bh) * (k // bw)
        fields = (m, n, k, batch, w.density, t.w_traffic_frac, t.serial_per_nk, x_bytes,
                  bsr_weight_bytes(n, k, bh, bw, n_blocks, bf) * batch, y_bytes, float(batch * m * n), t.launches)
    else:  # flash_llm: Tiled-CSL bytes and decode scale with the density (tile_problem_reference)
        d = op.weight.density
        fields = (m, n, k, batch, t.block_density, d * (bf + 2) / bf, d * param(spec, "flash_llm.cycles_per_nnz"),
                  x_bytes, tiled_csl_weight_bytes(n, k, d * n * k, bf) * batch, y_bytes, float(batch * m * n),
                  t.launches)
    return TileProblem._make((*t[:_OP_LO], *fields, *t[_OP_HI:]))


def _epilogue_s(spec: GPUSpec) -> float:
    """Seconds per output byte of a persistent kernel's epilogue that its next tile does not hide
    (0 where the spec has no fitted `epilogue_bytes_per_clk`)."""
    bpc = param(spec, "epilogue_bytes_per_clk")
    return 1.0 / (bpc * spec.clock_hz) if bpc > 0 else 0.0


def tile_problem_reference(op: Op, kernel: str, spec: GPUSpec, variant: str | None = None) -> TileProblem:
    """The TileProblem of `op` run by tile kernel `kernel` on `spec` (every field spelled out)."""
    b = float(op.dtype_bytes)
    peak = _peak_per_clk(spec, op.dtype)
    dense = op.bytes_dense
    common: dict[str, Any] = dict(kernel=kernel, m=op.m, n=op.n, k=op.k, batch=op.batch, elem_bytes=b,
                                  w_tile_frac=1.0, a_per_step=1.0, q_once=0.0, flop_mult=1.0,
                                  sfu_per_mk=0.0, serial_per_nk=0.0, serial_per_step=0.0, block_density=1.0,
                                  w_traffic_frac=1.0,
                                  block_rows=1, tile_family=("gemm", 0, 0), decomp="split_k", split_kernel=False,
                                  x_bytes=float(dense["x"]),
                                  w_bytes=_dense_w(op) * op.batch, y_bytes=float(dense["y"]),
                                  out_elems=float(op.numel_out), launches=1)
    if kernel == "cublas":
        tc = spec.tc_flops_per_clk_per_sm.get(op.dtype, 0) > 0
        eff = param(spec, "cublas.tc_eff") if tc else param(spec, "cublas.simt_eff")
        if not tc:  # CUDA-core (SIMT) sgemm: SIMT_TILES from 32 tokens; one token runs a GEMV kernel
            common["tile_family"] = ("simt", int(op.m == 1), 0)
        # cuBLAS's Hopper kernels (nvjet_sm90_*) are persistent: every recorded grid <= SMs (probe)
        persistent = arch_of(spec) == "sm_90" and tc
        if persistent:
            common["tile_family"] = ("nvjet", 0, 0)
        return TileProblem(peak_per_clk=peak * eff, **{**common, "decomp": "split_k+stream_k",
                                                       "persistent": persistent,
                                                       "epilogue_s": _epilogue_s(spec) if persistent else 0.0})
    if kernel == "grouped_gemm":
        tokens = tuple(int(t) for t in (op.meta.get("expert_tokens") or (op.m,) * op.batch))
        active = sum(1 for t in tokens if t > 0)
        total = sum(tokens)
        # torch._grouped_mm: a kernel that builds the per-group problem list, then CUTLASS's
        # grouped GEMM (H200 profile: prepare_grouped_gemm + cutlass device_kernel)
        common.update(m=max(max(tokens), 1), batch=1, decomp="none", x_bytes=total * op.k * b,
                      w_bytes=active * _dense_w(op), launches=2,
                      y_bytes=total * op.n * b, out_elems=float(total * op.n),
                      hbm_frac=param(spec, "grouped_gemm.hbm_frac"))
        return TileProblem(peak_per_clk=peak * param(spec, "grouped_gemm.tc_eff"), expert_tokens=tokens, **common)
    if kernel == "cusparselt":
        # the sparse operand is A (W); torch pads the dense operand's rows (our M) to a multiple of 8
        w_bytes = nm_weight_bytes(op.n, op.k, b) * op.batch
        m_pad = -(-op.m // 8) * 8
        launches = 2 if (variant == "semi_structured_linear" and op.m % 8) else 1
        frac = w_bytes / (_dense_w(op) * op.batch)
        # torch's _cslt_sparse_mm runs cuSPARSELt's default plan (alg_id 0; pytorch#115077)
        # unless a searched plan (torch._C._cusparselt.mm_search) is passed. The default plan is
        # one kernel (CUSPARSELT_DEFAULT_TILES) on a persistent grid, segment-K on or off
        # (`cslt_segment_k`), streaming weights slower at few tokens (`_cslt_small_m`). bf16 has
        # small-M rate applies to bf16's searched kernels as well (the probe: searched bf16 at M <= 16
        # is 0.7x cuBLAS where fp16's is 1.3x).
        small = _cslt_small_m(op.dtype, m_pad)
        searched = variant == "cslt_sparse_mm_searched_cudagraph"
        segment = not searched and cslt_segment_k(op.dtype, m_pad, op.n, op.k, spec)
        common.update(m=m_pad, n=cslt_segment_n(op.dtype, op.n, spec) if segment else op.n,
                      w_bytes=w_bytes, w_tile_frac=frac, w_traffic_frac=frac,
                      decomp="split_k" if searched else "stream_k" if segment else "none", split_kernel=True,
                      tile_family=("cslt_searched", CUSPARSELT_SEARCHED_MIN_TOKENS.get(op.dtype, 64), 0)
                      if searched and arch_of(spec) == "sm_90" else ("gemm", 0, 0) if searched
                      else ("cslt_default", 0, 0),
                      fixed_s=0.0 if searched else param(spec, "cusparselt.default_plan_s"),
                      launches=launches, out_elems=float(op.batch * m_pad * op.n),
                      # per-CTA prologue/epilogue: searched plans only (fitted ~0 for the default plan,
                      # whose per-call overhead is default_plan_s)
                      cta_cycles=param(spec, "cusparselt.cta_cycles") if searched else 0.0,
                      # the searched plans are persistent (probe: every recorded grid <= SMs); the
                      # default plan's grid is persistent too, but priced per wave it fits better
                      # (fit-half MAPE 8.3 % against 9.3 % with one fill)
                      persistent=searched and arch_of(spec) == "sm_90",
                      epilogue_s=_epilogue_s(spec) if searched and arch_of(spec) == "sm_90" else 0.0)
        eff = param(spec, "cusparselt.tc_eff" if searched else "cusparselt.default_tc_eff")
        if not searched:
            common.update(max_ctas=cslt_default_max_ctas(op.dtype, spec), sk_min_steps=CUSPARSELT_SEGMENT_MIN_STEPS,
                          sk_kernel_shares=CUSPARSELT_SEGMENT_KERNEL_SHARES,
                          sk_fixup_s=param(spec, "cusparselt.segment_fixup_s"))
        if small and not searched:
            common["hbm_frac"] = param(spec, f"cusparselt.{op.dtype}_small_m_hbm_frac")
        elif small and op.dtype == "bf16":  # bf16's searched kernels stream slowly too
            common["hbm_frac"] = param(spec, "cusparselt.bf16_searched_small_m_hbm_frac")
        else:
            common["hbm_frac"] = param(spec, "cusparselt.hbm_frac")
        return TileProblem(peak_per_clk=peak * spec.sparse_tc_speedup * eff, **common)
    if kernel == "bsr_tc":
        w = op.weight
        bh, bw = (w.bh, w.bw) if isinstance(w, Block) else (16, 16)
        n_blocks = w.density * (op.n // bh) * (op.k // bw)
        common.update(w_bytes=bsr_weight_bytes(op.n, op.k, bh, bw, n_blocks, b) * op.batch,
                      block_density=w.density, block_rows=bh, tile_family=("bsr_tc", bh, bw), decomp="none",
                      serial_per_step=param(spec, "bsr_tc.cycles_per_block"), fixed_s=param(spec, "bsr_tc.fixed_s"),
                      # the x rows a block needs are gathered token by token (tm of them per block)
                      serial_per_mk=param(spec, "bsr_tc.cycles_per_token") / bw,
                      latency_per_step=param(spec, "bsr_tc.latency_per_block"),
                      feed_bytes_per_clk=_l2_bytes_per_clk_per_sm(spec))
        return TileProblem(peak_per_clk=peak * param(spec, "bsr_tc.tc_eff"), **common)
    if kernel == "flash_llm":
        d = op.weight.density
        # moves Tiled-CSL (value, uint16 position) pairs; extracts them into a dense W tile in
        # shared memory that the MMA reads (the shared-memory stage is dense)
        common.update(w_bytes=tiled_csl_weight_bytes(op.n, op.k, d * op.n * op.k, b) * op.batch,
                      w_traffic_frac=d * (b + 2) / b, serial_per_nk=d * param(spec, "flash_llm.cycles_per_nnz"))
        return TileProblem(peak_per_clk=peak * param(spec, "flash_llm.tc_eff"), **common)
    if kernel == "flash_attention":
        a = op.attn
        # per (batch, kv head): M = q_len x the query heads sharing it (GQA packing, as
        # FlashAttention does), N = head_dim (one tile wide), K = kv_len; per kv step S = Q·Kᵀ and
        # O = P·V (2 GEMMs), K and V tiles loaded (w_tile_frac 2), Q held once
        hd = a.head_dim
        group = a.heads // a.n_kv_heads
        # FA3 / cuDNN overlap softmax with the MMA on Hopper; FlashAttention-2 (torch's flash
        # backend, variant sdpa_flash) runs them one after the other on every architecture
        fa2 = variant == "sdpa_flash"
        overlap = spec.arch == "sm_90" and not fa2
        # FA2 splits the keys over CTAs by its own heuristic (in practice only where few query
        # blocks exist: decode); split, it runs its split-KV kernel (64 query rows) and a combine
        # kernel. A decode step with GQA counts a KV head's query heads as the rows of one block.
        splits = 0
        if fa2:
            rows = (a.batch * a.n_kv_heads * -(-group // FA2_SPLIT_BLOCK_M) if a.q_len == 1
                    else a.batch * a.heads * -(-a.q_len // FA2_SPLIT_BLOCK_M))
            splits = fa2_num_splits(rows, a.kv_len, hd, spec.sm_count)
        eff = param(spec, "flash_attention.fa2_tc_eff" if fa2 else "flash_attention.tc_eff")
        return TileProblem(kernel=kernel, elem_bytes=b, w_tile_frac=2.0, a_per_step=0.0, q_once=1.0,
                           flop_mult=2.0, peak_per_clk=peak * eff,
                           sfu_per_mk=1.0 / SFU_OPS_PER_CLK if overlap else 0.0,
                           serial_per_nk=0.0 if overlap else 1.0 / (SFU_OPS_PER_CLK * hd),
                           w_traffic_frac=2.0, serial_per_step=0.0, block_rows=hd,
                           tile_family=("flash_attention", hd, FA2_SPLIT_BLOCK_M if splits > 1 else 0),
                           decomp="split_k", split_kernel=True, fixed_split=splits,
                           m=a.q_len * group, n=hd, k=a.kv_len, batch=a.batch * a.n_kv_heads,
                           block_density=a.score_fraction, x_bytes=float(dense["x"]), w_bytes=float(dense["w"]),
                           y_bytes=float(dense["y"]), out_elems=float(op.numel_out), launches=1,
                           fixed_s=param(spec, "flash_attention.fixed_s"),
                           hbm_frac=param(spec, "flash_attention.hbm_frac"),
                           longest_cta=1.0 / a.score_fraction if a.causal else 1.0)
    raise ValueError(f"kernel: {kernel!r} is not a tile kernel; allowed: {', '.join(TILE_KERNELS)}")


# --- candidate configurations of a tile kernel (what the library can instantiate) -----------

def tile_configs(op: Op, kernel: str, spec: GPUSpec, variant: str | None = None) -> np.ndarray:
    """Candidate (tm, tn, tk, split_k, stages) rows (int array, 5 columns) of a tile kernel for `op`.

    The library's tiles for the architecture x pipeline depths 2..max x split-K 1..16, keeping
    what fits the SM (shared memory, registers). Prunings as the libraries' heuristics do: per
    tile the deepest pipeline for one CTA per SM and the deepest for two (at equal occupancy a
    deeper pipeline never costs more in the model); split K only while the tile grid leaves SMs
    idle (tiles·s <= 2·SMs) and every slice keeps a k-step (cuBLAS splits small grids only).
    """
    _, allowed, rows = tile_time_vec([tile_problem(op, kernel, spec, variant)], spec)
    return rows[allowed, 1:]


@lru_cache(maxsize=512)
def _stage_levels(arch: str, family: str, a: int, b: int, elem_bytes: float, w_frac: float, a_step: float,
                  q_once: float, smem: float, regs: float) -> np.ndarray:
    """Rows (tm, tn, tk, stages): per library tile, the deepest pipeline for each occupancy."""
    if family == "flash_attention":  # a = head_dim: one tile spans the head; FA keeps 2 stages
        # FlashAttention-2/3 and cuDNN's fused kernels on sm_80 / sm_90 fix Br = 128 query rows
        # per CTA (H200 measurements: a causal 512-1024 sequence takes as long as a full one,
        # which tiles of 64 would spread)
        # (decode too: at a large batch FA2 runs one token per 128-row tile, 64x the MMA work)
        tiles = [(br, a, bc) for br, bc in ATTN_TILES if br == 128 or arch not in ("sm_80", "sm_90")]
        if b:  # FlashAttention-2's split-KV kernel: b = 64 query rows, its own kv block (fa2_kv_block)
            tiles = [(b, a, fa2_kv_block(a))]
        depths = range(2, 3)
    else:
        tk = max(16, int(TILE_K_BYTES[arch] / elem_bytes))
        mn = LIBRARY_TILES[arch]
        if family == "cslt_default":
            mn = CUSPARSELT_DEFAULT_TILES
        elif family == "nvjet":
            mn = NVJET_TILES
        depths = range(2, MAX_STAGES[arch] + 1)
        if family == "simt" and not a:
            # fp32 without Tensor Cores: cuBLAS's SIMT tiles (from 32 tokens); M = 1 is a GEMV
            mn = SIMT_TILES
        if family == "bsr_tc":  # a x b = bh x bw blocks, one block per k-step; torch's Triton
            # bsr_dense_mm runs one program per block row (tn = bh) and tiles the dense columns (M)
            mn = tuple((tm, a) for tm in (16, 32, 64, 128))
            tk = b
        tiles = [(tm, tn, tk) for tm, tn in mn]
        if family == "cslt_searched":  # a = the smallest token tile of the dtype; two k-steps
            tiles = [(tm, tn, kk) for tm, tn in CUSPARSELT_SEARCHED_TILES if tm >= a
                     for kk in CUSPARSELT_SEARCHED_TK]
    rows = []
    for tm, tn, tk in tiles:
        if REG_BYTES_PER_ACC * tm * tn > regs:
            continue
        per_stage = (a_step * tm + w_frac * tn) * tk * elem_bytes
        resident = q_once * tm * tn * elem_bytes
        by_regs = int(regs // (REG_BYTES_PER_ACC * tm * tn))
        # the deepest pipeline that fits one CTA per SM and the deepest that fits two (CUTLASS's
        # StageCountAuto and cuBLAS's 2-CTA variants); at equal occupancy deeper never costs more
        level: dict[int, int] = {}
        for st in depths:
            if st * per_stage + resident > smem:
                break
            occ = max(1, min(int(smem // (st * per_stage + resident)), by_regs, MAX_CTAS_PER_SM))
            level[min(occ, 2)] = st
        rows += [(tm, tn, tk, st) for st in sorted(set(level.values()))]
    out = np.array(rows, dtype=np.int64).reshape(-1, 4)
    out.setflags(write=False)
    return out


# --- streaming (CUDA-core) kernels ----------------------------------------------------------

ACT_GEMV_THREADS = 128  # fused gather-GEMV: threads per block, 8 output columns per thread
ACT_GEMV_BLOCKS_PER_SM = 8  # the kernel splits the index list so ~8 blocks per SM are in flight


def act_gemv_grid(n: int, nnz: int, sm_count: int) -> tuple[int, int]:
    """(column blocks, index-list chunks) of the fused gather-GEMV (simsparse/kernels/gpu.py; the
    kernel then evens the chunks out, which can drop a few: not modelled, so the count never
    falls as activations get denser)."""
    gx = -(-n // (ACT_GEMV_THREADS * 8))
    return gx, max(1, min(-(-ACT_GEMV_BLOCKS_PER_SM * sm_count // gx), -(-nnz // 8)))


def colmajor_segments(op: Op, spec: GPUSpec) -> tuple[float, float]:
    """(segments touched, segments fetched from L2) by cuSPARSE csrmm_alg1 on a column-major x.

    Every nonzero of a row reads x[k, j] for each of the M columns, so a row's nonzeros share a
    64-byte segment (16 fp32 along K) of a column: touched = N x M x K/16 x P(a segment holds a
    nonzero) (fit half: time grows ~d^0.6 with density, not ~d). A CTA works on 16 columns of x
    (CSRMM_COLS_PER_CTA), a slice of K x 16 values. Where the slice fits in an SM's L1 (taken as the
    shared-memory / L1 capacity the SM can configure, `smem_bytes_per_sm`), the rows an SM works on
    share its segments and L2 serves each distinct one once per SM; where it does not, every row's
    segments come from L2 (column indices are sorted, so each row sweeps the slice in order and an
    LRU cache smaller than it keeps nothing for the next row). Fit half, SM cycles per touched
    segment at M >= 128, the same at every M of a shape: K <= 3584 with N >= 1024 0.75-0.98,
    K >= 6144 (slice 384-448 KiB) 1.14-1.42, N <= 768 (few rows per SM to share) 0.87-1.32.
    """
    d = op.weight.density
    seg = COLMAJOR_SEGMENT_BYTES / op.dtype_bytes  # values of one column per segment
    segs_per_col = -(-op.k // seg)
    m_total = op.m * op.batch
    touched = op.n * m_total * segs_per_col * (1.0 - (1.0 - d) ** seg)
    if op.k * CSRMM_COLS_PER_CTA * op.dtype_bytes > spec.smem_bytes_per_sm:
        return touched, touched
    rows_per_sm = max(1.0, op.n / spec.sm_count)
    sms = min(float(spec.sm_count), float(op.n))
    fetched = sms * m_total * segs_per_col * (1.0 - (1.0 - d) ** (seg * rows_per_sm))
    return touched, min(touched, fetched)


def stream_time(op: Op, kernel: str, spec: GPUSpec, variant: str | None = None) -> dict[str, float]:
    """Time and traffic of a CUDA-core kernel whose library picks the split.

    t = launches + fixed + max(decode, FMA, HBM) + fill, with (per family)
      CSR SpMM (cuSPARSE): decode = nnz x cycles_per_nnz; FMA = 2·nnz·M at flop_eff of the FP32
        peak; M = 1 runs as SpMV: HBM only; `fixed_s` = the library's extra kernels and set-up on
        the device; a column-major dense operand (CuPy's, every M): a memset of y, then the 64-byte
        segments of x the nonzeros touch at cycles_per_segment_colmajor each plus those fetched
        from L2 at cycles_per_l2_segment_colmajor (colmajor_segments), `fixed_s_cupyx`;
      BSR SpMM: decode = blocks x (cycles_per_block + bh·bw x cycles_per_value); the x gather =
        blocks x bw x M values from L2 at a fraction of the L2 bandwidth: overlapped with the decode
        in cuSPARSE bsrmm (fp32: max), after it in torch's half-precision kernel (sum);
      activation-sparse GEMV (fused gather kernel): HBM rows of the nonzero activations at
        act_gemv.hbm_eff, or the fp32 atomics of its split index list (chunks x N adds at
        atomics_per_s, and no faster than the chunks' adds to one element in sequence at
        atomic_serial_s each), whichever is longer; a memset launch for y.
    """
    r = machine_rates(spec)
    sm_clk = spec.sm_count * (spec.boost_clock_hz or spec.clock_hz)
    b = float(op.dtype_bytes)
    fma_peak = spec.cuda_fp32_peak
    m_total = op.m * op.batch
    dense = op.bytes_dense
    x_bytes, y_bytes = dense["x"], dense["y"]
    writes = y_bytes
    bw = r.stream_bw
    fixed = 0.0
    if kernel in ("cusparse_csr", "sputnik"):
        nnz = op.weight.density * op.n * op.k
        w = csr_weight_bytes(op.n, op.k, nnz, b) * op.batch
        hbm = w + x_bytes + y_bytes
        flops = 2 * nnz * m_total
        launches = 1
        l2 = nnz * op.batch * (op.m * b) + hbm  # each nonzero gathers a row of xᵀ (L2-resident)
        if kernel == "cusparse_csr":
            fixed = param(spec, "cusparse_csr.fixed_s")
            eff = param(spec, "cusparse_csr.flop_eff")
        else:
            eff = param(spec, "sputnik.flop_eff")
        if variant == "cupyx_csr_matmul":
            # CuPy (cupy/cusparse.py spmm): y = cupy.zeros((N, M), order="F"), a memset of y, then
            # cusparseSpMM on column-major x, csrmm_alg1 for every M (M = 1 included: x is 2-D; fit
            # half, M = 1: 24576 x 6144 at d = 0.01 takes 9.6 us over the small shapes' 14.5 us,
            # streaming W once would take 2.8 us);
            # the kernel's work is the 64-byte segments of x its rows touch (colmajor_segments), at
            # cycles_per_segment_colmajor each, plus those fetched from L2 at
            # cycles_per_l2_segment_colmajor; the nonzeros' decode is part of the per-segment work
            touched, fetched = colmajor_segments(op, spec)
            decode = 0.0
            fma = max(flops / fma_peak, (touched * param(spec, "cusparse_csr.cycles_per_segment_colmajor")
                                         + fetched * param(spec, "cusparse_csr.cycles_per_l2_segment_colmajor")) / sm_clk)
            l2 = fetched * COLMAJOR_SEGMENT_BYTES + hbm
            launches = 2  # cudaMemsetAsync(y) + csrmm_alg1
            fixed = param(spec, "cusparse_csr.fixed_s_cupyx") + y_bytes / bw  # the memset writes y once more
        elif op.m == 1:  # SpMV: streams the matrix once
            decode, fma = 0.0, flops / fma_peak
        else:
            decode = nnz * op.batch * param(spec, f"{kernel}.cycles_per_nnz") / sm_clk
            fma = flops / (fma_peak * eff)
    elif kernel == "cusparse_bsr":
        w_ = op.weight
        bh, bwid = (w_.bh, w_.bw) if isinstance(w_, Block) else (16, 16)
        n_blocks = w_.density * (op.n // bh) * (op.k // bwid)
        w = bsr_weight_bytes(op.n, op.k, bh, bwid, n_blocks, b) * op.batch
        hbm = w + x_bytes + y_bytes
        nnz = n_blocks * bh * bwid
        fp32 = op.dtype == "fp32"
        # decode: a per-block cost (index, block-row bookkeeping) plus a per-stored-value cost
        # (values loaded and converted one by one), both independent of M
        sfx = "_fp32" if fp32 else ""
        # spread over the SMs that have block rows to work on: a block row's blocks are decoded in
        # sequence by the CTA that owns it, so fewer block rows than SMs leaves SMs idle
        # (cuSPARSE bsrmm, fp32; torch's half-precision kernel splits finer: fit half, N = 64..256)
        busy = min(1.0, math.ceil(op.n / bh) * op.batch / spec.sm_count) if fp32 else 1.0
        decode = n_blocks * op.batch * (param(spec, f"cusparse_bsr.cycles_per_block{sfx}")
                                        + bh * bwid * param(spec, f"cusparse_bsr.cycles_per_value{sfx}")) / (sm_clk * busy)
        flops = 2 * nnz * m_total
        gather_bytes = n_blocks * op.batch * bwid * op.m * b  # x rows each stored block reads (from L2)
        if fp32:
            # cuSPARSE bsrmm: bound by gathering x, not by the FMAs — each stored block reads its bw
            # rows of x (M values each) from L2 and reuses them for its bh rows (fit half: at equal
            # density and M, 16x16 blocks take 1.8-2.1x the time of 32x32 ones, the same FMAs)
            fma = max(flops / fma_peak, gather_bytes / (_l2_bw(spec) * param(spec, "cusparse_bsr.gather_eff_fp32")))
        else:
            # fp16/bf16 (when torch's Triton path cannot run): torch's generic kernel gathers the
            # same x rows per block, but after decoding the block, not overlapped with it (fit
            # half: time = decode at M = 1 plus a per-token cost that grows with blocks x bw)
            decode += gather_bytes / (_l2_bw(spec) * param(spec, "cusparse_bsr.gather_eff"))
            fma = flops / fma_peak  # the FP32 FMA peak stays a floor
        fixed = param(spec, "cusparse_bsr.fixed_s_fp32" if fp32 else "cusparse_bsr.fixed_s")
        launches = 1
        l2 = gather_bytes + hbm
    elif kernel == "act_gemv":
        act = op.activation
        cols = act.column_density(op.m) if isinstance(act, Activation) else act.density
        k_nz = cols * op.k
        w = k_nz * op.n * b * op.batch  # whole contiguous rows of Wᵀ for the nonzero activations
        writes = op.n * m_total * 4  # fp32 y (atomics)
        hbm = w + x_bytes + k_nz * 4 + writes  # x, int32 indices
        gx, gy = act_gemv_grid(op.n, max(int(round(k_nz)), 1), spec.sm_count)
        # split-K fp32 atomics: all of them through the L2's atomic units, and the gy adds to one
        # output element one after another (fit half, N = 768: time grows by ~90 ns per chunk)
        decode = max(gy * op.n * m_total / param(spec, "act_gemv.atomics_per_s"),
                     gy * op.m * param(spec, "act_gemv.atomic_serial_s"))
        flops = 2 * k_nz * op.n * m_total
        fma = flops / fma_peak
        launches = 2  # cudaMemsetAsync(y) + the gather-GEMV kernel
        l2 = hbm
        bw = spec.dram_bw * param(spec, "act_gemv.hbm_eff")
    elif kernel == "elementwise":
        hbm = x_bytes + y_bytes
        decode, fma, flops, launches, l2 = 0.0, op.flops / fma_peak, op.flops, 1, hbm
    else:
        raise ValueError(f"kernel: {kernel!r} is not a streaming kernel; allowed: {', '.join(STREAM_KERNELS)}")
    compute = max(decode, fma)
    hbm += min(hbm - writes, r.dirty_bytes)  # write-back of dirty L2 lines the reads displace
    memory = hbm / bw
    launch = launches * r.launch_s + fixed
    return {"t_s": launch + max(compute, memory) + r.mem_latency_s, "compute_s": compute, "memory_s": memory,
            "fill_s": r.mem_latency_s, "reduce_s": 0.0, "launch_s": launch, "flops": float(flops),
            "bytes_hbm": float(hbm), "bytes_l2": float(l2)}


# --- pricing -------------------------------------------------------------------------------

def host_overhead(kernel: str, variant: str | None, spec: GPUSpec) -> float:
    """Host time of one eager call on this call path (0 where no parameter or prior exists)."""
    v = variant or DEFAULT_VARIANT.get(kernel)
    return param(spec, f"host_s.{kernel}.{v}") if v else 0.0


def _peak_flops(op: Op, kinfo: KernelInfo, spec: GPUSpec) -> float:
    if kinfo.unit == "sparse_tensor":
        return spec.peak_flops(op.dtype, (2, 4))
    if kinfo.unit == "tensor" and spec.tc_flops_per_clk_per_sm.get(op.dtype, 0) > 0:
        return spec.peak_flops(op.dtype)
    return spec.cuda_fp32_peak


def make_cost(op: Op, kernel: str, spec: GPUSpec, parts: dict[str, float], variant: str | None = None) -> Cost:
    """Cost from the time components of one mapping (tile or streaming)."""
    kinfo = KERNELS[kernel]
    t = float(parts["t_s"])
    overhead = parts["launch_s"] + parts["fill_s"] + parts["reduce_s"]
    work = {"compute": parts["compute_s"], "memory": parts["memory_s"], "latency": overhead}
    bound = max(work, key=work.get)
    peak = _peak_flops(op, kinfo, spec)
    util = min(op.useful_flops / t / peak, 1.0) if t > 0 else 0.0
    energy = (float(parts["flops"]) * spec.pj_per_flop.get(op.dtype, 0.0)
              + float(parts["bytes_hbm"]) * spec.pj_per_byte_dram) * 1e-12
    if energy <= 0:
        energy = t * spec.tdp_w  # upper bound where the spec has no pJ numbers
    breakdown = {k: float(parts[k]) for k in ("compute_s", "memory_s", "fill_s", "reduce_s", "launch_s")}
    breakdown["host"] = host_overhead(kernel, variant, spec)
    return Cost(t_s=t, cycles=t * spec.clock_hz, flops=float(parts["flops"]),
                bytes_by_level={"hbm": float(parts["bytes_hbm"]), "l2": float(parts["bytes_l2"])},
                bound=bound, utilisation=util, energy_j=energy, breakdown_s=breakdown)


def cost(op: Op, mapping: Mapping, spec: GPUSpec) -> Cost:
    """Cost of `op` run as `mapping` on `spec`. A tile kernel without a tile is priced on the
    fastest configuration the library instantiates (its own heuristic, as the mapper would)."""
    kernel = mapping.kernel
    if kernel not in KERNELS:
        raise ValueError(f"kernel: {kernel!r} unknown; allowed: {', '.join(KERNELS)}")
    variant = mapping.params.get("variant")
    if kernel in STREAM_KERNELS:
        return make_cost(op, kernel, spec, stream_time(op, kernel, spec, variant), variant)
    tm, tn, tk = mapping.tile
    split_k, stages = mapping.split_k, int(mapping.params.get("stages", 2))
    if mapping.params.get("stream_k"):
        split_k = STREAM_K
    if not tm:
        t, rows, _ = evaluate(op, spec, (kernel,), variant)
        if not len(t) or not np.isfinite(t.min()):
            raise ValueError(f"op: no configuration of {kernel} fits {spec.name} for {op.shape_str()}")
        _, tm, tn, tk, split_k, stages = (int(v) for v in rows[int(np.argmin(t))])
    return tile_cost(op, tile_problem(op, kernel, spec, variant), spec, tm, tn, tk, split_k, stages, variant)


def tile_cost(op: Op, p: TileProblem, spec: GPUSpec, tm: int, tn: int, tk: int, split_k: int, stages: int,
              variant: str | None = None) -> Cost:
    """Cost of one tile mapping from its problem (scalar reference path)."""
    parts = tile_time_scalar(p, machine_rates(spec), tm, tn, tk, split_k, stages)
    return make_cost(op, p.kernel, spec, parts, variant)


# memo of evaluate(): holds the spec so that its id cannot be reused while the entry lives
_MEMO: OrderedDict[tuple, tuple[GPUSpec, tuple]] = OrderedDict()
_MEMO_SIZE = 4096
_ALL = object()


def evaluate(op: Op, spec: GPUSpec, kernels: tuple[str, ...], variant: str | None = None
             ) -> tuple[np.ndarray, np.ndarray, list[TileProblem]]:
    """Price every candidate of the tile `kernels` for `op` in one numpy pass.

    Returns (t_s, rows, problems): t_s per candidate (inf where `tile_configs` would not offer
    it), rows (kernel index into `kernels`, tm, tn, tk, split_k, stages) and the TileProblem of
    each kernel. Memoised per (op, spec, kernels, variant): the op's shape, dtype, sparsity and
    expert token counts are its whole input.
    """
    meta = op.meta.get("expert_tokens")
    key = (id(spec), op, tuple(meta) if meta else None, kernels, variant)
    hit = _MEMO.get(key)
    if hit is not None and hit[0] is spec:
        return hit[1]
    problems = [tile_problem(op, kern, spec, variant) for kern in kernels]
    t, allowed, rows = tile_time_vec(problems, spec)
    out = (t if allowed is _ALL or allowed.all() else np.where(allowed, t, np.inf), rows, problems)
    _MEMO[key] = (spec, out)
    if len(_MEMO) > _MEMO_SIZE:
        _MEMO.popitem(last=False)
    return out


def evaluate_many(ops: list[Op], spec: GPUSpec, kernels: tuple[str, ...], variant: str | None = None) -> None:
    """Price the tile `kernels` for many ops in one numpy pass per group of equal static keys and
    fill the `evaluate` memo (same answers as calling `evaluate` per op)."""
    groups: dict[tuple, list[tuple[Op, list[TileProblem]]]] = {}
    for op in ops:
        if op.meta.get("expert_tokens") or (id(spec), op, None, kernels, variant) in _MEMO:
            continue
        problems = [tile_problem(op, kern, spec, variant) for kern in kernels]
        split = _needs_split(problems, spec)  # split-K rows only where `tile_time_vec` prices them
        groups.setdefault((tuple(p.static_key() for p in problems), split), []).append((op, problems))
    for (_, split), members in groups.items():
        if len(members) == 1:
            evaluate(members[0][0], spec, kernels, variant)
            continue
        t, allowed, rows = tile_time_many([pl for _, pl in members], spec, split)
        t = np.where(allowed, t, np.inf)
        for i, (op, problems) in enumerate(members):
            _MEMO[(id(spec), op, None, kernels, variant)] = (spec, (t[i], rows, problems))
        while len(_MEMO) > _MEMO_SIZE:
            _MEMO.popitem(last=False)
