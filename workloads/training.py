"""Training-step traces: forward, backward-data and backward-weight GEMMs with the sparsity
that really applies to each operand.

For a weight GEMM y[M, N] = x[M, K] · W[N, K]ᵀ (GEMM convention of simsparse.core.ops):

* bwd_data   dX[M, K] = dY[M, N] · W[N, K]   → gemm(m=M, n=K, k=N) with "weight" Wᵀ[K, N]:
  the reduction axis is now N, so an N:M mask (groups along K) is N:M here only when it is
  transposable (n:m along N as well, meta["weight_transposable"]); otherwise it is
  unstructured at the same density. Blocks and channels transpose; the activation operand
  is dY, sparse where a ReLU right after the op zeroed the output (meta["grad_output_density"]).
* bwd_weight dW[N, K] = dYᵀ[N, M] · X[M, K]  → gemm(m=N, n=K, k=M) with "weight" Xᵀ[K, M]
  (an activation, weight_is_param=False) carrying the forward activation sparsity, and dYᵀ as
  the activation operand. The gradient dW is dense (SR-STE and magnitude re-pruning need every
  entry) unless `masked_weight_grad`, when only the kept entries are produced
  (meta["output_density"]).

Convolutions use their im2col GEMM view (the backward GEMMs are col2im / im2col lowered and
carry the geometry in meta["conv"]). Attention backward (FlashAttention-2, Dao 2023, §3.1.2)
is five GEMMs of the forward's size against the forward's two: it recomputes S = Q·Kᵀ and
forms dP = dO·Vᵀ (op `.bwd_recompute`: the forward's geometry), then dQ = dS·K, dK = dSᵀ·Q,
dV = Pᵀ·dO (op `.bwd_grads`, see _attention_backward): 10·b·h·q·kv·d FLOPs, 2.5× the forward,
and, like the forward, only the score tiles causal / block masking leaves are computed.
Element-wise ops get one backward op reading the gradient and the saved input. The first
weight op that reads the network input needs no dX and gets no bwd_data op.

A training trace remembers its forward pass: `forward_trace` gives it back and `rederive`
changes the forward ops and derives the backward again, so sparsity given before or after
the backward is derived gives the same trace (workloads.apply_sparsity uses it).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np

from simsparse.core.errors import bad
from simsparse.core.ops import AttnGeom, Op, Trace
from simsparse.core.sparsity import (
    NM,
    Activation,
    Block,
    Channel,
    ConstantFanIn,
    Dense,
    Group,
    Sparsity,
    SparsityStats,
    Unstructured,
)
from workloads.detect import attach_stats

KEEP_META = ("role", "layer", "expert", "experts", "top_k", "module")


def transposed_stats(stats: SparsityStats | None, rows: int, cols: int,
                     col_nnz: list[int] | None = None) -> SparsityStats | None:
    """Stats of Wᵀ from those of W[rows, cols]: per-row counts are W's per-column counts."""
    if stats is None:
        return None
    tile_nnz, tile_shape = None, None
    if stats.tile_nnz is not None and stats.tile_shape is not None:
        th, tw = stats.tile_shape
        grid = (-(-rows // th), -(-cols // tw))
        if len(stats.tile_nnz) == grid[0] * grid[1]:
            tile_nnz = np.asarray(stats.tile_nnz).reshape(grid).T.ravel()
            tile_shape = (tw, th)
    row = np.asarray(col_nnz) if col_nnz is not None else None
    return SparsityStats(row_nnz=row, tile_nnz=tile_nnz, tile_shape=tile_shape)


def transpose_sparsity(sp: Sparsity, transposable: bool = False, rows: int | None = None,
                       cols: int | None = None, col_nnz: list[int] | None = None) -> Sparsity:
    """The pattern of Wᵀ given the pattern of W[rows, cols] (groups run along the new last axis)."""
    if sp.is_dense and not isinstance(sp, Activation):
        return Dense()
    if isinstance(sp, NM):
        out: Sparsity = NM(sp.n, sp.m) if transposable else Unstructured(sp.density)
    elif isinstance(sp, Block):
        out = Block(sp.bw, sp.bh, sp.density)
    elif isinstance(sp, Group):
        out = Block(sp.g, 1, sp.density)  # vectors along K become vectors down the columns
    elif isinstance(sp, Channel):
        out = Channel(sp.density, 1 - sp.axis)
    elif isinstance(sp, (ConstantFanIn, Unstructured)):
        out = Unstructured(sp.density)
    else:
        out = sp
    if rows is not None and cols is not None:
        st = transposed_stats(sp.stats, rows, cols, col_nnz)
        if st is not None:
            out = attach_stats(out, st)
    return out


def _grad_sparsity(op: Op) -> Sparsity:
    d = op.meta.get("grad_output_density")
    if d is None or d >= 1.0:
        return Dense()
    return Activation(max(float(d), 1e-9), "relu")


def _meta(op: Op, **extra: Any) -> dict[str, Any]:
    m = {k: op.meta[k] for k in KEEP_META if k in op.meta}
    m["fwd_op"] = op.name
    m.update({k: v for k, v in extra.items() if v is not None})
    return m


def _gemm(name: str, m: int, n: int, k: int, batch: int, op: Op, phase: str, weight: Sparsity,
          activation: Sparsity, weight_is_param: bool, **meta: Any) -> Op:
    try:
        out = Op.gemm(m, n, k, batch=batch, dtype=op.dtype, phase=phase, name=name, weight=weight,
                      activation=activation, weight_is_param=weight_is_param)
    except ValueError:  # the transposed pattern does not tile this shape: keep its density only
        out = Op.gemm(m, n, k, batch=batch, dtype=op.dtype, phase=phase, name=name,
                      weight=Unstructured(weight.density) if weight.density < 1 else Dense(),
                      activation=activation, weight_is_param=weight_is_param)
    out.meta.update(_meta(op, **meta))
    return out


def _weight_op_backward(op: Op, needs_dx: bool, masked_weight_grad: bool) -> list[Op]:
    m, n, k, g = op.m, op.n, op.k, op.batch
    conv = op.conv.__dict__.copy() if op.conv is not None else op.meta.get("conv")
    extra = {"lowered_from": "conv2d", "conv": conv} if conv is not None else {}
    out = []
    dy = _grad_sparsity(op)
    if needs_dx:
        rows = n * g  # detect() saw the stacked [groups·N, K] weight
        wt = transpose_sparsity(op.weight, bool(op.meta.get("weight_transposable")), rows, k,
                                op.meta.get("weight_col_nnz"))
        out.append(_gemm(f"{op.name}.bwd_data", m, k, n, g, op, "bwd_data", wt, dy, True, **extra))
    xt = op.activation if op.activation.pattern == "activation" else Dense()
    w_density = op.weight.density if masked_weight_grad and not op.weight.is_dense else 1.0
    out.append(_gemm(f"{op.name}.bwd_weight", n, k, m, g, op, "bwd_weight", xt, dy, False,
                     output_density=w_density, output_masked=masked_weight_grad and w_density < 1 or None,
                     **extra))
    return out


def _act_gemm_backward(op: Op) -> list[Op]:
    """y = A·Bᵀ with two activations (batched): dA = dY·B and dB = dYᵀ·A."""
    m, n, k, g = op.m, op.n, op.k, op.batch
    return [_gemm(f"{op.name}.bwd_data_a", m, k, n, g, op, "bwd_data", Dense(), Dense(), False),
            _gemm(f"{op.name}.bwd_data_b", n, k, m, g, op, "bwd_data", Dense(), Dense(), False)]


def _attention_backward(op: Op) -> list[Op]:
    """FlashAttention-2 backward (Dao 2023, §3.1.2): 5 GEMMs of 2·q·kv·d FLOPs per (batch, head).

    `.bwd_recompute` (S = Q·Kᵀ, dP = dO·Vᵀ) has the forward's geometry. `.bwd_grads` holds
    dQ = dS·K, dK = dSᵀ·Q and dV = Pᵀ·dO: three GEMMs, the work of 1.5 forward attention ops,
    so it is an attention op over 1.5× the forward's (batch, kv-head) pairs, each pair with
    the forward's query heads per kv head, q_len, kv_len, head_dim, causal flag and block
    density. Cost models price an attention op from its geometry (tiles of the score matrix
    that masking leaves), so the backward is priced as 2.5 forwards, masked tiles skipped as
    the fused kernel skips them. Where the pairs are odd (odd batch × odd kv heads) they cannot
    be split in halves: the three GEMMs are batched GEMMs (same FLOPs, but priced without
    skipping masked tiles; meta["score_fraction"] says how much of them is masked).
    """
    a = op.attn
    bh = a.batch * a.heads
    frac = a.score_fraction
    rec = Op.attention(a, dtype=op.dtype, phase="bwd_data", name=f"{op.name}.bwd_recompute")
    rec.meta.update(_meta(op, computes="S = Q·Kᵀ (recomputed) and dP = dO·Vᵀ"))
    pairs, group = a.batch * a.n_kv_heads, a.heads // a.n_kv_heads
    if pairs % 2 == 0:
        geom = AttnGeom(pairs * 3 // 2, group, a.q_len, a.kv_len, a.head_dim, kv_heads=1 if group > 1 else None,
                        causal=a.causal, block_density=a.block_density)
        grads = Op.attention(geom, dtype=op.dtype, phase="bwd_data", name=f"{op.name}.bwd_grads")
        grads.meta.update(_meta(op, computes="dQ = dS·K, dK = dSᵀ·Q, dV = Pᵀ·dO: 3 GEMMs per (batch, head), "
                                "as an attention op over 1.5x the (batch, kv head) pairs"))
        return [rec, grads]
    grads = [  # dQ = dS·K, dK = dSᵀ·Q, dV = Pᵀ·dO (per batch·head)
        _gemm(f"{op.name}.bwd_dq", a.q_len, a.head_dim, a.kv_len, bh, op, "bwd_data", Dense(), Dense(), False,
              score_fraction=frac),
        _gemm(f"{op.name}.bwd_dk", a.kv_len, a.head_dim, a.q_len, bh, op, "bwd_data", Dense(), Dense(), False,
              score_fraction=frac),
        _gemm(f"{op.name}.bwd_dv", a.kv_len, a.head_dim, a.q_len, bh, op, "bwd_data", Dense(), Dense(), False,
              score_fraction=frac),
    ]
    return [rec, *grads]


def _eltwise_backward(op: Op) -> list[Op]:
    embedding = op.meta.get("op_type") == "embedding"
    phase = "bwd_weight" if embedding else "bwd_data"
    # gradient of an element-wise op: read dY and the saved input(s), write dX (a scatter-add
    # into the table for an embedding)
    flops = 1.0 if embedding else op.flops_per_elem
    b = Op.eltwise(op.m, dtype=op.dtype, flops_per_elem=flops, n_inputs=op.n_inputs + 1, phase=phase,
                   name=f"{op.name}.bwd")
    b.meta.update(_meta(op, op_type=op.meta.get("op_type")))
    return [b]


def training_trace(trace: Trace, masked_weight_grad: bool = False) -> Trace:
    """Forward trace → one training step: the forward ops, then the backward ops in reverse."""
    if any(op.phase != "fwd" for op in trace):
        raise bad("trace", trace.name, "a forward-only trace (every op phase 'fwd')")
    ops = list(trace.ops)
    first_weight = next((i for i, op in enumerate(ops) if op.kind in ("gemm", "conv2d") and op.weight_is_param),
                        None)
    input_is_data = first_weight is not None and not any(
        op.meta.get("op_type") == "embedding" for op in ops[:first_weight])
    bwd: list[Op] = []
    for i in range(len(ops) - 1, -1, -1):
        op = ops[i]
        if op.kind in ("gemm", "conv2d") and op.weight_is_param:
            bwd += _weight_op_backward(op, not (input_is_data and i == first_weight), masked_weight_grad)
        elif op.kind == "gemm":
            bwd += _act_gemm_backward(op)
        elif op.kind == "attention":
            bwd += _attention_backward(op)
        else:
            bwd += _eltwise_backward(op)
    prov = {**trace.provenance, "training": True, "masked_weight_grad": masked_weight_grad}
    return Trace(f"{trace.name}-train", tuple(ops + bwd), prov)


def is_training(trace: Trace) -> bool:
    """A trace training_trace made (its provenance says so and it has backward ops)."""
    return bool(trace.provenance.get("training")) and any(op.phase != "fwd" for op in trace)


def forward_trace(trace: Trace) -> Trace:
    """The forward trace a training trace was derived from: its forward ops, name and provenance."""
    if not is_training(trace):
        raise bad("trace", trace.name, "a training trace (from training_trace or phase='train')")
    prov = {k: v for k, v in trace.provenance.items() if k not in ("training", "masked_weight_grad")}
    return Trace(trace.name.removesuffix("-train"), tuple(op for op in trace if op.phase == "fwd"), prov)


def rederive(trace: Trace, change: Callable[[Trace], Trace]) -> Trace:
    """A training trace whose forward ops `change` rewrote, with the backward ops derived again
    from them (the same trace as applying `change` before training_trace)."""
    fwd = change(forward_trace(trace))
    return training_trace(fwd, masked_weight_grad=bool(trace.provenance.get("masked_weight_grad")))


def by_phase(trace: Trace) -> dict[str, float]:
    """FLOPs per phase (fwd, bwd_data, bwd_weight)."""
    out: dict[str, float] = {}
    for op in trace:
        out[op.phase] = out.get(op.phase, 0.0) + op.flops
    return out
