"""GPU GEMM kernels that simsparse measures: cuBLAS, cuSPARSELt (2:4), cuSPARSE CSR/BSR,
CuPy CSR and an activation-sparse GEMV, each behind one callable.

Convention everywhere: ``y[M, N] = x[M, K] @ W[N, K].T`` (``torch.nn.functional.linear``).

Every ``prepare_*`` function takes prepared operands (dense activations ``x`` and the
already-masked weight ``W`` in the compute dtype, on the GPU) and returns a
:class:`Prepared`:

* ``fn()`` launches exactly the call named in ``call`` and returns its raw output. Format
  conversion (dense -> CSR/BSR/compressed 2:4), padding of the dense operand and
  transposition copies happen once, in ``prepare_*``, never inside ``fn``; what stays inside
  ``fn`` is exactly what a user of that API pays per call (for example torch's padding of
  ``x`` inside ``F.linear`` on a semi-structured weight, or the host-side descriptor set-up
  of ``torch._cslt_sparse_mm``).
* ``as_y(out)`` maps the raw output to ``y[M, N]`` (a view where possible) for the
  correctness check.
* ``layout`` says which operand is transposed and how each one sits in memory.

Only torch, numpy and (optionally) CuPy are imported: this module runs on the device machine,
which has none of simsparse's other dependencies. Masks are built from explicit seeded
generators (no global RNG state).
"""

from __future__ import annotations

import contextlib
import math
import warnings
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F

try:  # CuPy is optional: rows that need it are recorded as errors when it is missing
    import cupy
    import cupyx.scipy.sparse as cupy_sparse
except ImportError:  # pragma: no cover - depends on the machine
    cupy = None
    cupy_sparse = None

DTYPES = {"fp16": torch.float16, "bf16": torch.bfloat16, "fp32": torch.float32}
DEVICE = "cuda"  # where operands are made; a CPU dry run of the harness flow sets "cpu"


@dataclass
class Prepared:
    """One ready-to-launch GEMM: ``fn()`` runs it once, ``as_y`` turns its output into y[M, N]."""

    kernel: str
    variant: str
    call: str
    dtype: str
    layout: str
    fn: Callable[[], Any]
    as_y: Callable[[Any], torch.Tensor]
    extra: dict = field(default_factory=dict)
    keep: list = field(default_factory=list)  # objects that must outlive fn (graphs, handles)


def describes(kernel: str, variant: str, call: str):
    """Tag a ``prepare_*`` function with the kernel / variant / call it prepares, so rows for
    calls that failed or were skipped name the same thing as rows that ran."""

    def tag(f):
        f.kernel, f.variant, f.call = kernel, variant, call
        return f

    return tag


def _identity(out: torch.Tensor) -> torch.Tensor:
    return out


def _transpose(out: torch.Tensor) -> torch.Tensor:
    return out.t()


def dtype_name(dtype: torch.dtype) -> str:
    return {v: k for k, v in DTYPES.items()}[dtype]


# --------------------------------------------------------------------------------------------
# operands and masks (seeded; random normal data, never zeros)
# --------------------------------------------------------------------------------------------


def generator(seed: int, device=None) -> torch.Generator:
    g = torch.Generator(device=device or DEVICE)
    g.manual_seed(int(seed))
    return g


def randn(shape: tuple[int, ...], dtype: torch.dtype, seed: int, device=None) -> torch.Tensor:
    """Random normal tensor drawn in fp32 from a seeded generator, then cast."""
    device = device or DEVICE
    t = torch.randn(shape, generator=generator(seed, device), device=device, dtype=torch.float32)
    return t.to(dtype)


def mask_2to4(w: torch.Tensor) -> torch.Tensor:
    """2:4 along K: keep the 2 largest-|w| of every group of 4 consecutive elements of a row."""
    n, k = w.shape
    if k % 4:
        raise ValueError(f"2:4 needs K % 4 == 0, got K={k}")
    groups = w.abs().float().reshape(n, k // 4, 4)
    keep = groups.topk(2, dim=-1).indices
    mask = torch.zeros(groups.shape, dtype=torch.bool, device=w.device)
    mask.scatter_(-1, keep, True)
    return mask.reshape(n, k)


def mask_unstructured(shape: tuple[int, int], density: float, seed: int, device=None):
    """Each element kept independently with probability ``density`` (Bernoulli)."""
    device = device or DEVICE
    if not 0.0 < density <= 1.0:
        raise ValueError(f"density must be in (0, 1], got {density}")
    return torch.rand(shape, generator=generator(seed, device), device=device) < density


def mask_block(shape: tuple[int, int], density: float, block: int, seed: int, device=None):
    """Random block mask: exactly round(density * n_blocks) (at least 1) b x b blocks kept."""
    device = device or DEVICE
    n, k = shape
    if n % block or k % block:
        raise ValueError(f"shape {shape} is not a multiple of block {block}")
    nb, kb = n // block, k // block
    total = nb * kb
    n_keep = max(1, min(total, round(density * total)))
    scores = torch.rand(total, generator=generator(seed, device), device=device)
    flat = torch.zeros(total, dtype=torch.bool, device=device)
    flat[scores.topk(n_keep).indices] = True
    blocks = flat.reshape(nb, kb)
    return blocks.repeat_interleave(block, 0).repeat_interleave(block, 1)


def sparse_activation(k: int, density: float, dtype: torch.dtype, seed: int, device=None):
    """x[K] random normal with exactly round(density*K) non-zeros; returns (x, idx int32 sorted)."""
    device = device or DEVICE
    x = randn((k,), dtype, seed, device)
    nnz = max(1, min(k, round(density * k)))
    scores = torch.rand(k, generator=generator(seed + 1, device), device=device)
    idx = scores.topk(nnz).indices.sort().values
    keep = torch.zeros(k, dtype=torch.bool, device=device)
    keep[idx] = True
    x = torch.where(keep, x, torch.zeros((), dtype=dtype, device=device))
    return x, idx.to(torch.int32)


# --------------------------------------------------------------------------------------------
# dense: cuBLAS through torch
# --------------------------------------------------------------------------------------------


@describes("cublas", "linear",
           "torch.nn.functional.linear(x, W)")
def prepare_cublas(x: torch.Tensor, w: torch.Tensor) -> Prepared:
    """Dense GEMM through torch (cuBLAS/cuBLASLt): y = F.linear(x, W)."""
    return Prepared(
        kernel="cublas",
        variant="linear",
        call="torch.nn.functional.linear(x, W)",
        dtype=dtype_name(w.dtype),
        layout="x[M,K] row-major; W[N,K] row-major used transposed (y = x @ W.T); y[M,N] row-major",
        fn=lambda: F.linear(x, w),
        as_y=_identity,
    )


# --------------------------------------------------------------------------------------------
# 2:4 through cuSPARSELt
# --------------------------------------------------------------------------------------------


def cusparselt_version() -> int | None:
    try:
        return int(torch.backends.cusparselt.version())
    except Exception:  # noqa: BLE001 - absent in some builds
        return None


@describes("cusparselt", "semi_structured_linear",
           "torch.nn.functional.linear(x, Ws) with Ws = torch.sparse.to_sparse_semi_structured(W) [SparseSemiStructuredTensor._FORCE_CUTLASS=False]")
def prepare_cusparselt_linear(x: torch.Tensor, w24: torch.Tensor) -> Prepared:
    """2:4 weight as torch's semi-structured subclass (cuSPARSELt backend), used via F.linear.

    Per call this runs torch's __torch_dispatch__ path: pad x's rows to the dense minimum
    (8 for fp16/bf16), then ``torch._cslt_sparse_mm(packed, x_pad.t())`` and a transposed view.
    """
    from torch.sparse import SparseSemiStructuredTensor, to_sparse_semi_structured

    SparseSemiStructuredTensor._FORCE_CUTLASS = False  # CUTLASS backend refuses sm_90
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ws = to_sparse_semi_structured(w24)
    return Prepared(
        kernel="cusparselt",
        variant="semi_structured_linear",
        call=(
            "torch.nn.functional.linear(x, Ws) with Ws = torch.sparse.to_sparse_semi_structured(W)"
            " [SparseSemiStructuredTensor._FORCE_CUTLASS=False]"
        ),
        dtype=dtype_name(w24.dtype),
        layout=(
            "sparse A = W[N,K] compressed (cuSPARSELt); dense B = x_pad.t() [K,M_pad] "
            "column-major view; out [N,M_pad] -> y = out.t()[:M] (non-contiguous view)"
        ),
        fn=lambda: F.linear(x, ws),
        as_y=_identity,
        extra={"subclass": type(ws).__name__, "alg_id": int(getattr(ws, "alg_id_cusparselt", 0))},
        keep=[ws],
    )


@describes("cusparselt", "cslt_sparse_mm",
           "torch._cslt_sparse_mm(Wc, x_pad.t()) with Wc = torch._cslt_compress(W) [alg_id=0]")
def prepare_cslt_sparse_mm(x: torch.Tensor, w24: torch.Tensor, pad_to: int = 8) -> Prepared:
    """Direct call on a pre-compressed weight: torch._cslt_sparse_mm(Wc, x_pad.t()), alg_id 0.

    x's rows are padded to a multiple of ``pad_to`` once here (torch's semi-structured path pads
    to 8 for fp16/bf16); the padded rows are dropped in ``as_y``.
    """
    m = x.shape[0]
    m_pad = -(-m // pad_to) * pad_to
    xp = F.pad(x, (0, 0, 0, m_pad - m)) if m_pad != m else x
    wc = torch._cslt_compress(w24)
    b = xp.t()
    return Prepared(
        kernel="cusparselt",
        variant="cslt_sparse_mm",
        call="torch._cslt_sparse_mm(Wc, x_pad.t()) with Wc = torch._cslt_compress(W) [alg_id=0]",
        dtype=dtype_name(w24.dtype),
        layout=(
            "sparse A = W[N,K] compressed (cuSPARSELt); dense B = x_pad.t() [K,M_pad] "
            "column-major view; out [N,M_pad] row-major; y = out[:, :M].t()"
        ),
        fn=lambda: torch._cslt_sparse_mm(wc, b),
        as_y=lambda out: out[:, :m].t(),
        extra={"m_pad": m_pad, "alg_id": 0, "compressed_bytes": wc.numel() * wc.element_size()},
        keep=[wc, xp],
    )


def cslt_search(wc: torch.Tensor, b: torch.Tensor) -> dict:
    """cuSPARSELt's own algorithm search for this (Wc, B): alg id and, where torch exposes it,
    split-K. Returns the fields and which torch call gave them."""
    mm_search = getattr(getattr(torch._C, "_cusparselt", None), "mm_search", None)
    if mm_search is not None:
        try:
            res = mm_search(wc, b, None, None, None, False)
            alg_id, split_k, split_k_mode, max_alg_id = (int(v) for v in tuple(res)[:4])
            return {"alg_id": alg_id, "split_k": split_k, "split_k_mode": split_k_mode,
                    "max_alg_id": max_alg_id, "search_call": "torch._C._cusparselt.mm_search"}
        except Exception:  # noqa: BLE001 - fall back to the older entry point
            pass
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        alg_id = int(torch._cslt_sparse_mm_search(wc, b))
    return {"alg_id": alg_id, "search_call": "torch._cslt_sparse_mm_search"}


@describes("cusparselt", "cslt_sparse_mm_searched",
           "torch._cslt_sparse_mm(Wc, x_pad.t(), alg_id=<searched>[, split_k, split_k_mode])")
def prepare_cslt_sparse_mm_searched(x: torch.Tensor, w24: torch.Tensor,
                                    pad_to: int = 8) -> Prepared:
    """As prepare_cslt_sparse_mm, with the algorithm (and split-K) cuSPARSELt's search picks."""
    base = prepare_cslt_sparse_mm(x, w24, pad_to)
    wc, xp = base.keep
    b = xp.t()
    found = cslt_search(wc, b)
    kw = {"alg_id": found["alg_id"]}
    if "split_k" in found:
        kw.update(split_k=found["split_k"], split_k_mode=found["split_k_mode"])
    try:
        torch._cslt_sparse_mm(wc, b, **kw)
    except TypeError:  # older signature: alg_id only
        kw = {"alg_id": found["alg_id"]}
    args = ", ".join(f"{k}={v}" for k, v in kw.items())
    return Prepared(
        kernel="cusparselt",
        variant="cslt_sparse_mm_searched",
        call=f"torch._cslt_sparse_mm(Wc, x_pad.t(), {args}) with Wc = torch._cslt_compress(W); "
        f"{args} from {found['search_call']}",
        dtype=base.dtype,
        layout=base.layout,
        fn=lambda: torch._cslt_sparse_mm(wc, b, **kw),
        as_y=base.as_y,
        extra={**base.extra, **found},
        keep=[wc, xp],
    )


def prepare_cuda_graph(prep: Prepared, warmup: int = 3) -> Prepared:
    """Capture ``prep.fn`` once in a CUDA graph; ``fn`` replays it (no per-call host work)."""
    side = torch.cuda.Stream()
    side.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(side):
        for _ in range(warmup):
            prep.fn()
    torch.cuda.current_stream().wait_stream(side)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        static_out = prep.fn()

    def replay():
        graph.replay()
        return static_out

    return Prepared(
        kernel=prep.kernel,
        variant=prep.variant + "_cudagraph",
        call=f"torch.cuda.CUDAGraph.replay() of [{prep.call}]",
        dtype=prep.dtype,
        layout=prep.layout,
        fn=replay,
        as_y=prep.as_y,
        extra=dict(prep.extra),
        keep=[*prep.keep, graph, static_out],
    )


def launched_kernels(fn: Callable[[], Any]) -> list[dict]:
    """The GPU kernels one call of ``fn`` launches, as CUPTI (through torch.profiler) reports
    them: name (it encodes the library's tile shape), grid and block dims, registers, shared
    memory and duration. Tells which kernel a library's heuristic picked for a shape."""
    import json
    import os
    import tempfile

    from torch.profiler import ProfilerActivity, profile

    torch.cuda.synchronize()
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        fn()
        torch.cuda.synchronize()
    fd, path = tempfile.mkstemp(suffix=".json")
    os.close(fd)
    try:
        prof.export_chrome_trace(path)
        with open(path, encoding="utf-8") as f:
            trace = json.load(f)
    finally:
        os.unlink(path)
    out = []
    for ev in trace.get("traceEvents", []):
        if ev.get("cat") not in ("kernel", "gpu_memset", "gpu_memcpy"):
            continue
        a = ev.get("args", {})
        out.append({"cat": ev.get("cat"), "name": str(ev.get("name", ""))[:400],
                    "grid": a.get("grid"), "block": a.get("block"),
                    "regs": a.get("registers per thread"), "smem": a.get("shared memory"),
                    "dur_us": ev.get("dur")})
    return out


# --------------------------------------------------------------------------------------------
# fused attention: torch scaled_dot_product_attention on one backend
# --------------------------------------------------------------------------------------------

SDPA_BACKENDS = {"sdpa_flash": "FLASH_ATTENTION", "sdpa_cudnn": "CUDNN_ATTENTION",
                 "sdpa_efficient": "EFFICIENT_ATTENTION"}


def attention_inputs(batch: int, heads: int, kv_heads: int, q_len: int, kv_len: int, head_dim: int,
                     dtype: torch.dtype, seed: int):
    """q [B, H, Lq, D], k and v [B, Hkv, Lkv, D], unit-variance (scaled so softmax is not flat)."""
    q = randn((batch, heads, q_len, head_dim), dtype, seed)
    k = randn((batch, kv_heads, kv_len, head_dim), dtype, seed + 1)
    v = randn((batch, kv_heads, kv_len, head_dim), dtype, seed + 2)
    return q, k, v


def prepare_sdpa(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool, variant: str) -> Prepared:
    """Fused attention through torch SDPA restricted to one backend (sdpa_kernel): FlashAttention-2
    (torch's flash backend), cuDNN's fused attention, or the memory-efficient kernel."""
    from torch.nn.attention import SDPBackend, sdpa_kernel

    backend = getattr(SDPBackend, SDPA_BACKENDS[variant])
    gqa = k.shape[1] != q.shape[1]

    def run():
        with sdpa_kernel(backend):
            return F.scaled_dot_product_attention(q, k, v, is_causal=causal, enable_gqa=gqa)

    return Prepared(
        kernel="flash_attention", variant=variant,
        call=f"F.scaled_dot_product_attention(q, k, v, is_causal={causal}, enable_gqa={gqa}) under "
             f"sdpa_kernel(SDPBackend.{SDPA_BACKENDS[variant]})",
        dtype=dtype_name(q.dtype), layout="q [B, H, Lq, D], k/v [B, Hkv, Lkv, D] contiguous; out [B, H, Lq, D]",
        fn=run, as_y=_identity)


def prepare_sdpa_tag(variant: str):
    """What an attention row that raised names (error_row reads kernel / variant / call)."""
    from types import SimpleNamespace

    return SimpleNamespace(kernel="flash_attention", variant=variant, layout=None, dtype=None,
                           call=f"F.scaled_dot_product_attention under sdpa_kernel({SDPA_BACKENDS[variant]})")


def attention_error(out: torch.Tensor, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, causal: bool,
                    rows: int = 64) -> tuple[float, bool]:
    """Relative error of `out` on batch 0, the first and last query head and up to `rows` query
    rows against an fp32 softmax(q kᵀ / sqrt(d)) v; and whether all of `out` is finite."""
    finite = bool(torch.isfinite(out).all().item())
    h, hkv, lq, lkv = q.shape[1], k.shape[1], q.shape[2], k.shape[2]
    idx = torch.linspace(0, lq - 1, min(rows, lq), device=q.device).round().long().unique()
    num = den = 0.0
    for head in (0, h - 1):
        kh = head // (h // hkv)
        qs = q[0, head].index_select(0, idx).float()
        s = qs @ k[0, kh].float().T / math.sqrt(q.shape[-1])
        if causal:  # torch's is_causal aligns the mask to the top left: query i sees keys j <= i
            j = torch.arange(lkv, device=q.device)
            s = s.masked_fill(j[None, :] > idx[:, None], float("-inf"))
        ref = torch.softmax(s, dim=-1) @ v[0, kh].float()
        d = out[0, head].index_select(0, idx).float() - ref
        num += float(d.pow(2).sum())
        den += float(ref.pow(2).sum())
    err = math.sqrt(num / den) if den > 0 else float("inf")
    return (err if math.isfinite(err) else float("inf")), finite


# --------------------------------------------------------------------------------------------
# MoE experts: one grouped GEMM over ragged token groups
# --------------------------------------------------------------------------------------------


def expert_token_counts(total: int, experts: int, skew: float, seed: int) -> list[int]:
    """Tokens routed to each expert: equal shares (skew 0) or a Dirichlet(1/skew) draw (seeded)."""
    if skew <= 0:
        base, rem = divmod(total, experts)
        return [base + (1 if e < rem else 0) for e in range(experts)]
    import numpy as np

    p = np.random.default_rng(seed).dirichlet(np.full(experts, 1.0 / skew))
    counts = np.floor(p * total).astype(int)
    counts[int(np.argmax(p))] += total - int(counts.sum())
    return [int(c) for c in counts]


@describes("grouped_gemm", "torch_grouped_mm", "torch._grouped_mm(x, W.transpose(-2, -1), offs=offs)")
def prepare_grouped_mm(x: torch.Tensor, w: torch.Tensor, counts: list[int]) -> Prepared:
    """All experts in one call: x [T, K] (tokens sorted by expert), W [E, N, K]; y [T, N]."""
    offs = torch.tensor(counts, device=x.device, dtype=torch.int32).cumsum(0).to(torch.int32)
    wt = w.transpose(-2, -1)
    return Prepared(kernel="grouped_gemm", variant="torch_grouped_mm",
                    call="torch._grouped_mm(x, W.transpose(-2, -1), offs=offs)", dtype=dtype_name(x.dtype),
                    layout="x [T, K] row-major, tokens grouped by expert; W [E, N, K] row-major used transposed; "
                           "y [T, N]",
                    fn=lambda: torch._grouped_mm(x, wt, offs=offs), as_y=_identity, keep=[offs, wt])


def grouped_error(y: torch.Tensor, x: torch.Tensor, w: torch.Tensor, counts: list[int],
                  rows: int = 32) -> tuple[float, bool]:
    """Relative error of y against fp32 x_e · W_eᵀ on up to `rows` tokens of every expert."""
    finite = bool(torch.isfinite(y).all().item())
    num = den = 0.0
    start = 0
    for e, c in enumerate(counts):
        if c:
            sl = slice(start, start + min(c, rows))
            ref = x[sl].float() @ w[e].float().T
            num += float((y[sl].float() - ref).pow(2).sum())
            den += float(ref.pow(2).sum())
        start += c
    err = math.sqrt(num / den) if den > 0 else float("inf")
    return (err if math.isfinite(err) else float("inf")), finite


# --------------------------------------------------------------------------------------------
# unstructured: cuSPARSE CSR through torch and CuPy
# --------------------------------------------------------------------------------------------


def _transposed_activations(x: torch.Tensor) -> torch.Tensor:
    """xT[K, M] row-major (a copy made once, outside timing)."""
    return x.t().contiguous()


@describes("cusparse_csr", "torch_csr_matmul",
           "W_csr @ xT  (W_csr = torch.sparse_csr_tensor(int32 crow, int32 col, values))")
def prepare_torch_csr(x: torch.Tensor, wm: torch.Tensor) -> Prepared:
    """torch CSR (int32 indices) @ dense: yT[N, M] = W_csr[N, K] @ xT[K, M] (cuSPARSE SpMM)."""
    csr = wm.to_sparse_csr()
    w_csr = torch.sparse_csr_tensor(
        csr.crow_indices().to(torch.int32),
        csr.col_indices().to(torch.int32),
        csr.values(),
        size=wm.shape,
    )
    del csr
    xt = _transposed_activations(x)
    nnz = int(w_csr.values().numel())
    return Prepared(
        kernel="cusparse_csr",
        variant="torch_csr_matmul",
        call="W_csr @ xT  (W_csr = torch.sparse_csr_tensor(int32 crow, int32 col, values))",
        dtype=dtype_name(wm.dtype),
        layout="sparse W[N,K] CSR int32 indices; dense xT[K,M] row-major; out yT[N,M] row-major",
        fn=lambda: w_csr @ xt,
        as_y=_transpose,
        extra={"nnz": nnz, "index_dtype": "int32"},
        keep=[w_csr, xt],
    )


@describes("cupy_csr", "cupyx_csr_matmul",
           "cupyx.scipy.sparse.csr_matrix(W) @ X  (X = cupy.from_dlpack(x).T, F-order [K,M])")
def prepare_cupy_csr(x: torch.Tensor, wm: torch.Tensor) -> Prepared:
    """cupyx.scipy.sparse.csr_matrix @ cupy array (cuSPARSE SpMM through CuPy).

    The dense operand is x's memory seen as X[K, M] column-major (no copy).
    """
    if cupy is None:
        raise RuntimeError("cupy is not importable")
    csr = wm.to_sparse_csr()
    data = cupy.from_dlpack(csr.values().contiguous())
    indices = cupy.from_dlpack(csr.col_indices().to(torch.int32).contiguous())
    indptr = cupy.from_dlpack(csr.crow_indices().to(torch.int32).contiguous())
    w_cp = cupy_sparse.csr_matrix((data, indices, indptr), shape=tuple(wm.shape))
    w_cp.has_canonical_format = True  # sorted, no duplicates (from torch's conversion)
    x_cp = cupy.from_dlpack(x.contiguous()).T  # [K, M] F-contiguous view of x
    return Prepared(
        kernel="cupy_csr",
        variant="cupyx_csr_matmul",
        call="cupyx.scipy.sparse.csr_matrix(W) @ X  (X = cupy.from_dlpack(x).T, F-order [K,M])",
        dtype=dtype_name(wm.dtype),
        layout="sparse W[N,K] CSR int32 (CuPy); dense X[K,M] column-major; out yT[N,M]",
        fn=lambda: w_cp @ x_cp,
        as_y=lambda out: torch.from_dlpack(out).t(),
        extra={"nnz": int(data.size), "index_dtype": "int32"},
        keep=[w_cp, x_cp, data, indices, indptr],
    )


# --------------------------------------------------------------------------------------------
# block sparse: torch BSR (cuSPARSE bsrmm) and torch's Triton BSR kernel
# --------------------------------------------------------------------------------------------


@describes("torch_bsr", "torch_bsr_matmul",
           "W_bsr @ xT  (W_bsr = W.to_sparse_bsr((b, b)))")
def prepare_torch_bsr(x: torch.Tensor, wm: torch.Tensor, block: int) -> Prepared:
    """torch BSR @ dense: yT[N, M] = W_bsr[N, K] @ xT[K, M] (torch's CUDA BSR matmul)."""
    w_bsr = wm.to_sparse_bsr((block, block))
    xt = _transposed_activations(x)
    nnz_blocks = int(w_bsr.values().shape[0])
    return Prepared(
        kernel="torch_bsr",
        variant="torch_bsr_matmul",
        call=f"W_bsr @ xT  (W_bsr = W.to_sparse_bsr(({block}, {block})))",
        dtype=dtype_name(wm.dtype),
        layout=f"sparse W[N,K] BSR {block}x{block} int64 indices; dense xT[K,M] row-major; "
        "out yT[N,M]",
        fn=lambda: w_bsr @ xt,
        as_y=_transpose,
        extra={"nnz": nnz_blocks * block * block, "nnz_blocks": nnz_blocks,
               "index_dtype": str(w_bsr.col_indices().dtype).replace("torch.", "")},
        # torch 2.11 on sm_90 routes BSR @ dense (fp16 and fp32 alike) to its Triton
        # bsr_dense_addmm: its "non-optimal triton kernel parameters" warning is kept in the
        # rows' first_call_warnings
        keep=[w_bsr, xt],
    )


# --------------------------------------------------------------------------------------------
# activation-sparse GEMV (M = 1): only the weight columns whose activation is non-zero are read
# --------------------------------------------------------------------------------------------


@describes("act_gemv", "torch_index_select_cols",
           "W.index_select(1, idx) @ x.index_select(0, idx)")
def prepare_act_gemv_torch(w: torch.Tensor, x: torch.Tensor, idx: torch.Tensor) -> Prepared:
    """Naive torch form on row-major W[N, K]: gather columns (strided), then GEMV."""
    idx64 = idx.to(torch.int64)
    return Prepared(
        kernel="act_gemv",
        variant="torch_index_select_cols",
        call="W.index_select(1, idx) @ x.index_select(0, idx)",
        dtype=dtype_name(w.dtype),
        layout="W[N,K] row-major (column gather is strided); x[K]; idx int64 sorted; y[N]",
        fn=lambda: w.index_select(1, idx64) @ x.index_select(0, idx64),
        as_y=lambda out: out.reshape(1, -1),
        extra={"act_nnz": int(idx.numel())},
        keep=[idx64],
    )


@describes("act_gemv", "torch_index_select_rows_wt",
           "torch.mv(Wt.index_select(0, idx).t(), x.index_select(0, idx))  (Wt = W.t())")
def prepare_act_gemv_torch_t(w: torch.Tensor, x: torch.Tensor, idx: torch.Tensor) -> Prepared:
    """torch form on Wt[K, N] (weight stored transposed): gather whole rows, then GEMV."""
    idx64 = idx.to(torch.int64)
    wt = w.t().contiguous()
    return Prepared(
        kernel="act_gemv",
        variant="torch_index_select_rows_wt",
        call="torch.mv(Wt.index_select(0, idx).t(), x.index_select(0, idx))  (Wt = W.t())",
        dtype=dtype_name(w.dtype),
        layout="Wt[K,N] row-major (gathered rows are contiguous); x[K]; idx int64 sorted; y[N]",
        fn=lambda: torch.mv(wt.index_select(0, idx64).t(), x.index_select(0, idx64)),
        as_y=lambda out: out.reshape(1, -1),
        extra={"act_nnz": int(idx.numel())},
        keep=[idx64, wt],
    )


_ACT_GEMV_SRC = r"""
__device__ __forceinline__ float ld_fp16(unsigned int u) {
    float f; unsigned short h = (unsigned short)u;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
}
__device__ __forceinline__ float ld_bf16(unsigned int u) {
    return __uint_as_float((u & 0xffffu) << 16);
}
#define ACT_GEMV(NAME, LD)                                                                  \
extern "C" __global__ void NAME(const unsigned short* __restrict__ wt,                      \
                                const unsigned short* __restrict__ x,                       \
                                const int* __restrict__ idx, int nnz, int n, int chunk,     \
                                float* __restrict__ y) {                                    \
    const int col = (blockIdx.x * blockDim.x + threadIdx.x) * 8;                            \
    if (col >= n) return;                                                                   \
    const int j0 = blockIdx.y * chunk;                                                      \
    const int j1 = (j0 + chunk < nnz) ? (j0 + chunk) : nnz;                                 \
    float acc[8] = {0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f, 0.f};                                \
    _Pragma("unroll 4")                                                                     \
    for (int j = j0; j < j1; ++j) {                                                         \
        const int r = idx[j];                                                               \
        const float xv = LD((unsigned int)x[r]);                                            \
        const uint4 v = __ldg(reinterpret_cast<const uint4*>(wt + (size_t)r * n + col));    \
        acc[0] += LD(v.x) * xv; acc[1] += LD(v.x >> 16) * xv;                               \
        acc[2] += LD(v.y) * xv; acc[3] += LD(v.y >> 16) * xv;                               \
        acc[4] += LD(v.z) * xv; acc[5] += LD(v.z >> 16) * xv;                               \
        acc[6] += LD(v.w) * xv; acc[7] += LD(v.w >> 16) * xv;                               \
    }                                                                                       \
    for (int i = 0; i < 8; ++i) atomicAdd(y + col + i, acc[i]);                             \
}
ACT_GEMV(act_gemv_fp16, ld_fp16)
ACT_GEMV(act_gemv_bf16, ld_bf16)
extern "C" __global__ void empty_kernel() {}
"""

_MODULE = None


def _cupy_module():
    global _MODULE
    if cupy is None:
        raise RuntimeError("cupy is not importable")
    if _MODULE is None:
        _MODULE = cupy.RawModule(code=_ACT_GEMV_SRC, options=("-std=c++17",))
    return _MODULE


ACT_GEMV_THREADS = 128  # threads per block; each thread owns 8 consecutive output columns


def act_gemv_grid(n: int, nnz: int, n_sm: int = 132) -> tuple[tuple[int, int], int]:
    """Grid for the fused kernel: x over N/1024 column tiles, y over chunks of the index list
    so that about 8 blocks per SM are in flight (split-K with fp32 atomics)."""
    gx = -(-n // (ACT_GEMV_THREADS * 8))
    gy = max(1, min(-(-8 * n_sm // gx), -(-nnz // 8)))
    chunk = -(-nnz // gy)
    gy = -(-nnz // chunk)
    return (gx, gy), chunk


@describes("act_gemv", "cupy_fused_gather_gemv",
           "cudaMemsetAsync(y) + cupy.RawKernel act_gemv_<dtype> (fused gather-GEMV, split-K fp32 atomicAdd)")
def prepare_act_gemv_cupy(w: torch.Tensor, x: torch.Tensor, idx: torch.Tensor,
                          n_sm: int = 132) -> Prepared:
    """Fused CuPy RawKernel: y[n] = sum_j Wt[idx[j], n] * x[idx[j]] over the non-zeros only.

    Wt = W.t() (K x N row-major, made once) so each selected weight row is one contiguous,
    16-byte-vectorised read; split over the index list with fp32 atomicAdd into y, which is
    zeroed by cudaMemsetAsync inside the call. Reads exactly act_nnz * N weights.
    """
    if cupy is None:
        raise RuntimeError("cupy is not importable")
    n, k = w.shape
    if n % 8:
        raise ValueError(f"act_gemv_cupy needs N % 8 == 0, got N={n}")
    name = {torch.float16: "act_gemv_fp16", torch.bfloat16: "act_gemv_bf16"}[w.dtype]
    kern = _cupy_module().get_function(name)
    wt = w.t().contiguous()
    wt_cp = cupy.from_dlpack(wt.view(torch.int16))
    x_cp = cupy.from_dlpack(x.contiguous().view(torch.int16))
    idx_cp = cupy.from_dlpack(idx.to(torch.int32).contiguous())
    nnz = int(idx.numel())
    y = cupy.empty((n,), dtype=cupy.float32)
    grid, chunk = act_gemv_grid(n, nnz, n_sm)
    args = (wt_cp, x_cp, idx_cp, cupy.int32(nnz), cupy.int32(n), cupy.int32(chunk), y)
    nbytes = n * 4

    def run():
        stream = cupy.cuda.get_current_stream().ptr
        cupy.cuda.runtime.memsetAsync(y.data.ptr, 0, nbytes, stream)
        kern(grid, (ACT_GEMV_THREADS,), args)
        return y

    return Prepared(
        kernel="act_gemv",
        variant="cupy_fused_gather_gemv",
        call=f"cudaMemsetAsync(y) + cupy.RawKernel {name}<<<{grid}, {ACT_GEMV_THREADS}>>> "
        f"(chunk={chunk}, fp32 atomicAdd)",
        dtype=dtype_name(w.dtype),
        layout="Wt[K,N] row-major; x[K]; idx int32 sorted; y[N] fp32 (split-K atomics)",
        fn=run,
        as_y=lambda out: torch.from_dlpack(out).reshape(1, -1),
        extra={"act_nnz": nnz, "grid": list(grid), "chunk": chunk},
        keep=[wt, wt_cp, x_cp, idx_cp, y],
    )


# --------------------------------------------------------------------------------------------
# ceilings and fixed costs
# --------------------------------------------------------------------------------------------


def prepare_copy(nbytes: int) -> tuple[Callable[[], Any], int]:
    """Device-to-device copy of ``nbytes``; returns (fn, bytes read + written)."""
    n = nbytes // 2
    src = torch.randn(n, device=DEVICE, dtype=torch.float16)
    dst = torch.empty_like(src)

    def run():
        dst.copy_(src)
        return dst

    return run, 2 * n * 2


def prepare_empty_kernel(kind: str = "torch") -> tuple[Callable[[], Any], str]:
    """An (almost) empty kernel: CuPy's ``empty_kernel<<<1,1>>>`` or torch.cuda._sleep(0)."""
    if kind == "cupy":
        kern = _cupy_module().get_function("empty_kernel")
        return (lambda: kern((1,), (1,), ())), "cupy.RawKernel empty_kernel<<<1, 1>>>()"
    return (lambda: torch.cuda._sleep(0)), "torch.cuda._sleep(0)"


def reference_rows(x: torch.Tensor, wm: torch.Tensor, rows: torch.Tensor, cols: torch.Tensor):
    """fp32 reference of y on sampled rows (all N) and sampled columns (all M)."""
    with _no_tf32():
        wf = wm.float()
        ref_r = x.index_select(0, rows).float() @ wf.t()
        ref_c = x.float() @ wf.index_select(0, cols).t()
    return ref_r, ref_c


@contextlib.contextmanager
def _no_tf32():
    old = torch.backends.cuda.matmul.allow_tf32
    torch.backends.cuda.matmul.allow_tf32 = False
    try:
        yield
    finally:
        torch.backends.cuda.matmul.allow_tf32 = old


def relative_error(y: torch.Tensor, rows, cols, ref_r, ref_c) -> tuple[float, bool]:
    """Relative Frobenius error of y against the references, and whether all of y is finite."""
    finite = bool(torch.isfinite(y).all().item())
    d_r = y.index_select(0, rows).float() - ref_r
    d_c = y.index_select(1, cols).float() - ref_c
    num = float(d_r.pow(2).sum() + d_c.pow(2).sum())
    den = float(ref_r.pow(2).sum() + ref_c.pow(2).sum())
    err = math.sqrt(num / den) if den > 0 else float("inf")
    return (err if math.isfinite(err) else float("inf")), finite
