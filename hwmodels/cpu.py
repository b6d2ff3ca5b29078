"""CPU cost model: ARM NEON, WASM SIMD128, x86 AVX2 / AVX-512 — sparse micro-kernels as the
libraries build them, priced by counting instructions against the core's issue resources.

Every kernel is a loop nest over work units whose per-unit cycle cost comes from the
instructions it issues (vector loads against ``load_ports``, stores against
``store_ports``, multiply-adds against ``simd_issue_per_clk``), plus the memory levels it
streams from (DRAM, and the cache level holding the reused activation panel). Time is

    t = t_call + max(t_core, t_panel, t_dram)

with t_core = cycles / clock / threads. Where a spec gives a decode width (Cortex-A73: 2), every
per-unit cost is also at least its instruction count / decode width (``issue``); where it gives a
cluster-shared L2 bandwidth, the threads' panel traffic from L2 shares it. The per-unit cycle costs are named parameters
(``c_vec``, ``c_nnz`` …). Their defaults are first-principles instruction counts from the
spec's port numbers; a measured host overrides them with calibrated values in the spec's
``efficiency`` table (``"<family>.<param>"`` keys, each citing its calibration file).

Layout (XNNPACK sparse inference, Elsen et al., "Fast Sparse ConvNets", CVPR 2020): the
activation is channel-major, X[K, M] with M = pixels; the sparse weight W[N, K] is walked row
by row for each block of ``mr`` pixels; each nonzero adds w · X[k, block] into the block's
accumulators. Kernels:

* ``xnn_spmm``       XNNPACK f32-spmm MRx1: accumulators in registers, unstructured weights.
* ``xnn_spmm_block`` XNNPACK f32-spmm MRxNR (output-channel blocks NRx1, NR ∈ {2, 4}) and
                     1x4 input-channel blocks: one index per block, X loads shared by NR rows.
* ``cpu_group``      fine-grained group sparsity (SparseByteNN: 1xg vectors along K).
* ``cpu_fanin``      constant fan-in / constant-block sparsity (every row k nonzeros): the nnz
                     loop is unrolled and threads are balanced (AVX-512 sparse inference).
* ``cpu_nm``         N:M along K: n values + in-group positions per group of m, no row lengths.
* ``cpu_csr``, ``cpu_bsr``, ``cpu_bitmap``: this package's numba kernels
                     (simsparse/kernels/cpu.py): accumulators in an L1 scratch row.
* ``cpu_act_gemv``   activation-sparse GEMV: only the weight columns of nonzero activations.
* ``cpu_dense_gemm`` dense baseline: im2col + blocked GEMM (XNNPACK f32-gemm / OpenBLAS).
* ``cpu_depthwise``  dense depthwise convolution (XNNPACK dwconv, kh·kw taps per vector).
* ``cpu_dwconv``     this package's numba depthwise convolution in CHW (simsparse/kernels/cpu.py):
                     per output row, one pass over it per tap row (kw taps fused), scalar edges.
* ``cpu_eltwise``    element-wise / pooling pass (memory bound).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable

from hwmodels.kernels import KernelInfo, needs_activation_sparsity
from hwmodels.spec import CPUSpec
from simsparse.core.formats import format_nbytes
from simsparse.core.mapping import Cost, Mapping
from simsparse.core.ops import Op
from simsparse.core.sparsity import NM, Activation, Block, ConstantFanIn, Group, Sparsity

SPARSE_WEIGHT = ("unstructured", "nm", "block", "group", "channel", "constant_fan_in")
GEMM_KINDS = ("gemm", "conv2d")
XNN_MR = {"neon": 32, "wasm_simd128": 32, "avx2": 32, "avx512": 32}  # f32-spmm MR per ISA (XNNPACK today)
# XNNPACK's f32-spmm micro-kernels come in NEON / NEONFMA, WASM SIMD128, SSE and scalar variants only
# (google/XNNPACK src/f32-spmm/gen/: 4x1 / 16x1 / 32x1-minmax-sse.c, no AVX or AVX-512 file): on an AVX2 or
# AVX-512 core they run 128-bit vectors, so the xnn_* kernels' pixel vectors are at most this wide
XNN_SPMM_SIMD_BITS = 128
CACHE_USE = 0.5  # share of a cache the reused panel may fill (the rest holds output/weights; Goto blocking)
# DRAM bytes of an output written by a GEMM / SpMM that count toward its time: 1 (the write-back;
# the write-allocate fill overlaps, stores do not stall the loop). Byte counts in Cost are the
# time-relevant traffic, not the bus total (which is 2x for Y).
Y_TIME_FACTOR = 1.0
# steepness of the predictor's forgetting with sequence length (branch_learned): a table that keeps
# the most recent outcomes forgets a longer sequence almost at once (LRU-like: a steep hill)
BRANCH_HILL = 4.0


# --- legality rules -----------------------------------------------------------------------


def _native(op: Op, spec: object) -> str | None:
    """numba kernels need a native ISA (numba does not target WebAssembly)."""
    isa = getattr(spec, "isa", "")
    return None if isa != "wasm_simd128" else "numba kernels run natively, not under WASM"


def _not_depthwise(op: Op, spec: object) -> str | None:
    if op.conv is not None and op.conv.is_depthwise:
        return "depthwise convolution runs on cpu_depthwise"
    return None


def _is_depthwise(op: Op, spec: object) -> str | None:
    return None if op.conv is not None and op.conv.is_depthwise else "needs a depthwise convolution"


def _pointwise(op: Op, spec: object) -> str | None:
    """Sparse NCHW kernels run 1x1 convolutions and GEMMs (no im2col of a sparse operand)."""
    if op.conv is not None and (op.conv.kh, op.conv.kw, op.conv.groups) != (1, 1, 1):
        return "sparse CPU kernels run 1x1 convolutions (kh=kw=groups=1) and GEMMs"
    return None


def _xnn_blocks(op: Op, spec: object) -> str | None:
    w = op.weight
    if isinstance(w, Block) and (w.bh, w.bw) in ((2, 1), (4, 1), (1, 4), (1, 2), (8, 1)):
        return None
    return f"needs NRx1 output-channel blocks (2x1, 4x1, 8x1) or 1x2/1x4 blocks, got {w.label}"


def _group(op: Op, spec: object) -> str | None:
    return None if isinstance(op.weight, Group) else f"needs group (1xg vector) sparsity, got {op.weight.label}"


def _fanin(op: Op, spec: object) -> str | None:
    return None if isinstance(op.weight, ConstantFanIn) else f"needs constant fan-in sparsity, got {op.weight.label}"


def _numeric_dtype(op: Op, spec: object) -> str | None:
    ok = getattr(spec, "supports_dtype", lambda d: True)(op.dtype)
    return None if ok else f"{getattr(spec, 'name', 'cpu')} has no SIMD path for {op.dtype}"


KERNELS: dict[str, KernelInfo] = {k.name: k for k in (
    KernelInfo("cpu_dense_gemm", "cpu", GEMM_KINDS, ("*",), "dense", "simd", False,
               description="dense im2col + register-blocked GEMM (XNNPACK f32-gemm / OpenBLAS sgemm)",
               rules=(_not_depthwise, _numeric_dtype)),
    KernelInfo("cpu_depthwise", "cpu", ("conv2d",), ("*",), "dense", "simd", False,
               description="dense depthwise convolution, kh*kw taps per output vector (XNNPACK dwconv)",
               rules=(_is_depthwise,)),
    KernelInfo("cpu_dwconv", "cpu", ("conv2d",), ("*",), "dense", "simd", False,
               description="numba depthwise convolution, CHW, one pass per tap row over the output row "
                           "(simsparse.kernels.cpu)",
               rules=(_is_depthwise, _native, _numeric_dtype)),
    KernelInfo("xnn_spmm", "cpu", GEMM_KINDS, SPARSE_WEIGHT, "csr", "simd", True,
               description="XNNPACK sparse 1x1 conv / SpMM in NCHW, MR pixels x 1 channel in registers",
               rules=(_pointwise,)),
    KernelInfo("xnn_spmm_block", "cpu", GEMM_KINDS, ("block",), "bsr", "simd", True,
               description="XNNPACK SpMM with NRx1 output-channel blocks (or 1x4 input blocks), X loads shared",
               rules=(_pointwise, _xnn_blocks)),
    KernelInfo("cpu_group", "cpu", GEMM_KINDS, ("group",), "bsr", "simd", True,
               description="fine-grained group sparsity, 1xg vectors along K (SparseByteNN-style)",
               rules=(_pointwise, _group)),
    KernelInfo("cpu_fanin", "cpu", GEMM_KINDS, ("constant_fan_in",), "csr", "simd", True,
               description="constant fan-in SpMM: fixed nnz per row, unrolled, balanced (AVX-512 style)",
               rules=(_pointwise, _fanin)),
    KernelInfo("cpu_nm", "cpu", GEMM_KINDS, ("nm",), "nm", "simd", True,
               description="N:M SpMM on SIMD: n values + positions per group of m (numba on the host)",
               rules=(_pointwise,)),
    KernelInfo("cpu_csr", "cpu", GEMM_KINDS, SPARSE_WEIGHT, "csr", "simd", True,
               description="numba CSR SpMM, NCHW, pixel-blocked, L1 accumulator row (simsparse.kernels.cpu)",
               rules=(_pointwise, _native)),
    KernelInfo("cpu_bsr", "cpu", GEMM_KINDS, ("block",), "bsr", "simd", True,
               description="numba block-sparse (BSR bh x bw) SpMM, NCHW (simsparse.kernels.cpu)",
               rules=(_pointwise, _native)),
    KernelInfo("cpu_bitmap", "cpu", GEMM_KINDS, SPARSE_WEIGHT, "bitmap", "simd", True,
               description="numba bitmap SpMM: scans presence bits, one axpy per set bit",
               rules=(_pointwise, _native)),
    KernelInfo("cpu_act_gemv", "cpu", ("gemm",), ("*",), "dense", "simd", False, True,
               description="activation-sparse GEMV: reads only W columns of nonzero activations (TEAL)",
               rules=(needs_activation_sparsity,)),
    KernelInfo("cpu_eltwise", "cpu", ("eltwise", "attention"), ("*",), "dense", "simd", False,
               description="element-wise / pooling / attention pass (memory or FMA bound)"),
)}

NUMBA_KERNELS = ("cpu_csr", "cpu_bsr", "cpu_nm", "cpu_bitmap", "cpu_act_gemv")


# --- per-core rates -------------------------------------------------------------------------


def lanes(spec: CPUSpec, dtype: str) -> float:
    """Elements per SIMD vector for a dtype (fp32 lanes × the spec's per-dtype scale)."""
    # fp32 lanes = simd_bits / 32 (NEON/SIMD128: 4, AVX2: 8, AVX-512: 16)
    return spec.simd_bits / 32 * spec.dtype_lanes_scale.get(dtype, 1.0)


def xnn_mr(spec: CPUSpec) -> int:
    """Pixels per XNNPACK f32-spmm micro-kernel call: the spec's ``xnn.mr`` (the library version it
    models, e.g. 16 for the 2019-20 aarch64 kernels), else today's MR for its ISA."""
    return int(spec.efficiency.get("xnn.mr", XNN_MR.get(spec.isa, 32)))


def threads_of(spec: CPUSpec, mapping: Mapping | None = None) -> int:
    """Threads the mapping runs on (mapping.params['threads'], else the spec's runtime default)."""
    t = int((mapping.params.get("threads") if mapping is not None else 0) or spec.threads or spec.cores)
    return max(1, min(t, spec.cores))


MEASURED_THREADS = 1  # `simsparse measure --device cpu` times one pinned core (simsparse/measure_cpu.py)


def outside_measured(op: Op, mapping: Mapping, spec: CPUSpec) -> str | None:
    """Why a mapping of one of the spec's measured kernels lies outside what was measured, or None."""
    if threads_of(spec, mapping) != MEASURED_THREADS:
        return f"measured on {MEASURED_THREADS} thread(s), this mapping runs {threads_of(spec, mapping)}"
    return None


def issue(spec: CPUSpec, instructions: float) -> float:
    """Cycles the front end needs to decode `instructions` (0 where the spec sets no decode width).

    A narrow core (Cortex-A73: 2-wide decode) cannot feed its load and FMA ports at once when a
    loop body mixes loads, multiply-adds and address / index / loop instructions."""
    return instructions / spec.decode_width if spec.decode_width > 0 else 0.0


def default_params(spec: CPUSpec, family: str) -> dict[str, float]:
    """First-principles cycle costs of a kernel family from the spec's issue resources.

    Units: cycles per work unit, seconds for t_call_s. Each line counts the instructions
    of the family's inner loop (as the library's micro-kernel issues them) against ports.
    """
    fma = spec.simd_issue_per_clk  # vector multiply-adds per cycle (mul+add pairs without FMA)
    ld, st = spec.load_ports, spec.store_ports
    fp = spec.fp_pipes or spec.fma_units_per_core
    ov = spec.simd_overhead  # WASM engines: bounds checks and weaker code generation
    if family == "xnn":  # XNNPACK f32-spmm: X vector load + FMA per vector, accumulators in registers
        # each term is the larger of its port count and its decode count (issue(); 0 without a limit)
        return {
            "c_vec": ov * max(1 / fma, 1 / ld, issue(spec, 2)),  # 1 vector load + 1 multiply-add per vector
            # weight broadcast + input-offset loads, pointer add, counter decrement + branch (5 instructions)
            "c_nnz": ov * max(2 / ld + 1, issue(spec, 5)),
            "c_row": ov * max(4.0, issue(spec, 6)),  # nnz-count load, bias broadcasts into accumulators, loop
            "c_out": ov * max(1 / st + 2 / fp, issue(spec, 3)),  # store + min/max clamp per output vector
            "t_call_s": 0.0,
        }
    if family == "numba":  # simsparse numba kernels: accumulator row in L1 (load, FMA, store per vector)
        return {
            "c_vec": max(2 / ld, 1 / st, 1 / fma),  # acc + X loads, acc store, one multiply-add
            "c_tail": max(2 / ld, 1 / st, 1 / fma) / 2,  # one half-width or scalar trip of the loop tail
            "c_nnz": 4 / ld + 4,  # value + index loads, address arithmetic, loop setup
            "c_row": 8.0,  # row pointers, branch on empty row, loop
            "c_out": max(1 / ld, 1 / st),  # copy accumulator to Y (or zero it), per full vector
            "t_call_s": 5e-6,  # numba dispatch of a parallel (prange) function
            # cycles per X row segment an axpy starts when the pixels are split into blocks: the segment
            # (mb of the row's M pixels) is not contiguous with the previous nonzero's, so it opens a new
            # L2 stream and waits one L2 load-to-use latency (0 = not modelled; a spec calibrates it)
            "c_xseg": 0.0,
            # cycles of one accumulator update's dependency chain (load, multiply-add, store, forwarded
            # to the next update of the row): the floor per stored weight and pixel block (0 = off)
            "c_chain": 0.0,
        }
    if family == "cpu_bitmap":
        # load + test per byte; shift/test/branch per bit; c_miss: cycles per mispredicted branch
        # (0 = not modelled; a spec calibrates it, e.g. host)
        # bp_keep: hard branch outcomes the predictor keeps across repeated scans (branch_learned; 0 = off)
        return {"c_byte": 2.0, "c_bit": 1.0, "c_miss": 0.0, "bp_keep": 0.0}
    if family == "cpu_bsr":
        # c_blk: block-column index load + loop nest setup per block. chain_free_pixels: pixel loops of
        # at most this many pixels pay no accumulator chain (c_chain) in the BSR kernel: the code LLVM
        # emits for it there does not wait on the row's previous store (0 = every loop pays, as CSR's)
        return {"c_blk": 4 / ld + 4, "chain_free_pixels": 0.0}
    if family == "cpu_nm":
        return {"c_grp": 2.0}  # group loop: counter, base column, branch
    if family == "gemm":  # register-blocked GEMM micro-kernel (mr x nr tile, FMA bound)
        # c_im2col_el / _el_strided / _run: cycles per element copied (contiguous / gathered at a stride) and
        # per row run of a KxK convolution's explicit column copy (im2col_cost). 0 = the library convolves
        # without one (XNNPACK's indirect GEMM, oneDNN's direct convolution); a spec whose library copies
        # calibrates them (host: numpy, kernels.cpu.im2col)
        return {"eff": 1.0, "c_pack": 2 / ld + 1 / st, "t_call_s": 0.0, "c_im2col_el": 0.0,
                "c_im2col_el_strided": 0.0, "c_im2col_run": 0.0}
    if family == "cpu_act_gemv":
        return {"c_scan": 1.0}  # load + compare + branch per activation
    if family == "cpu_eltwise":
        # c_flop: core cycles per FLOP of an element-wise pass (0 = at the SIMD rate: its FLOPs / the vector
        # units' rate); an exp-based activation costs the library's exp, not 4 FLOPs at the FMA rate.
        # stream_eff: the share of the probe's DRAM bandwidth the pass's sequential streams get (0 = the
        # compute kernels' share, dram_eff). A spec whose element-wise passes were timed calibrates both (host)
        return {"c_flop": 0.0, "stream_eff": 0.0}
    if family == "cpu_dwconv":
        return {
            "c_v": max(1 / ld, 1 / st),  # per output vector of a tap row's pass: load and store the output
            "c_x1": max(1 / ld, 1 / fma),  # per tap and output vector at stride 1: an input load + multiply-add
            # stride 2: LLVM leaves the every-other-element loop scalar (no strided vector load on these ISAs);
            # per output element its load and store, and per tap a scalar load + multiply-add
            "c_s2": 2 / ld + 1 / st,
            "c_x2": max(1 / ld, 1 / fma),
            "c_tap": 8.0,  # per tap row: bounds test, kw weight broadcasts, loop set-up
            "c_row": 8.0,  # per output row: row offsets and the loop over tap rows
            "c_edge": 4.0,  # per scalar edge tap: bounds test, load, multiply-add, store
        }
    raise ValueError(f"family: got {family!r}; allowed: xnn, numba, cpu_bitmap, cpu_bsr, cpu_nm, gemm, "
                     "cpu_act_gemv, cpu_dwconv, cpu_eltwise")


def params(spec: CPUSpec, family: str) -> dict[str, float]:
    """Cycle costs of a family: calibrated values from spec.efficiency override the defaults."""
    out = default_params(spec, family)
    for key in out:
        cal = spec.efficiency.get(f"{family}.{key}")
        if cal is not None:
            out[key] = cal
    return out


def _bw(spec: CPUSpec, level: str) -> float:
    """Bandwidth in bytes/s of a memory level, per core for caches, whole chip for DRAM.

    "stream" is DRAM read by one sequential stream that nothing else competes with (GEMV):
    its achieved share ``stream_eff`` of the probe bandwidth differs from the share
    ``dram_eff`` a compute kernel's scattered compulsory traffic gets. "gemv" is BLAS GEMV's read
    of several rows of W at once (``gemv_stream_eff``, falling back to the one-stream share)."""
    if level == "dram":
        return spec.dram_bw * spec.efficiency.get("dram_eff", 1.0)
    if level == "stream":
        return spec.dram_bw * spec.efficiency.get("stream_eff", 1.0)
    if level == "gemv":
        return spec.dram_bw * spec.efficiency.get("gemv_stream_eff", spec.efficiency.get("stream_eff", 1.0))
    if level == "eltwise":  # an element-wise pass's sequential streams (cpu_eltwise.stream_eff; else as "dram")
        return spec.dram_bw * (spec.efficiency.get("cpu_eltwise.stream_eff") or spec.efficiency.get("dram_eff", 1.0))
    per_clk = {"l1": spec.l1_bw_bytes_per_clk, "l2": spec.l2_bw_bytes_per_clk,
               "l3": spec.l3_bw_bytes_per_clk}[level]
    if per_clk <= 0:  # unknown: fall back to what the load ports can pull per cycle
        per_clk = spec.load_ports * spec.simd_bits / 8
    return per_clk * spec.clock_hz


def _panel_bw(spec: CPUSpec, level: str, threads: int) -> float:
    """Bandwidth in bytes/s with which `threads` cores together read a panel from `level`.

    L1 and L2 are per core (× threads), unless the spec gives a cluster-shared L2 bandwidth
    (``l2_shared_bw_bytes_per_clk``: the cores of a cluster share one L2), which caps the sum."""
    if level == "l1":
        return _bw(spec, "l1") * threads
    if level == "l2":
        bw = _bw(spec, "l2") * threads
        if spec.l2_shared_bw_bytes_per_clk > 0:
            bw = min(bw, spec.l2_shared_bw_bytes_per_clk * spec.clock_hz)
        return bw
    return _bw(spec, level)


def panel_level(spec: CPUSpec, panel_bytes: float) -> str:
    """Cache level that holds a reused panel of `panel_bytes` (a share CACHE_USE of each level)."""
    if panel_bytes <= CACHE_USE * spec.l1d_bytes:
        return "l1"
    if panel_bytes <= CACHE_USE * spec.l2_bytes:
        return "l2"
    if spec.l3_bytes and panel_bytes <= CACHE_USE * spec.l3_bytes:
        return "l3"
    return "dram"


def fresh_input(spec: CPUSpec, mapping: Mapping | None, nbytes: float) -> tuple[float, float]:
    """(bytes off DRAM, of them read from L3) for an op's `nbytes` activation input, the part of which the
    op before it just wrote (``mapping.params['input_fresh_bytes']``, set by a chained simulate) is read
    from cache; (0, 0) for a cold input.

    Written last, that output sits in the innermost level whose usable share (CACHE_USE, as for a reused
    panel: the op's own weights and output take the rest) holds all of it: from L1 / L2 it costs no
    compulsory traffic, from L3 its bytes stream at the L3 bandwidth (`_result`'s `bytes_l3`); one that
    overflows the L3 share is read back from DRAM, as a cold input is."""
    fresh = float(mapping.params.get("input_fresh_bytes", 0) or 0) if mapping is not None else 0.0
    if fresh <= 0 or nbytes <= 0:
        return 0.0, 0.0
    level = panel_level(spec, fresh)
    if level == "dram":
        return 0.0, 0.0
    off = min(fresh, nbytes)
    return off, off if level == "l3" else 0.0


def pixel_blocks(m: int, mb: int, lane: float) -> tuple[int, float]:
    """(number of pixel blocks, total SIMD vectors over all blocks) for M pixels in blocks of mb."""
    full, rem = divmod(m, mb)
    # a block of w pixels takes ceil(w / lanes) vector iterations (the tail one partly filled)
    vecs = full * math.ceil(mb / lane) + (math.ceil(rem / lane) if rem else 0)
    return full + (1 if rem else 0), float(vecs)


def loop_steps(w: int, lane: float) -> tuple[float, float]:
    """(full vectors, tail steps) of a compiler-vectorised unit-stride loop over w elements.

    LLVM's shape for the numba kernels (read from their assembly on AVX-512): a main body of
    4 unrolled full vectors (4·lanes elements per trip), an epilogue of half-width vectors
    (lanes/2 elements per trip) and a scalar remainder — each epilogue or scalar trip is one
    tail step."""
    body = int(4 * lane)
    half = max(1, int(lane // 2))
    main, rest = divmod(int(w), body)
    return 4.0 * main, float(rest // half + rest % half)


def block_steps(m: int, mb: int, lane: float) -> tuple[int, float, float]:
    """(pixel blocks, full vectors, tail steps) summed over the blocks of a pixel loop."""
    full, rem = divmod(m, mb)
    v_full, t_full = loop_steps(mb, lane) if full else (0.0, 0.0)
    v_rem, t_rem = loop_steps(rem, lane) if rem else (0.0, 0.0)
    return full + (1 if rem else 0), full * v_full + v_rem, full * t_full + t_rem


# --- cost -----------------------------------------------------------------------------------


MAX_EVICT_ITER = 50  # fixed-point steps of a call time that sets its own L3 evictions


def l3_resident_share(spec: CPUSpec, mapping: Mapping | None, bytes_per_call: float,
                      seconds_per_call: float = 0.0) -> float:
    """Share of a call's compulsory traffic still in the last-level cache from the call before.

    A caller that rotates over ``mapping.params['rotation_copies']`` operand copies (a timing
    harness; 0 or absent = operands cold, the default) touches F = copies x bytes_per_call between
    two uses of one copy. Where other work (and other tenants of a shared L3) inserts lines at
    random places, a line survives F bytes of insertions into C bytes of cache with probability
    exp(-F / C); C = ``l3_keep_bytes`` is the L3 capacity this core effectively keeps (spec
    efficiency; absent = 0 = nothing survives). Where the spec gives ``l3_keep_hill`` = h, the cache
    replaces least-recently-used lines instead: a rotation that fits the kept capacity survives whole
    and one that overflows it is evicted before its reuse, a cliff at F = C of steepness h (the share
    kept is 1 / (1 + (F / C)^h); h -> infinity is exact LRU, the softening is the other tenants'
    share of the L3 varying over time).

    Other work inserts lines too, at ``l3_evict_bps`` bytes per second (spec efficiency; absent = 0):
    the other tenants of a shared L3 run whatever the caller does, so between two uses of one copy
    (copies x `seconds_per_call`) they insert that rate times the elapsed time on top of the rotation's
    own bytes. A short call's copy comes back before the others have evicted it; a long call's does
    not, at the same footprint."""
    copies = float(mapping.params.get("rotation_copies", 0) or 0) if mapping is not None else 0.0
    if copies <= 0 or bytes_per_call <= 0:
        return 0.0
    return l3_kept_share(spec, copies * (bytes_per_call + spec.efficiency.get("l3_evict_bps", 0.0)
                                         * max(seconds_per_call, 0.0)))


def l3_kept_share(spec: CPUSpec, footprint: float) -> float:
    """Share of a line the L3 still holds after `footprint` bytes were inserted since it was written
    (l3_resident_share's survival: 1 / (1 + (F / l3_keep_bytes)^l3_keep_hill), or exp(-F / l3_keep_bytes)
    without a hill; 0 where the spec keeps nothing)."""
    keep = spec.efficiency.get("l3_keep_bytes", 0.0)
    if keep <= 0 or footprint <= 0:
        return 0.0
    hill = spec.efficiency.get("l3_keep_hill", 0.0)
    if hill > 0:  # LRU-like: survives while the rotation fits the kept capacity
        return 1.0 / (1.0 + (footprint / keep) ** hill)
    return math.exp(-footprint / keep)  # random replacement


def branch_learned(spec: CPUSpec, mapping: Mapping | None, misses_per_scan: float, n_scans: int) -> float:
    """Share of a data-dependent branch sequence's mispredicts that a repeated scan no longer pays.

    A loop that branches on data (the bitmap's bit tests) takes the same outcome sequence every time
    it scans the same weights: once per pixel block within a call and, for a caller that repeats the
    call on unchanged weights (a timing harness: ``mapping.params['rotation_copies']`` > 0), once per
    call. A history-based predictor (TAGE-like) learns a repeating sequence whose hard outcomes fit
    its tables and forgets a longer one: of S = `misses_per_scan` hard outcomes it keeps the share
    1 / (1 + (S / C)^BRANCH_HILL), C = ``cpu_bitmap.bp_keep`` (spec efficiency; absent = 0 = nothing
    learned). The first scan of a call that is not repeated always pays in full."""
    keep = spec.efficiency.get("cpu_bitmap.bp_keep", 0.0)
    if keep <= 0 or misses_per_scan <= 0 or n_scans <= 0:
        return 0.0
    # (a caller that rotates over copies with different masks, ``distinct_masks``, does not repeat it)
    repeated = mapping is not None and float(mapping.params.get("rotation_copies", 0) or 0) > 0 \
        and not mapping.params.get("distinct_masks")
    eligible = 1.0 if repeated else (n_scans - 1) / n_scans
    return eligible / (1.0 + (misses_per_scan / keep) ** BRANCH_HILL)


def _energy(spec: CPUSpec, t: float, threads: int) -> float:
    """Joules of a call: the busy cores' share of the package's power rating over its time. NaN where
    the spec gives no power figure: unknown, not free."""
    return t * spec.tdp_w * threads / spec.cores if spec.tdp_w > 0 else math.nan


def _result(op: Op, spec: CPUSpec, *, cycles: float, threads: int, t_call: float,
            bytes_dram: float, bytes_panel: float, panel: str, flops_exec: float,
            stream: bool = False, dram_runs: float = 0.0, t_dram_extra: float = 0.0,
            mapping: Mapping | None = None, dram_level: str | None = None, bytes_l3: float = 0.0,
            t_dram_net: float = 0.0) -> Cost:
    """Combine core cycles and memory streams into a Cost.

    The reused panel streams from its cache level while the core computes (the slower of the
    two sets the pace); compulsory DRAM traffic overlaps with that by the share ``mem_overlap``
    (1 = perfect prefetch: max; 0 = none: sum). A streaming kernel (GEMV: every weight read
    once, in order) runs at the stream bandwidth with its few FLOPs hidden under it. `dram_level`
    names the DRAM rate of the compulsory traffic (default: "stream" for a streaming kernel, else
    "dram"). `bytes_l3` is compulsory traffic served by the L3 instead (an input the op before wrote that
    overflows the L2: fresh_input), at the L3 bandwidth, in the same stream as the DRAM traffic.
    `t_dram_net`: DRAM seconds already net of what the L3 keeps (a column copy's spill: im2col_cost), added
    to the DRAM time as they are."""
    # the share of the core's nominal clock the caller gets (``core_speed``, 1 = all of it): on a shared
    # host it moves with the other tenants (SMT sibling, frequency), a per-campaign state of the host spec
    speed = spec.efficiency.get("core_speed", 1.0)
    t_core = cycles / (spec.clock_hz * threads * speed)
    # DRAM time: bytes at the achieved bandwidth, plus a start-up per discontiguous run (a new
    # prefetch stream pays latency before it reaches bandwidth; ``dram_run_s``, 0 = not modelled)
    level = dram_level or ("stream" if stream else "dram")
    t_cold = bytes_dram / _bw(spec, level) + dram_runs * spec.efficiency.get("dram_run_s", 0.0) + t_dram_extra
    t_l3 = bytes_dram / _bw(spec, "l3")
    t_fresh_l3 = bytes_l3 / _bw(spec, "l3")
    # a panel in L1 is already priced by the load-port counts; outer levels stream at their bandwidth
    t_panel = bytes_panel / _panel_bw(spec, panel, threads) / speed if panel != "l1" else 0.0
    t_onchip = max(t_core, t_panel)
    overlap = 1.0 if stream else spec.efficiency.get("mem_overlap", 1.0)

    def timed(t_guess: float) -> tuple[float, float]:
        """(call time, DRAM time) when a call of `t_guess` seconds sets how long other work evicts for."""
        warm = l3_resident_share(spec, mapping, bytes_dram, t_guess)
        t_dram = (1.0 - warm) * t_cold + warm * t_l3 + t_fresh_l3 + t_dram_net
        # the hidden share of the shorter of (on-chip work, DRAM traffic) is `overlap`
        return t_call + max(t_onchip, t_dram) + (1.0 - overlap) * min(t_onchip, t_dram), t_dram

    t, t_dram = timed(0.0)
    if spec.efficiency.get("l3_evict_bps", 0.0) > 0 and bytes_dram > 0:
        # the call time sets the eviction and the eviction the call time: iterate from the shortest
        # call up to the smallest fixed point (a contraction: evictions move the time only through
        # the resident share, far less than one for one)
        for _ in range(MAX_EVICT_ITER):
            t_next, t_dram = timed(t)
            done = abs(t_next - t) <= 1e-6 * t
            t = t_next
            if done:
                break
    t_body = t - t_call
    if t_call > t_body:
        bound = "latency"
    elif t_dram > t_onchip:
        bound = "memory"
    else:
        bound = "compute" if t_core >= t_panel else "memory"
    peak = spec.peak_flops(op.dtype) * threads / spec.cores if spec.supports_dtype(op.dtype) else 0.0
    util = op.useful_flops / t / peak if t > 0 and peak > 0 else 0.0
    levels = {"dram": bytes_dram}
    if bytes_l3 > 0:
        levels["l3"] = bytes_l3
    if panel != "l1" and bytes_panel:
        levels[panel] = levels.get(panel, 0.0) + bytes_panel
    return Cost(t_s=t, cycles=t * spec.clock_hz, flops=flops_exec, bytes_by_level=levels, bound=bound,
                utilisation=min(util, 1.0), energy_j=_energy(spec, t, threads),
                breakdown_s={"core": t_core, "dram": t_dram, "panel": t_panel, "call": t_call})


def _weight_stats(op: Op, kernel: str) -> dict[str, float]:
    """Stored weight elements, blocks and bytes of one batch item in the kernel's format."""
    return _weight_stats_of(kernel, op.n, op.k, op.weight, op.dtype_bytes)


@functools.lru_cache(maxsize=4096)
def _weight_stats_of(kernel: str, n: int, k: int, w: Sparsity, b: float) -> dict[str, float]:
    if kernel in ("cpu_bsr", "xnn_spmm_block", "cpu_group"):
        bh, bw = (w.bh, w.bw) if isinstance(w, Block) else (1, w.g) if isinstance(w, Group) else (1, 1)
        n_blocks = math.ceil(n / bh) * math.ceil(k / bw) * w.density
        nbytes = format_nbytes("bsr", n, k, density=w.density, value_bytes=b, bh=bh, bw=bw, pad=True)
        return {"stored": n_blocks * bh * bw, "blocks": n_blocks, "bh": bh, "bw": bw, "bytes": float(nbytes)}
    if kernel == "cpu_nm":
        nm = w if isinstance(w, NM) else NM(2, 4)
        stored = n * math.ceil(k / nm.m) * nm.n  # N:M stores n per group, zeros included
        nbytes = format_nbytes("nm", n, k, density=min(w.density, nm.n / nm.m), value_bytes=b,
                               n=nm.n, m=nm.m, pad=True)
        return {"stored": float(stored), "blocks": float(stored), "bh": 1, "bw": 1, "bytes": float(nbytes),
                "m": nm.m}
    if kernel == "cpu_bitmap":
        nnz = n * k * w.density
        nbytes = format_nbytes("bitmap", n, k, density=w.density, value_bytes=b)
        return {"stored": nnz, "blocks": nnz, "bh": 1, "bw": 1, "bytes": float(nbytes)}
    nnz = n * k * w.density
    nbytes = format_nbytes("csr", n, k, density=w.density, value_bytes=b)
    return {"stored": nnz, "blocks": nnz, "bh": 1, "bw": 1, "bytes": float(nbytes)}


def _xnn_operands_fit_l1(op: Op, spec: CPUSpec, ws: dict[str, float], mb: int) -> bool:
    """Whether all of W (XNNPACK walks it once per MR-pixel block) and the block's X panel fit the L1
    share together: else W streams from L2 for every block and evicts X lines between their uses."""
    return ws["bytes"] + op.k * min(mb, op.m) * op.dtype_bytes <= CACHE_USE * spec.l1d_bytes


def _xnn_gather_latency_cycles(op: Op, spec: CPUSpec, ws: dict[str, float], mb: int, threads: int) -> float:
    """Cycles the XNNPACK sparse loop waits on X gathers that miss L1 (0 where the spec gives no
    ``l2_latency_cycles``), summed over threads as the core cycles are.

    Each stored block loads the MR-pixel segment of bw rows of X at an address set by the
    block's input-channel offset: a gather, not a stream the prefetcher follows (W itself is
    read in order and stays a bandwidth cost). A segment misses L1 at its first touch in a pixel
    block when W and the X panel together fit the L1 share, and at every use when they do not: the
    kernel walks all of W once per pixel block, and that stream evicts X lines between two uses (the
    same test that sends W to L2 in _spmm_cost). Each missing
    line costs the L2 latency, ``l1_outstanding_misses`` of them in flight (Little's law); the
    FMAs of a nonzero wait on its X line, so the wait adds to the instruction cycles."""
    if spec.l2_latency_cycles <= 0:
        return 0.0
    line = 64.0  # cache line bytes (ARMv8 cores of the specs here; x86 the same)
    b = op.dtype_bytes
    n_blk, rem = math.ceil(op.m / mb), op.m % mb
    full = op.m // mb
    seg_lines = full * math.ceil(mb * b / line) + (math.ceil(rem * b / line) if rem else 0)  # over blocks
    n, k, bh, bw = op.n, op.k, ws["bh"], ws["bw"]
    if _xnn_operands_fit_l1(op, spec, ws, mb):  # first touch of each touched row
        rows_b, cols_b = math.ceil(n / bh), math.ceil(k / bw)
        d_blk = min(1.0, ws["blocks"] / (rows_b * cols_b)) if rows_b * cols_b else 0.0
        segs = min(k, cols_b * bw * (1.0 - (1.0 - d_blk) ** rows_b))
    else:  # every block column access of every stored block
        segs = ws["blocks"] * bw
    lines = segs * seg_lines
    wait = lines * spec.l2_latency_cycles / max(spec.l1_outstanding_misses, 1.0)
    # the busiest thread takes ceil(blocks / threads) pixel blocks, as for the core cycles
    return wait * math.ceil(n_blk / threads) / n_blk * threads * op.batch


def _spmm_cost(op: Op, mapping: Mapping, spec: CPUSpec) -> Cost:
    """Sparse weight × dense activation, pixel-blocked (xnn_* and the numba cpu_* kernels)."""
    kernel = mapping.kernel
    b = op.dtype_bytes
    lane = lanes(spec, op.dtype)
    family = "numba" if kernel in NUMBA_KERNELS else "xnn"
    if kernel in ("xnn_spmm", "xnn_spmm_block") and spec.simd_bits > XNN_SPMM_SIMD_BITS:
        lane *= XNN_SPMM_SIMD_BITS / spec.simd_bits
    p = params(spec, family)
    mb = mapping.tile[0] or xnn_mr(spec)
    ws = _weight_stats(op, kernel)
    stored, blocks, bh, bw = ws["stored"], ws["blocks"], ws["bh"], ws["bw"]
    n, k = op.n, op.k
    c_nnz, c_row = p["c_nnz"], p["c_row"]
    if family == "numba":
        # compiler-vectorised pixel loop: full vectors + half-width / scalar tail trips
        n_blk, v_main, v_tail = block_steps(op.m, mb, lane)
        axpy = v_main * p["c_vec"] + v_tail * p["c_tail"]  # one weight over every pixel block
    else:
        # XNNPACK MR-pixel micro-kernels (remainders by narrower vector kernels): ceil(w/lanes)
        n_blk, vecs = pixel_blocks(op.m, mb, lane)
        axpy = vecs * p["c_vec"]
    out_pass = pixel_blocks(op.m, mb, lane)[1] * p["c_out"]  # one pass over an output row's vectors
    if kernel == "cpu_csr":
        # per block: row setup + per-nonzero setup; axpy per nonzero; one output pass per row
        # (copy-out, or the zero fill of an empty row) except for rows with a single nonzero,
        # whose one axpy writes the output directly; row lengths ~ Binomial(K, density)
        d = min(max(op.weight.density, 0.0), 1.0)
        p_one = k * d * (1.0 - d) ** (k - 1) if d < 1.0 else 0.0
        cycles = n_blk * (n * c_row + stored * c_nnz) + stored * axpy + n * (1.0 - p_one) * out_pass
    elif kernel == "cpu_nm":
        # as CSR with exactly n values per group of m stored (zeros included), plus the group
        # loop; accumulator zeroed then copied out
        groups = n * math.ceil(k / ws["m"])
        cycles = n_blk * (n * c_row + groups * params(spec, "cpu_nm")["c_grp"] + stored * c_nnz) \
            + stored * axpy + 2 * n * out_pass
    elif kernel == "cpu_bitmap":
        q = params(spec, "cpu_bitmap")
        d = op.weight.density
        busy = 1.0 - (1.0 - d) ** 8  # share of bitmap bytes with a set bit (independent zeros)
        # every byte loaded and tested; a nonzero byte takes 8 bit tests; a set bit an axpy setup
        scan = math.ceil(k / 8) * (q["c_byte"] + busy * 8 * q["c_bit"])
        # mispredicted branches per byte: the zero-byte test (taken with probability 1 - busy) and,
        # in a busy byte, 8 bit tests each set with probability d / busy; random outcomes defeat
        # the predictor, which then errs on the minority outcome (``c_miss`` cycles each, 0 = off)
        q_bit = min(d / busy, 1.0) if busy > 0 else 0.0
        miss_per_byte = min(busy, 1.0 - busy) + busy * 8 * min(q_bit, 1.0 - q_bit)
        # the scan repeats the same outcome sequence for every pixel block (and, for a caller that
        # repeats the call on the same weights, every call): a predictor that keeps the sequence of
        # one scan learns it; the share it keeps falls off with the scan's length (branch_learned)
        learned = branch_learned(spec, mapping, n * math.ceil(k / 8) * miss_per_byte, n_blk)
        c_miss = q.get("c_miss", 0.0)
        # a mispredict stalls the front end for ``c_miss`` cycles, but where the previous bit was set
        # the back end still has that bit's axpy (one pixel block's worth: axpy / n_blk cycles) queued
        # and keeps executing it through the refill: that share of the penalty is hidden. The
        # previous test of a bit test is its neighbour in the byte (set with probability q_bit); of a
        # zero-byte test, the last bit of the byte before (set with probability d)
        hide = min(1.0, axpy / n_blk / c_miss) if c_miss > 0 else 0.0
        exposed = min(busy, 1.0 - busy) * (1.0 - d * hide) \
            + busy * 8 * min(q_bit, 1.0 - q_bit) * (1.0 - q_bit * hide)
        scan += math.ceil(k / 8) * c_miss * exposed * (1.0 - learned)
        cycles = n_blk * (n * (c_row + scan) + stored * c_nnz) + stored * axpy + 2 * n * out_pass
    elif kernel == "cpu_bsr":
        q = params(spec, "cpu_bsr")
        rows_b = math.ceil(n / bh)
        # per block: index + loop setup; per element: axpy setup; bh accumulator rows zeroed + copied
        cycles = n_blk * (rows_b * c_row + blocks * q["c_blk"] + stored * c_nnz) + stored * axpy \
            + 2 * rows_b * bh * out_pass
    elif kernel in ("xnn_spmm_block", "cpu_group"):
        # one offset load per block of bh*bw weights; the X vectors are loaded once per block
        # column and shared by the bh rows: per vector bh*bw multiply-adds against bw loads
        per_vec = spec.simd_overhead * max(bh * bw / spec.simd_issue_per_clk, bw / spec.load_ports)
        cycles = n_blk * (math.ceil(n / bh) * c_row + blocks * c_nnz) + blocks * vecs * per_vec + n * out_pass
    elif kernel == "cpu_fanin":
        # constant fan-in: the nnz trip count is fixed, the loop unrolled (half the setup cost)
        cycles = n_blk * (n * c_row + stored * c_nnz / 2) + stored * axpy + n * out_pass
    else:  # xnn_spmm
        cycles = n_blk * (n * c_row + stored * c_nnz) + stored * axpy + n * out_pass
    if family == "numba" and p.get("c_chain", 0.0) > 0:
        # each stored weight's axpy loads, updates and stores its output row's accumulator, so the
        # next update of that row waits for it: store-to-load forwarding + multiply-add latency,
        # ``c_chain`` cycles per update. Updates of other rows between two of one row's (the bh rows of
        # a block, interleaved) run in parallel. A short axpy (few pixels: an LLM SpMM at 16 tokens
        # is one vector) leaves the chain as the bound; a long one hides it. The BSR kernel's loops of at
        # most ``cpu_bsr.chain_free_pixels`` pixels escape it (measured, chain-sweep-20261124T1253Z.json)
        interleave = bh if kernel == "cpu_bsr" else 1
        per_update = c_nnz + axpy / n_blk
        if kernel != "cpu_bsr" or min(mb, op.m) > params(spec, "cpu_bsr")["chain_free_pixels"]:
            cycles += n_blk * stored * max(0.0, p["c_chain"] / interleave - per_update)
    # the activation panel X[K, block] is reused by every output row; where it lives sets the feed
    level = panel_level(spec, k * min(mb, op.m) * b)
    rows_b, cols_b = math.ceil(n / bh), math.ceil(k / bw)
    d_blk = min(1.0, blocks / (rows_b * cols_b)) if rows_b * cols_b else 0.0  # share of stored blocks
    if family == "numba" and n_blk > 1:
        # split pixels: X[k, block] is mb of the M floats of row k, so consecutive nonzeros' segments
        # are M floats apart (one block: rows back to back, one ascending stream); every stored block's
        # X read starts a new L2 stream (``c_xseg`` cycles; 0 = off). A block's bw rows are bw segments
        # at the constant stride M: the stride prefetcher follows them as one stream (eleventh fit)
        cycles += n_blk * blocks * p.get("c_xseg", 0.0)
    elif family == "numba" and spec.efficiency.get("xseg_one_block", 0.0) > 0 and level != "l1":
        # candidate, off unless the spec sets ``xseg_one_block`` (not calibrated yet; fit-half CV 80.7 vs
        # 80.0 %, validation/data/cpu-host/README.md, session 8): with one block, a nonzero's X segment
        # continues the previous one's stream only where the column between is touched too (probability
        # ~d); a scattered segment longer than the 4 lines the L1 prefetcher covers (full effect from 12)
        # waits ``c_xseg`` where it was evicted from L2, the share of panel + W past the L2 share
        lines = math.ceil(bw * op.m * b / 64)
        lenf = min(1.0, max(0.0, (lines - 4) / 8))
        miss = max(0.0, 1.0 - CACHE_USE * spec.l2_bytes / (k * op.m * b + ws["bytes"]))
        cycles += blocks * (1.0 - d_blk) * lenf * miss * p.get("c_xseg", 0.0)
    threads = threads_of(spec, mapping)
    # pixel blocks are split over threads; the busiest thread takes ceil(blocks / threads)
    cycles = cycles * math.ceil(n_blk / threads) / n_blk * threads * op.batch
    bytes_panel = op.batch * blocks * bw * op.m * b  # one X row segment per block column, every block
    if family == "xnn" and not _xnn_operands_fit_l1(op, spec, ws, mb):
        # XNNPACK walks all of W (values + offsets) once per MR-pixel block: when W and the X panel
        # together overflow the L1 share, W streams from L2 again for every block (Elsen et al. §4:
        # the kernel is designed to keep its operands in L1; past it, L2 feeds the loop)
        level = "l2" if level == "l1" else level
        bytes_panel += op.batch * n_blk * ws["bytes"]
    if family == "xnn":
        cycles += _xnn_gather_latency_cycles(op, spec, ws, mb, threads)
    # compulsory DRAM traffic: the X rows some nonzero references (a block column is untouched
    # with probability (1 - d)^(block rows) for independent blocks), W once, Y written once:
    # loads of X stall the loop, while Y's stores drain through the store buffer, their
    # write-allocate fill overlapping later work (Y_TIME_FACTOR; fit-half evidence in
    # validation/data/cpu-host/README.md)
    k_touched = min(k, cols_b * bw * (1.0 - (1.0 - d_blk) ** rows_b))
    x_bytes = op.batch * op.m * k_touched * b
    # an X the op before just wrote is read from the cache holding it: no DRAM bytes, no DRAM latency
    x_fresh, x_l3 = fresh_input(spec, mapping, x_bytes)
    bytes_dram = op.batch * (ws["bytes"] + Y_TIME_FACTOR * op.m * n * b) + x_bytes - x_fresh
    t_seg = 0.0
    if family == "numba":
        # DRAM latency per contiguous segment, on top of the bandwidth term: each first-touched X
        # segment (one pixel block of a touched block column; the bw rows of a block column are
        # contiguous only when one block spans all pixels) and, when the pixels are split into
        # several blocks, each output row's Y segment (one per row and block) starts a new burst
        # that the prefetcher has not seen coming. A segment of at least ``x_seg_lines`` cache lines
        # exposes one whole latency ``x_seg_s``; a shorter one shares it with the segments the core
        # has in flight at once (pro rata lines / x_seg_lines). Both 0 or absent = not modelled.
        # Where the spec sets ``x_seg_first_block_only`` (= 1), only the first pixel block's segments
        # expose it: block b + 1's segment of a row starts where block b's ended, and the L2 streamer,
        # having followed block b's segment to its end, runs on into it (absent: every block pays).
        w_blk = min(mb, op.m)
        seg_lines = spec.efficiency.get("x_seg_lines", 0.0)

        def exposed(lines: float) -> float:
            return min(1.0, lines / seg_lines) if seg_lines > 0 else 1.0

        paying = 1 if spec.efficiency.get("x_seg_first_block_only", 0.0) > 0 else n_blk  # blocks that pay
        x_segs = paying * (k_touched / bw if n_blk == 1 else k_touched) * (1.0 - x_fresh / x_bytes)
        x_lines = math.ceil(w_blk * b * (bw if n_blk == 1 else 1) / 64)
        y_segs = n * paying if n_blk > 1 and seg_lines > 0 else 0
        t_seg = op.batch * spec.efficiency.get("x_seg_s", 0.0) * (
            x_segs * exposed(x_lines) + y_segs * exposed(math.ceil(w_blk * b / 64)))
    # a strided (or KxK) convolution's column copy, where the spec's library makes one (0 elsewhere)
    cols, t_cols_dram = im2col_cost(op, spec)
    return _result(op, spec, cycles=cycles + cols, threads=threads, t_call=p["t_call_s"], bytes_dram=bytes_dram,
                   bytes_panel=bytes_panel, panel=level, flops_exec=2.0 * op.batch * op.m * stored,
                   t_dram_extra=t_seg, mapping=mapping if family == "numba" else None, bytes_l3=x_l3,
                   t_dram_net=t_cols_dram)


def _gemm_tile(spec: CPUSpec) -> tuple[int, int]:
    """Register tile (mr pixels, nr output channels) of the dense GEMM micro-kernel.

    Defaults: XNNPACK f32-gemm 6x8 on 128-bit NEON / SIMD128 (6 rows x 2 vectors); on AVX-512
    OpenBLAS sgemm_kernel_16x4_skylakex (16 x 4). A spec may override with gemm.mr / gemm.nr."""
    if spec.simd_bits <= 128:
        mr, nr = 6, 8
    else:
        mr, nr = 16, 4
    return int(spec.efficiency.get("gemm.mr", mr)), int(spec.efficiency.get("gemm.nr", nr))


def _binary_pieces(rem: int) -> list[int]:
    """Row counts of the narrower kernels that cover a remainder of `rem` rows (its binary digits)."""
    return [1 << i for i in range(rem.bit_length()) if rem >> i & 1]


def im2col_counts(g) -> tuple[int, int, int]:
    """(row runs, padded-image elements, column elements) of one image's explicit im2col, per group of C
    channels (kernels.cpu.im2col): the zero-padded copy of the image, C·(H+2p)·(W+2p) elements (0 unpadded),
    then the column matrix, C·kh·kw·OH runs of OW elements. (0, 0, 0) for a 1x1, stride-1, unpadded
    convolution: its GEMM reads the image in place."""
    c = g.c_in // g.groups
    if g.reads_in_place:
        return 0, 0, 0
    padded = c * (g.h + 2 * g.pad) * (g.w + 2 * g.pad) if g.pad else 0
    runs = c * g.kh * g.kw * g.h_out
    return runs, padded, runs * g.w_out


def im2col_cost(op: Op, spec: CPUSpec) -> tuple[float, float]:
    """(core cycles, seconds of DRAM writes) of a convolution's column copy where the spec's library makes
    one (gemm.c_im2col_*; (0, 0) where they are absent or 0 and for ops without a column copy).

    Cycles: c_im2col_run per row run, c_im2col_el per element copied contiguously (the padded image, and
    the columns of a stride-1 convolution), c_im2col_el_strided per column element gathered `stride`
    elements apart. DRAM: the columns written beyond what the L3 keeps of the copy's footprint (columns +
    source + padded image; l3_kept_share) are written back once, at the DRAM rate."""
    p = params(spec, "gemm")
    g = op.conv
    if g is None or not (p["c_im2col_el"] or p["c_im2col_el_strided"] or p["c_im2col_run"]):
        return 0.0, 0.0
    runs, padded, cols = im2col_counts(g)
    if not runs:
        return 0.0, 0.0
    per_image = op.batch * g.n_img
    el_cost = p["c_im2col_el_strided"] if g.stride > 1 else p["c_im2col_el"]
    cycles = per_image * (runs * p["c_im2col_run"] + padded * p["c_im2col_el"] + cols * el_cost)
    b = op.dtype_bytes
    cols_bytes = per_image * cols * b
    footprint = cols_bytes + per_image * (g.c_in // g.groups * g.h * g.w + padded) * b
    return cycles, cols_bytes * (1.0 - l3_kept_share(spec, footprint)) / _bw(spec, "dram")


def gemm_epilogue_cycles(spec: CPUSpec, mr: int, nr: int, lane: float) -> float:
    """Cycles a dense GEMM micro-kernel spends per mr x nr output tile outside its k loop, as XNNPACK's
    f32-gemm kernels (and the xnn sparse kernels' c_row / c_out) issue them: bias loads into the first
    accumulator row and copies into the others, a min and a max clamp per accumulator vector, its store,
    and ~6 pointer / loop instructions. The larger of the port bound and the decode bound. Small-K layers
    (a narrow MobileNet's 8-24 input channels) pay it on a short k loop. Scaled by the spec's
    ``gemm.epilogue`` (absent: 1; a fitted spec whose GEMM costs already absorb it sets 0)."""
    scale = spec.efficiency.get("gemm.epilogue", 1.0)
    if scale <= 0:
        return 0.0
    acc = mr * nr / lane  # accumulator vectors
    fp = spec.fp_pipes or spec.fma_units_per_core
    ports = max(acc / spec.store_ports, 2 * acc / fp, nr / lane / spec.load_ports)
    return scale * max(ports, issue(spec, nr / lane + (acc - nr / lane) + 2 * acc + acc + 6))


def _dense_gemm_cost(op: Op, mapping: Mapping, spec: CPUSpec) -> Cost:
    """im2col + register-blocked GEMM: mr x nr tiles at the FMA rate, operands packed once."""
    p = params(spec, "gemm")
    b = op.dtype_bytes
    lane = lanes(spec, op.dtype)
    mr, nr = _gemm_tile(spec)
    gemv = op.m == 1 or op.n == 1
    if gemv:  # GEMV: every weight used once; streamed, memory bound. Threads split the long side
        tiles = math.ceil(max(op.m, op.n) / nr)  # (BLAS sgemv: one block of output rows per thread)
        fma_cycles = op.m * op.n * op.k / lane / spec.simd_issue_per_clk
    else:  # edge tiles are computed in full (tile quantisation along N, and along M by default)
        tiles = math.ceil(op.m / mr) * math.ceil(op.n / nr)
        m_eq = math.ceil(op.m / mr) * mr  # rows computed
        tail_rows = spec.efficiency.get("gemm.m_tail_rows")
        if tail_rows is not None:
            # the M remainder runs on narrower kernels (8, 4, 2, 1 rows: the binary digits of
            # M mod mr, OpenBLAS SkylakeX sgemm) instead of a padded mr-row tile; a piece of p rows
            # costs p + m_tail_rows rows of a full tile (its per-k-step B broadcasts and loop)
            full, rem = divmod(op.m, mr)
            m_eq = full * mr + sum(piece + tail_rows for piece in _binary_pieces(rem))
        fma_cycles = m_eq * math.ceil(op.n / nr) * nr * op.k / lane / spec.simd_issue_per_clk
        # front end, per k step of a tile: mr*nr/lanes multiply-adds, nr/lanes B loads, mr/lanes A
        # loads (A is loaded lanes k-steps at a time), ~4 pointer / loop instructions per lanes steps
        per_k = mr * nr / lane + nr / lane + mr / lane + 4 / lane
        fma_cycles = max(fma_cycles, tiles * op.k * issue(spec, per_k))
        fma_cycles += tiles * gemm_epilogue_cycles(spec, mr, nr, lane)
    # pack the A and B panels once per call. A GEMV packs nothing: every weight is used once, so the
    # libraries read W where it lies (OpenBLAS sgemv_t / sgemv_n) or in the layout packed when the
    # operator was created (XNNPACK's fully-connected op); gemm.gemv_packs = 1 would say a library repacks
    packs = spec.efficiency.get("gemm.gemv_packs", 0.0) if gemv else 1.0
    pack = packs * (op.m * op.k + op.n * op.k) / lane * p["c_pack"]
    # a convolution's column copy, where the spec's library makes one (0 elsewhere)
    cols, t_cols_dram = im2col_cost(op, spec)
    threads = min(threads_of(spec, mapping), tiles)
    cycles = op.batch * (fma_cycles * spec.simd_overhead / p["eff"] + pack) + cols
    x_fresh, x_l3 = fresh_input(spec, mapping, op.batch * op.m * op.k * b)
    bytes_dram = op.batch * (op.m * op.k * b + op.n * op.k * b + Y_TIME_FACTOR * op.m * op.n * b) - x_fresh
    # packing reads A and B as long sequential streams: where the spec calibrates the one-stream
    # DRAM share (stream_eff), a blocked GEMM's compulsory traffic moves at that rate; BLAS GEMV
    # reads several rows of W at once (OpenBLAS sgemv_t: 4 concurrent streams), more memory-level
    # parallelism than one stream: its own achieved share where the spec has one (gemv_stream_eff)
    if gemv:
        level = "gemv"
    else:
        level = "stream" if "stream_eff" in spec.efficiency else "dram"
    return _result(op, spec, cycles=cycles, threads=threads, t_call=p["t_call_s"], bytes_dram=bytes_dram,
                   bytes_panel=0.0, panel="l1", flops_exec=op.flops, stream=gemv, mapping=mapping,
                   dram_level=level, bytes_l3=x_l3, t_dram_net=t_cols_dram)


def _depthwise_cost(op: Op, mapping: Mapping, spec: CPUSpec) -> Cost:
    """XNNPACK dwconv: per output vector, kh*kw input loads + kh*kw weight loads + kh*kw FMAs."""
    g = op.conv
    taps = g.kh * g.kw
    lane = lanes(spec, op.dtype)
    b = op.dtype_bytes
    vec = op.m * math.ceil(g.c_out / lane)  # output vectors (channels are the SIMD axis in NHWC)
    ov = spec.simd_overhead
    # per output vector: taps input + taps weight loads (+ bias), taps multiply-adds, a store and a
    # min/max clamp; the front end decodes all 3*taps + 4 of them
    per_vec = ov * max(max(taps / spec.simd_issue_per_clk, (2 * taps + 1) / spec.load_ports) + 1 / spec.store_ports,
                       issue(spec, 3 * taps + 4))
    threads = threads_of(spec, mapping)
    cycles = vec * per_vec
    x_fresh, x_l3 = fresh_input(spec, mapping, g.n_img * g.c_in * g.h * g.w * b)
    bytes_dram = g.n_img * g.c_in * g.h * g.w * b - x_fresh + op.m * g.c_out * b * 2 + taps * g.c_out * b
    return _result(op, spec, cycles=cycles, threads=threads, t_call=0.0, bytes_dram=bytes_dram,
                   bytes_l3=x_l3,
                   bytes_panel=0.0, panel="l1", flops_exec=op.flops)


@functools.lru_cache(maxsize=1024)
def dwconv_counts(h: int, w: int, kh: int, kw: int, stride: int, pad: int) -> tuple[int, int, int, int, int]:
    """Loop counts of the numba CHW depthwise kernel for one channel: (output rows, output columns,
    tap rows inside the image summed over the output rows, interior columns of a row (every tap inside),
    scalar edge taps per tap row)."""
    oh = (h + 2 * pad - kh) // stride + 1
    ow = (w + 2 * pad - kw) // stride + 1
    rows = sum(1 for o in range(oh) for r in range(kh) if 0 <= o * stride + r - pad < h)
    lo = min(ow, -(-pad // stride))
    hi = max(lo, min(ow, (w - kw + pad) // stride + 1))
    edge = sum(1 for o in [*range(lo), *range(hi, ow)] for q in range(kw) if 0 <= o * stride + q - pad < w)
    return oh, ow, rows, hi - lo, edge


def _dwconv_cost(op: Op, mapping: Mapping, spec: CPUSpec) -> Cost:
    """numba CHW depthwise convolution: per channel and output row, zero the row, then per tap row
    inside the image one vectorised pass over the interior columns (kw input loads and multiply-adds
    per output vector, the output loaded and stored once) and scalar taps at the two edges."""
    g = op.conv
    p = params(spec, "cpu_dwconv")
    nb = params(spec, "numba")
    lane = lanes(spec, op.dtype)
    b = op.dtype_bytes
    oh, ow, rows, inner, edge = dwconv_counts(g.h, g.w, g.kh, g.kw, g.stride, g.pad)
    tail_share = nb["c_tail"] / nb["c_vec"]  # a tail trip of a compiler-vectorised loop, per full vector
    if g.stride == 1:  # vectorised: full vectors of the unrolled body, then half-width and scalar trips
        vm, vt = loop_steps(inner, lane)
        interior = (vm + vt * tail_share) * (p["c_v"] + g.kw * p["c_x1"])
    else:  # strided input: a scalar loop over the output elements
        interior = inner * (p["c_s2"] + g.kw * p["c_x2"])
    zm, zt = loop_steps(ow, lane)
    per_row = p["c_row"] + zm * nb["c_out"] + zt * nb["c_tail"]
    per_tap_row = p["c_tap"] + interior + edge * p["c_edge"]
    channels = g.n_img * g.c_out
    cycles = channels * (oh * per_row + rows * per_tap_row)
    threads = min(threads_of(spec, mapping), channels)
    x_fresh, x_l3 = fresh_input(spec, mapping, channels * g.h * g.w * b)
    bytes_dram = channels * (g.h * g.w + oh * ow + g.kh * g.kw) * b - x_fresh
    # input and output rows are read and written in order, a few rows apart: hardware prefetch streams
    # them under the arithmetic (the one-stream DRAM share, overlapped like a GEMV)
    return _result(op, spec, cycles=cycles, threads=threads, t_call=nb["t_call_s"], bytes_dram=bytes_dram,
                   bytes_panel=0.0, panel="l1", flops_exec=op.flops, stream=True, mapping=mapping,
                   bytes_l3=x_l3)


def _act_gemv_cost(op: Op, mapping: Mapping, spec: CPUSpec) -> Cost:
    """Activation-sparse GEMV/GEMM: per nonzero activation, one axpy of its weight column over N."""
    family = "xnn" if spec.isa == "wasm_simd128" else "numba"
    p = params(spec, family)
    q = params(spec, "cpu_act_gemv")
    b = op.dtype_bytes
    lane = lanes(spec, op.dtype)
    act = op.activation
    col = act.column_density(op.m) if isinstance(act, Activation) else act.density
    kept = op.k * col  # weight columns read (union over the M rows)
    if family == "numba":
        v_main, v_tail = loop_steps(op.n, lane)
        axpy = v_main * p["c_vec"] + v_tail * p["c_tail"]
    else:
        axpy = math.ceil(op.n / lane) * p["c_vec"]
    # scan the activations; per kept column an axpy setup + the axpy; y zeroed once
    cycles = op.batch * op.m * (op.k * q["c_scan"] + kept * (p["c_nnz"] + axpy)
                                + math.ceil(op.n / lane) * p["c_out"])
    threads = threads_of(spec, mapping)
    x_fresh, x_l3 = fresh_input(spec, mapping, op.batch * op.m * op.k * b)
    bytes_dram = op.batch * (kept * op.n * b + op.m * op.k * b + 2 * op.m * op.n * b) - x_fresh
    # the kept weight rows are contiguous runs of W^T; a run ends where the next row is skipped,
    # and each new run pays a DRAM stream start-up (dram_run_s) before the prefetcher catches up
    runs = op.batch * kept * (1.0 - col)
    # a streaming loop (each weight read once, in order within a run): DRAM at the stream rate,
    # the few FLOPs hidden under it
    return _result(op, spec, cycles=cycles, threads=threads, t_call=p["t_call_s"], bytes_dram=bytes_dram,
                   bytes_panel=0.0, panel="l1", flops_exec=op.flops * col, dram_runs=runs, stream=True,
                   mapping=mapping, bytes_l3=x_l3)


SOFTMAX_VEC_INSTR = 20.0  # per vector of scores: max pass 2, exp ~13 (range reduction, degree-5 polynomial,
SOFTMAX_VEC_FP = 12.0  # scale), sum and store 3, loop 2; of these ~12 FP (max, FMAs, add) — an estimate


def _eltwise_cost(op: Op, mapping: Mapping, spec: CPUSpec) -> Cost:
    """Element-wise pass: read inputs, write output; FLOPs at SIMD rate or at the spec's cpu_eltwise.c_flop
    (attention: its two GEMMs at the dense GEMM's rate plus the softmax). Its compulsory bytes (inputs,
    the output counted once as for a GEMM: Y_TIME_FACTOR) move at the element-wise streams' DRAM rate
    (cpu_eltwise.stream_eff)."""
    lane = lanes(spec, op.dtype)
    threads = threads_of(spec, mapping)
    flops = op.flops * (op.attn.score_fraction if op.kind == "attention" else 1.0)
    cycles = flops / (2 * lane * spec.simd_issue_per_clk) * spec.simd_overhead
    d = op.bytes_dense
    x_fresh, x_l3 = fresh_input(spec, mapping, op.numel_in * op.dtype_bytes)
    if op.kind == "attention":
        # QK^T and PV at the dense GEMM's achieved rate (gemm.eff), then the softmax over every score
        # computed: per vector of scores a max pass, the exp (range reduction + polynomial, as XNNPACK's
        # f32-raddstoreexpminusmax kernels compute it) and the sum, ~SOFTMAX_VEC_INSTR instructions of
        # which ~SOFTMAX_VEC_FP on the FP pipes
        a = op.attn
        scores = a.batch * a.heads * a.q_len * a.kv_len * a.score_fraction
        fp = spec.fp_pipes or spec.fma_units_per_core
        per_vec = max(issue(spec, SOFTMAX_VEC_INSTR), SOFTMAX_VEC_FP / fp)
        cycles = cycles / params(spec, "gemm")["eff"] + scores / lane * per_vec
    if op.kind != "eltwise":
        bytes_dram = d["x"] + d["w"] + 2 * d["y"] - x_fresh
        return _result(op, spec, cycles=cycles, threads=threads, t_call=0.0, bytes_dram=bytes_dram,
                       bytes_panel=0.0, panel="l1", flops_exec=flops, bytes_l3=x_l3)
    p = params(spec, "cpu_eltwise")
    if p["c_flop"] > 0:
        cycles = flops * p["c_flop"]
    # at least one load per input vector and one store per output vector
    cycles = max(cycles, (op.m * op.n_inputs / spec.load_ports + op.numel_out / spec.store_ports) / lane)
    bytes_dram = d["x"] + Y_TIME_FACTOR * d["y"] - x_fresh
    # one pass over sequential streams that the prefetchers run ahead of: its loads and stores overlap the
    # DRAM traffic (the slower of the two sets the time, as for a GEMV)
    return _result(op, spec, cycles=cycles, threads=threads, t_call=0.0, bytes_dram=bytes_dram,
                   bytes_panel=0.0, panel="l1", flops_exec=flops, bytes_l3=x_l3, dram_level="eltwise", stream=True)


_FAMILY: dict[str, Callable[[Op, Mapping, CPUSpec], Cost]] = {
    "cpu_dense_gemm": _dense_gemm_cost, "cpu_depthwise": _depthwise_cost, "cpu_dwconv": _dwconv_cost,
    "cpu_act_gemv": _act_gemv_cost,
    "cpu_eltwise": _eltwise_cost,
}


def cost(op: Op, mapping: Mapping, spec: CPUSpec) -> Cost:
    """Cost of `op` run by `mapping.kernel` on the CPU `spec` (instruction counts + memory streams)."""
    if mapping.kernel not in KERNELS:
        raise ValueError(f"kernel: got {mapping.kernel!r}; allowed: {', '.join(KERNELS)}")
    analytic = _FAMILY.get(mapping.kernel, _spmm_cost)(op, mapping, spec)
    if not spec.residual_file:
        return analytic
    from hwmodels import residual  # a measured host's learned correction of the analytic cost

    return residual.apply(op, mapping, spec, analytic)
