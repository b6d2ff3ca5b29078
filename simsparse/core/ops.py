"""Operators and traces.

GEMM convention, used everywhere: y[M, N] = x[M, K] · W[N, K]ᵀ (torch `F.linear`).
M = tokens / rows of activations, N = output features, K = input features (reduction axis);
the *weight* is W, the *activation* is x. A sparse op ("spmm") is a gemm whose operand
carries a Sparsity.

Other kinds carry their own geometry and expose the same GEMM view (m, n, k, batch):
* conv2d is lowered by im2col: per group g, M = N_img·H_out·W_out, N = C_out/g,
  K = (C_in/g)·kh·kw, batch = g;
* attention is two batched GEMMs per (batch, head): S = Q·Kᵀ and O = P·V;
* eltwise (activation functions, norms, residual adds, embedding gathers) is pure traffic.
"""

from __future__ import annotations

import dataclasses
import itertools
import json
import math
import numbers
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from simsparse.core.errors import bad
from simsparse.core.sparsity import Channel, Dense, Sparsity, parse_pattern

DTYPES = ("fp32", "tf32", "fp16", "bf16", "fp8", "int8", "int4")
DTYPE_BYTES: dict[str, float] = {
    "fp32": 4, "tf32": 4, "fp16": 2, "bf16": 2, "fp8": 1, "int8": 1, "int4": 0.5,
}
PHASES = ("fwd", "bwd_data", "bwd_weight")
KINDS = ("gemm", "conv2d", "attention", "eltwise")
MAX_DIM = 2**40  # larger dimensions are surely a mistake (and overflow float maths)


def _pos_int(value: Any, name: str) -> int:
    if isinstance(value, bool):
        raise bad(name, value, "a positive integer")
    if isinstance(value, numbers.Integral):  # numpy / torch integer scalars
        value = int(value)
    elif isinstance(value, numbers.Real) and float(value).is_integer():
        value = int(value)
    if not isinstance(value, int) or value <= 0 or value > MAX_DIM:
        raise bad(name, value, "a positive integer up to 2**40")
    return value


def _nonneg_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < 0:
        raise bad(name, value, "a non-negative integer")
    return int(value)


@dataclass(frozen=True)
class ConvGeom:
    """2-D convolution geometry (NCHW), enough to apply the im2col rule."""

    n_img: int
    c_in: int
    h: int
    w: int
    c_out: int
    kh: int
    kw: int
    stride: int = 1
    pad: int = 0
    dilation: int = 1
    groups: int = 1

    def __post_init__(self) -> None:
        for f in ("n_img", "c_in", "h", "w", "c_out", "kh", "kw", "stride", "dilation", "groups"):
            object.__setattr__(self, f, _pos_int(getattr(self, f), f"conv.{f}"))
        object.__setattr__(self, "pad", _nonneg_int(self.pad, "conv.pad"))
        if self.c_in % self.groups or self.c_out % self.groups:
            raise bad("conv.groups", self.groups, f"a divisor of c_in={self.c_in} and c_out={self.c_out}")
        if self.h_out <= 0 or self.w_out <= 0:
            raise bad("conv.kh/kw", (self.kh, self.kw), "a kernel no larger than the padded input")

    @property
    def h_out(self) -> int:
        return (self.h + 2 * self.pad - self.dilation * (self.kh - 1) - 1) // self.stride + 1

    @property
    def w_out(self) -> int:
        return (self.w + 2 * self.pad - self.dilation * (self.kw - 1) - 1) // self.stride + 1

    @property
    def reads_in_place(self) -> bool:
        """A 1x1, stride-1, unpadded convolution: its GEMM reads the image as it is; any other needs a
        column matrix (im2col) where the library lowers it to a GEMM."""
        return (self.kh, self.kw, self.stride, self.pad) == (1, 1, 1, 0)

    @property
    def is_depthwise(self) -> bool:
        return self.groups == self.c_in and self.groups > 1

    def gemm_view(self) -> tuple[int, int, int, int]:
        """im2col rule → (M, N, K, batch=groups)."""
        g = self.groups
        return (self.n_img * self.h_out * self.w_out, self.c_out // g,
                (self.c_in // g) * self.kh * self.kw, g)


def _clipped_ramp_sum(a: int, n: int, hi: int) -> int:
    """sum(clip(a + j, 0, hi) for j in range(n)), in closed form."""
    j0 = min(n, max(0, -a))  # terms before j0 are clipped to 0
    j1 = min(n, max(j0, hi - a))  # terms from j1 on are clipped to hi
    return (j1 - j0) * a + (j0 + j1 - 1) * (j1 - j0) // 2 + hi * (n - j1)


@dataclass(frozen=True)
class AttnGeom:
    """Scaled-dot-product attention geometry (grouped-query when kv_heads < heads)."""

    batch: int
    heads: int
    q_len: int
    kv_len: int
    head_dim: int
    kv_heads: int | None = None
    causal: bool = False
    block_density: float = 1.0  # fraction of (q-block, kv-block) tiles computed (block-sparse attention)

    def __post_init__(self) -> None:
        for f in ("batch", "heads", "q_len", "kv_len", "head_dim"):
            object.__setattr__(self, f, _pos_int(getattr(self, f), f"attention.{f}"))
        if self.kv_heads is not None:
            object.__setattr__(self, "kv_heads", _pos_int(self.kv_heads, "attention.kv_heads"))
            if self.heads % self.kv_heads:
                raise bad("attention.kv_heads", self.kv_heads, f"a divisor of heads={self.heads}")
        if not (0 < self.block_density <= 1):
            raise bad("attention.block_density", self.block_density, "a number in (0, 1]")

    @property
    def n_kv_heads(self) -> int:
        return self.kv_heads or self.heads

    @property
    def score_fraction(self) -> float:
        """Fraction of the q×kv score matrix computed (causal masking × block sparsity)."""
        frac = 1.0
        if self.causal:
            # causal, the queries the last q_len positions of the kv_len keys: query i sees
            # clip(kv_len - q_len + i + 1, 0, kv_len) keys (none where kv_len < q_len leaves it no key)
            frac = _clipped_ramp_sum(self.kv_len - self.q_len + 1, self.q_len, self.kv_len) / (self.q_len * self.kv_len)
        return frac * self.block_density


@dataclass(frozen=True)
class Op:
    """One operator of a trace, with its GEMM view and a Sparsity per operand."""

    kind: str
    m: int
    n: int
    k: int
    batch: int = 1
    dtype: str = "fp16"
    phase: str = "fwd"
    weight: Sparsity = field(default_factory=Dense)
    activation: Sparsity = field(default_factory=Dense)
    name: str = ""
    conv: ConvGeom | None = None
    attn: AttnGeom | None = None
    flops_per_elem: float = 0.0  # eltwise only
    n_inputs: int = 1  # eltwise only: operands read per output element
    out_numel: int = 0  # eltwise only: elements written where fewer than read (a pooling); 0: as many as read
    weight_is_param: bool = True  # False when the "weight" operand is another activation (bmm)
    meta: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise bad("op.kind", self.kind, ", ".join(KINDS))
        for f in ("m", "n", "k", "batch"):
            object.__setattr__(self, f, _pos_int(getattr(self, f), f"op.{f}"))  # plain ints from here on
        if self.dtype not in DTYPE_BYTES:
            raise bad("op.dtype", self.dtype, ", ".join(DTYPES))
        if self.phase not in PHASES:
            raise bad("op.phase", self.phase, ", ".join(PHASES))
        if self.out_numel and (self.kind != "eltwise" or not 0 < self.out_numel <= self.m):
            raise bad("op.out_numel", self.out_numel, "0, or for an eltwise op 1 ... op.m (a pooling's output)")
        if not isinstance(self.weight, Sparsity) or not isinstance(self.activation, Sparsity):
            raise bad("op.weight/activation", (self.weight, self.activation), "Sparsity objects")
        try:
            object.__setattr__(self, "weight", self.weight.bind(self.n, self.k))
        except ValueError as e:
            raise ValueError(f"weight.{e}") from None

    # --- constructors -------------------------------------------------------------------
    @classmethod
    def gemm(cls, m: int, n: int, k: int, *, batch: int = 1, dtype: str = "fp16",
             weight: Sparsity | str | dict | None = None, activation: Sparsity | dict | None = None,
             phase: str = "fwd", name: str = "", **kw: Any) -> Op:
        """y[M,N] = x[M,K] · W[N,K]ᵀ (times `batch` independent problems)."""
        return cls("gemm", m, n, k, batch, dtype, phase, parse_pattern(weight, "weight"),
                   parse_pattern(activation, "activation"), name or f"gemm_{m}x{n}x{k}", **kw)

    @classmethod
    def conv2d(cls, geom: ConvGeom, *, dtype: str = "fp16", weight: Sparsity | str | dict | None = None,
               activation: Sparsity | dict | None = None, phase: str = "fwd", name: str = "") -> Op:
        """Convolution lowered to GEMM by im2col (see ConvGeom.gemm_view)."""
        m, n, k, g = geom.gemm_view()
        return cls("conv2d", m, n, k, g, dtype, phase, parse_pattern(weight, "weight"),
                   parse_pattern(activation, "activation"), name or f"conv{geom.kh}x{geom.kw}", conv=geom)

    @classmethod
    def attention(cls, geom: AttnGeom, *, dtype: str = "fp16", phase: str = "fwd", name: str = "") -> Op:
        """Fused attention; GEMM view of the Q·Kᵀ product per (batch, head)."""
        return cls("attention", geom.q_len, geom.kv_len, geom.head_dim, geom.batch * geom.heads,
                   dtype, phase, Dense(), Dense(), name or "attention", attn=geom, weight_is_param=False)

    @classmethod
    def eltwise(cls, numel: int, *, dtype: str = "fp16", flops_per_elem: float = 1.0, n_inputs: int = 1,
                phase: str = "fwd", name: str = "", activation: Sparsity | dict | None = None,
                numel_out: int | None = None) -> Op:
        """Element-wise / normalisation / gather op over `numel` elements of each input; it writes as many,
        or `numel_out` (a pooling: fewer, at most `numel`)."""
        numel = _pos_int(numel, "op.numel")
        out = 0
        if numel_out is not None and numel_out != numel:
            out = _pos_int(numel_out, "op.numel_out")
            if out > numel:
                raise bad("op.numel_out", numel_out, f"at most op.numel ({numel}): a pooling writes fewer elements")
        return cls("eltwise", numel, 1, 1, 1, dtype, phase, Dense(),
                   parse_pattern(activation, "activation"), name or "eltwise",
                   flops_per_elem=float(flops_per_elem), n_inputs=_pos_int(n_inputs, "op.n_inputs"),
                   weight_is_param=False, out_numel=out)

    # --- derived quantities -------------------------------------------------------------
    @property
    def dtype_bytes(self) -> float:
        return DTYPE_BYTES[self.dtype]

    @property
    def numel_in(self) -> int:
        """Elements of the activation input the op reads (the first input of an element-wise op; Q of an
        attention; the image of a convolution, not its im2col matrix)."""
        if self.kind == "eltwise":
            return self.m
        if self.kind == "attention":
            a = self.attn
            return a.batch * a.heads * a.q_len * a.head_dim
        if self.conv is not None:
            g = self.conv
            return g.n_img * g.c_in * g.h * g.w
        return self.batch * self.m * self.k

    @property
    def numel_out(self) -> int:
        if self.kind == "eltwise":
            return self.out_numel or self.m
        if self.kind == "attention":
            a = self.attn
            return a.batch * a.heads * a.q_len * a.head_dim
        return self.batch * self.m * self.n

    @property
    def flops(self) -> float:
        """Dense-equivalent FLOPs (a multiply-add counts 2)."""
        if self.kind == "eltwise":
            return self.flops_per_elem * self.m
        if self.kind == "attention":
            a = self.attn
            # S = Q·Kᵀ and O = P·V: 2 GEMMs of 2·q·kv·d each, per (batch, head)
            return 4.0 * a.batch * a.heads * a.q_len * a.kv_len * a.head_dim
        return 2.0 * self.batch * self.m * self.n * self.k

    def compacted(self) -> Op:
        """The op a channel-pruned weight leaves (Channel): whole rows (axis 0, output channels) or columns
        (axis 1, input channels) of W are gone, so the kernel runs a smaller dense problem. Any other op
        is returned as it is. A grouped convolution keeps its shape (its groups tie c_in to c_out)."""
        w = self.weight
        if not isinstance(w, Channel) or self.kind not in ("gemm", "conv2d"):
            return self
        if self.kind == "conv2d":
            g = self.conv
            if g.groups != 1:
                return self
            field_ = "c_out" if w.axis == 0 else "c_in"
            kept = max(1, round(getattr(g, field_) * w.density))
            return Op.conv2d(replace(g, **{field_: kept}), dtype=self.dtype, activation=self.activation,
                             phase=self.phase, name=self.name)
        field_ = "n" if w.axis == 0 else "k"
        return replace(self, **{field_: max(1, round(getattr(self, field_) * w.density)), "weight": Dense()})

    @property
    def useful_flops(self) -> float:
        """FLOPs on nonzero operands only (what a perfect zero-skipping machine would do)."""
        if self.kind == "attention":
            return self.flops * self.attn.score_fraction
        if self.kind == "eltwise":
            return self.flops
        return self.flops * self.weight.density * self.activation.density

    @property
    def bytes_dense(self) -> dict[str, float]:
        """Dense operand sizes in bytes: each input read once, the output written once."""
        b = self.dtype_bytes
        if self.kind == "eltwise":
            return {"x": self.m * b * self.n_inputs, "w": 0.0, "y": self.numel_out * b}
        if self.kind == "attention":
            a = self.attn
            q = a.batch * a.heads * a.q_len * a.head_dim * b
            kv = 2 * a.batch * a.n_kv_heads * a.kv_len * a.head_dim * b
            return {"x": q, "w": kv, "y": q}
        return {"x": self.batch * self.m * self.k * b, "w": self.batch * self.n * self.k * b,
                "y": self.batch * self.m * self.n * b}

    def replace(self, **changes: Any) -> Op:
        return replace(self, **changes)

    def __hash__(self) -> int:
        """Hash of the compared fields, computed once (ops key the mapper and model memos)."""
        h = self.__dict__.get("_hash")
        if h is None:
            h = hash((self.kind, self.m, self.n, self.k, self.batch, self.dtype, self.phase, self.weight,
                      self.activation, self.name, self.conv, self.attn, self.flops_per_elem, self.n_inputs,
                      self.out_numel, self.weight_is_param))
            object.__setattr__(self, "_hash", h)
        return h

    def __getstate__(self) -> dict[str, Any]:
        """Pickle without the cached hash: string hashes differ between processes."""
        state = dict(self.__dict__)
        state.pop("_hash", None)
        return state

    def shape_str(self) -> str:
        if self.kind == "eltwise":
            return f"{self.m}"
        s = f"{self.m}x{self.n}x{self.k}"
        return f"{self.batch}*{s}" if self.batch > 1 else s

    # --- serialisation ------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"kind": self.kind, "name": self.name, "m": self.m, "n": self.n, "k": self.k,
                             "batch": self.batch, "dtype": self.dtype, "phase": self.phase}
        if not self.weight.is_dense or self.weight.pattern != "dense":
            d["weight"] = self.weight.to_dict()
        if self.activation.pattern != "dense":
            d["activation"] = self.activation.to_dict()
        if self.conv is not None:
            d["conv"] = self.conv.__dict__.copy()
        if self.attn is not None:
            d["attention"] = self.attn.__dict__.copy()
        if self.kind == "eltwise":
            d["flops_per_elem"] = self.flops_per_elem
            d["n_inputs"] = self.n_inputs
            if self.out_numel:
                d["numel_out"] = self.out_numel
        if not self.weight_is_param and self.kind == "gemm":
            d["weight_is_param"] = False
        if self.meta:
            d["meta"] = self.meta
        return d

    @classmethod
    def from_dict(cls, d: dict[str, Any], where: str = "op") -> Op:
        """Inverse of to_dict; also accepts the short `predict` form {kind, m, n, k, dtype}."""
        if not isinstance(d, dict):
            raise bad(where, d, "an object with kind, m, n, k")
        kind = d.get("kind", "gemm")
        extra = {"name": d.get("name", ""), "dtype": d.get("dtype", "fp16"), "phase": d.get("phase", "fwd")}
        geometry = {"conv2d": ("conv", ConvGeom), "attention": ("attention", AttnGeom)}
        if kind in geometry:  # these need their geometry object; name it and its fields when it is wrong
            key, geom = geometry[kind]
            names = [f.name for f in dataclasses.fields(geom)]
            fields = ", ".join(names)
            if not isinstance(d.get(key), dict):
                raise bad(f"{where}.{key}", d.get(key), f"an object with {fields} (required for kind {kind})")
            unknown = sorted(set(d[key]) - set(names))
            missing = [f.name for f in dataclasses.fields(geom) if f.name not in d[key]
                       and f.default is dataclasses.MISSING]
            if unknown or missing:
                raise bad(f"{where}.{key}", d[key], f"an object with {fields}"
                          + (f"; missing: {', '.join(missing)}" if missing else "")
                          + (f"; unknown: {', '.join(unknown)}" if unknown else ""))
        try:
            if kind == "conv2d":
                op = cls.conv2d(ConvGeom(**d["conv"]), weight=d.get("weight"),
                                activation=d.get("activation"), **extra)
            elif kind == "attention":
                op = cls.attention(AttnGeom(**d["attention"]), **extra)
            elif kind == "eltwise":
                op = cls.eltwise(d.get("numel", d.get("m")), flops_per_elem=d.get("flops_per_elem", 1.0),
                                 n_inputs=d.get("n_inputs", 1), activation=d.get("activation"),
                                 numel_out=d.get("numel_out"), **extra)
            elif kind == "gemm":
                for f in ("m", "n", "k"):
                    if f not in d:
                        raise bad(f"{where}.{f}", None, "a positive integer (required)")
                op = cls.gemm(d["m"], d["n"], d["k"], batch=d.get("batch", 1), weight=d.get("weight"),
                              activation=d.get("activation"),
                              weight_is_param=d.get("weight_is_param", True), **extra)
            else:
                raise bad(f"{where}.kind", kind, ", ".join(KINDS))
        except TypeError as e:
            raise bad(where, d, f"valid fields ({e})") from None
        if d.get("meta"):
            op.meta.update(d["meta"])
        return op


@dataclass(frozen=True)
class Trace:
    """An ordered list of ops with provenance (model, pruning recipe, seed…)."""

    name: str
    ops: tuple[Op, ...]
    provenance: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def __post_init__(self) -> None:
        object.__setattr__(self, "ops", tuple(self.ops))
        if not self.ops:
            raise bad("trace.ops", [], "at least one op")

    def __iter__(self) -> Iterator[Op]:
        return iter(self.ops)

    def __len__(self) -> int:
        return len(self.ops)

    @property
    def flops(self) -> float:
        return math.fsum(op.flops for op in self.ops)

    def fresh_input_bytes(self) -> tuple[float, ...]:
        """Per op, the bytes of its input that the op just before it wrote (0 where it did not): run back
        to back, op i reads op i-1's output where that output has the size and dtype of op i's input (the
        chain of a forward pass; a branch that reads an older op's output, e.g. a residual add's skip, is
        not counted)."""
        out = [0.0]
        for prev, op in itertools.pairwise(self.ops):
            chained = prev.dtype == op.dtype and prev.numel_out == op.numel_in
            out.append(float(prev.numel_out * prev.dtype_bytes) if chained else 0.0)
        return tuple(out)

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "provenance": self.provenance, "ops": [op.to_dict() for op in self.ops]}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> Trace:
        if not isinstance(d, dict) or not isinstance(d.get("ops"), list):
            raise bad("trace", type(d).__name__, "an object with a list 'ops'")
        ops = [Op.from_dict(o, where=f"ops[{i}]") for i, o in enumerate(d["ops"])]
        return cls(d.get("name", "trace"), tuple(ops), d.get("provenance", {}))

    def save(self, path: str | Path) -> Path:
        """Write JSON (.json) or Parquet (.parquet, one row per op)."""
        path = Path(path)
        if path.suffix == ".parquet":
            import pandas as pd

            rows = [{"op": json.dumps(o.to_dict())} for o in self.ops]
            df = pd.DataFrame(rows)
            df.attrs = {}
            meta = json.dumps({"name": self.name, "provenance": self.provenance})
            import pyarrow as pa
            import pyarrow.parquet as pq

            table = pa.Table.from_pandas(df, preserve_index=False)
            table = table.replace_schema_metadata({**(table.schema.metadata or {}), b"simsparse": meta.encode()})
            pq.write_table(table, path)
        else:
            path.write_text(json.dumps(self.to_dict(), indent=1))
        return path

    @staticmethod
    def is_trace_file(path: str | Path) -> bool:
        """Is `path` a saved trace (.parquet, or .json holding an `ops` list), not a model's config.json?
        A .json that is missing or not valid JSON counts as a trace: Trace.load then says what is wrong."""
        path = Path(path)
        if path.suffix == ".parquet":
            return True
        if path.suffix != ".json":
            return False
        try:
            data = json.loads(path.read_text())
        except (OSError, ValueError):
            return True
        return not isinstance(data, dict) or "ops" in data

    @classmethod
    def load(cls, path: str | Path) -> Trace:
        path = Path(path)
        if not path.exists():
            raise bad("trace file", str(path), "an existing .json or .parquet file")
        if path.suffix == ".parquet":
            import pyarrow.parquet as pq

            table = pq.read_table(path)
            meta = json.loads(table.schema.metadata[b"simsparse"])
            ops = tuple(Op.from_dict(json.loads(s), where=f"ops[{i}]")
                        for i, s in enumerate(table.column("op").to_pylist()))
            return cls(meta["name"], ops, meta.get("provenance", {}))
        try:
            data = json.loads(path.read_text())
        except json.JSONDecodeError as e:
            raise bad("trace file", str(path), f"valid JSON ({e.msg} at line {e.lineno})") from None
        return cls.from_dict(data)
