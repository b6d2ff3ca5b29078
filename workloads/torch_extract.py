"""Trace a torch.nn.Module into a Trace by running it once (torch is imported lazily).

`from_module(model, example_inputs)` runs a real forward pass under a TorchFunctionMode that
sees every torch function call, while forward hooks keep the path of the module being run.
Each recognised call becomes an Op named by that module path:

* F.linear, matmul / bmm / mm / addmm / baddbmm (weight operand a parameter or another
  activation), F.conv1d / F.conv2d (groups, depthwise, stride, padding, dilation: im2col view);
* F.scaled_dot_product_attention (GQA, causal) and nn.MultiheadAttention;
* embedding gathers, norms (layer / rms / batch / group), activations, softmax, pooling and
  element-wise arithmetic on activations (eltwise ops with FLOPs per element from ELTWISE_FLOPS).

Weight sparsity comes from the weights themselves: the `weight_mask` buffer that
`torch.nn.utils.prune` leaves on a module, else a semi-structured sparse weight
(`to_sparse_semi_structured`), else the zeros of the tensor; workloads.detect names the
pattern and attaches per-row / per-tile nonzero counts. Arithmetic that involves only
parameters and buffers (the pruning re-parametrisation orig·mask, weight.T …) is not an op.

An activation policy (workloads.activations) may look at — and change — the activation
operand of every weight GEMM / conv on the way through; that is how activation sparsity is
measured from real forward passes.
"""

from __future__ import annotations

import re
import weakref
from collections import Counter
from collections.abc import Callable
from typing import Any

import numpy as np

from simsparse.core.errors import bad
from simsparse.core.ops import AttnGeom, ConvGeom, Op, Trace
from simsparse.core.sparsity import Dense, Sparsity, Unstructured
from workloads.detect import DEFAULT_TILE, analyse, attach_stats

# FLOPs per output element of element-wise ops (the trace's eltwise convention; hf.py and the
# CNN tables use the same numbers so that traced and table-built models agree)
ELTWISE_FLOPS: dict[str, float] = {
    "relu": 1, "relu6": 2, "hardtanh": 2, "leaky_relu": 2, "gelu": 8, "silu": 4, "sigmoid": 4,
    "tanh": 4, "hardswish": 4, "hardsigmoid": 3, "softmax": 5, "log_softmax": 5,
    "layer_norm": 4, "rms_norm": 4, "group_norm": 4, "batch_norm": 2, "embedding": 0,
    "add": 1, "sub": 1, "mul": 1, "div": 1, "pool": 1,
}

TORCH_DTYPES = {"float32": "fp32", "float64": "fp32", "float16": "fp16", "bfloat16": "bf16",
                "int8": "int8", "uint8": "int8", "float8_e4m3fn": "fp8", "float8_e5m2": "fp8"}

# op roles from module-path names (HF / torchvision / our zoo naming)
_ROLES = (
    ("router", r"(^|\.)(gate|router)$"),
    ("attn_in", r"(q_proj|k_proj|v_proj|query|key|value|qkv|qkv_proj|in_proj|c_attn|wqkv|query_key_value)$"),
    ("attn_out", r"(o_proj|out_proj|attention\.output\.dense|self_attention\.dense|attn\.c_proj)$"),
    ("mlp_in", r"(gate_proj|up_proj|fc1|w1|w3|intermediate\.dense|c_fc|dense_h_to_4h|gate_up_proj)$"),
    ("mlp_out", r"(down_proj|fc2|w2|(?<!attention\.)output\.dense|dense_4h_to_h|mlp\.c_proj)$"),
    ("head", r"(^|\.)(lm_head|classifier|head|fc|pooler\.dense)$"),
)


def role_of(name: str) -> str:
    """Role of a weight op from its module path: attn_in, attn_out, mlp_in, mlp_out, head,
    router, or "" (unknown; convs get "conv" from their kind)."""
    low = name.lower()
    for role, pat in _ROLES:
        if re.search(pat, low):
            return role
    return ""


def torch_dtype_name(dt: Any) -> str:
    return TORCH_DTYPES.get(str(dt).replace("torch.", ""), "fp32")


def _arg(args: tuple, kwargs: dict, i: int, name: str, default: Any = None) -> Any:
    if len(args) > i:
        return args[i]
    return kwargs.get(name, default)


def _pair(v: Any) -> tuple[int, int]:
    if isinstance(v, (tuple, list)):
        return (int(v[0]), int(v[-1]))
    return (int(v), int(v))


def _bind_or_downgrade(sp: Sparsity, rows: int, cols: int) -> Sparsity:
    """The detected pattern if an op's (rows, cols) can hold it, else unstructured at its density."""
    try:
        sp.bind(rows, cols)
        return sp
    except ValueError:
        return attach_stats(Unstructured(sp.density), sp.stats)


class Recorder:
    """State of one traced forward pass: module-path stack, ops so far, tensor provenance."""

    def __init__(self, model: Any, dtype: str | None, policy: Any, tile_shape: tuple[int, int]):
        import torch

        self.torch = torch
        self.dtype = dtype
        self.policy = policy
        self.tile_shape = tile_shape
        self.ops: list[Op] = []
        self.stack: list[tuple[str, Any, Counter]] = []
        self.used: Counter = Counter()
        # parameters, buffers and tensors computed from them only (weight.T, orig·mask …)
        self._param: dict[int, Any] = {}
        for t in list(model.parameters()) + list(model.buffers()):
            self._param[id(t)] = weakref.ref(t)
        self._producers: dict[int, tuple[Any, frozenset[int]]] = {}  # tensor → gemm ops it came from
        self._relu_out: dict[int, Any] = {}
        self._top_frame: Counter = Counter()  # op counters for calls outside any module

    # --- tensor provenance ------------------------------------------------------------
    def _lookup(self, table: dict[int, Any], t: Any) -> Any:
        entry = table.get(id(t))
        if entry is None:
            return None
        ref = entry[0] if isinstance(entry, tuple) else entry
        return entry if ref() is t else None

    def is_param(self, t: Any) -> bool:
        return self._lookup(self._param, t) is not None

    def is_activation(self, t: Any) -> bool:
        return isinstance(t, self.torch.Tensor) and not self.is_param(t)

    def mark_param(self, out: Any) -> None:
        for t in _tensors(out, self.torch):
            self._param[id(t)] = weakref.ref(t)

    def producers(self, t: Any) -> frozenset[int]:
        e = self._lookup(self._producers, t)
        return e[1] if e else frozenset()

    def set_producers(self, out: Any, ops: frozenset[int]) -> None:
        if ops and isinstance(out, self.torch.Tensor):
            self._producers[id(out)] = (weakref.ref(out), ops)

    def produced_by_relu(self, t: Any) -> bool:
        e = self._relu_out.get(id(t))
        return e is not None and e() is t

    # --- naming -----------------------------------------------------------------------
    def current(self) -> tuple[str, Any]:
        if not self.stack:
            return "", None
        path, mod, _ = self.stack[-1]
        return path, mod

    def name_for(self, label: str) -> str:
        """Module path for the first op of a leaf module, else path.label[_i]; unique in the trace."""
        if self.stack:
            path, mod, frame = self.stack[-1]
        else:
            path, mod, frame = "", None, self._top_frame
        leaf = mod is not None and next(iter(mod.children()), None) is None
        i = frame[label]
        frame[label] += 1
        frame["__ops__"] += 1
        if leaf and frame["__ops__"] == 1 and path:
            name = path
        else:
            name = f"{path}.{label}" if path else label
            if i:
                name += f"_{i}"
        if self.used[name]:
            name_u = f"{name}#{self.used[name]}"
            self.used[name] += 1
            return name_u
        self.used[name] += 1
        return name

    # --- ops --------------------------------------------------------------------------
    def op_dtype(self, t: Any) -> str:
        return self.dtype or torch_dtype_name(t.dtype)

    def add(self, op: Op, out: Any = None, gemm: bool = False, **meta: Any) -> int:
        path, mod = self.current()
        op.meta.update({k: v for k, v in meta.items() if v is not None})
        if mod is not None:
            op.meta.setdefault("module", type(mod).__name__)
        self.ops.append(op)
        idx = len(self.ops) - 1
        if gemm and out is not None:
            self.set_producers(out, frozenset({idx}))
        return idx

    def weight_sparsity(self, weight: Any, rows_per_group: int | None = None) -> tuple[Sparsity, dict]:
        """Pattern of a weight from the module's prune mask, a semi-structured tensor or its zeros."""
        _, mod = self.current()
        torch = self.torch
        mask_t, source = None, "zeros"
        wmask = getattr(mod, "weight_mask", None) if mod is not None else None
        if isinstance(wmask, torch.Tensor) and wmask.shape == weight.shape \
                and getattr(mod, "weight", None) is weight:
            mask_t, source = wmask, "weight_mask"
        elif type(weight).__name__.startswith("SparseSemiStructured"):
            mask_t, source = weight.to_dense() != 0, "semi_structured"
        if mask_t is None:
            mask_t = weight.detach() != 0
        mask = mask_t.detach().to("cpu").numpy() != 0
        sp, meta = analyse(mask.reshape(mask.shape[0], -1), rows_per_group, self.tile_shape)
        if not sp.is_dense:
            meta["weight_source"] = source
        return sp, meta

    def activation(self, name: str, role: str, kind: str, x: Any) -> tuple[Any, Sparsity, dict]:
        """Let the activation policy see (and maybe sparsify) the activation operand x."""
        if self.policy is None:
            return x, Dense(), {}
        x2, sp, meta = self.policy.on_input(self, name, role, kind, x)
        return x2, sp if sp is not None else Dense(), meta or {}


def _tensors(obj: Any, torch: Any) -> list[Any]:
    if isinstance(obj, torch.Tensor):
        return [obj]
    if isinstance(obj, (list, tuple)):
        return [t for o in obj for t in _tensors(o, torch)]
    if isinstance(obj, dict):
        return [t for o in obj.values() for t in _tensors(o, torch)]
    return []


# --- handlers: (recorder, func, args, kwargs) → output -----------------------------------------
def _call(func: Callable, args: tuple, kwargs: dict, first: Any = None) -> Any:
    if first is not None:
        if args:
            args = (first,) + tuple(args[1:])
        else:
            kwargs = {**kwargs, "input": first}
    return func(*args, **kwargs)


def _h_linear(rec: Recorder, func, args, kwargs):
    x = _arg(args, kwargs, 0, "input")
    w = _arg(args, kwargs, 1, "weight")
    if not rec.is_activation(x) or x.numel() == 0:  # no rows (an expert no token went to): no work
        return None
    b = _arg(args, kwargs, 2, "bias")
    k_dim, n_dim = int(w.shape[-1]), int(w.shape[0])
    m_dim = x.numel() // k_dim
    name = rec.name_for("linear")
    role = role_of(name)
    x2, act, ameta = rec.activation(name, role, "linear", x)
    out = _call(func, args, kwargs, first=x2 if x2 is not x else None)
    sp, wmeta = rec.weight_sparsity(w)
    moe = _moe_router_meta(rec, out)
    if moe:
        role = "router"
    expert = re.search(r"(?:^|\.)experts\.(\d+)(?:\.|$)", name)
    op = Op.gemm(m_dim, n_dim, k_dim, dtype=rec.op_dtype(x), weight=sp, activation=act, name=name)
    rec.add(op, out, gemm=True, role=role or None, torch_dtype=str(x.dtype).replace("torch.", ""),
            bias=b is not None, expert=int(expert.group(1)) if expert else None, **wmeta, **ameta, **moe)
    return out


def _moe_router_meta(rec: Recorder, logits: Any) -> dict:
    """Tokens per expert when the running Linear is the `gate` of a MoE block (HF Mixtral style:
    the block has `gate`, `num_experts` and `top_k` / `num_experts_per_tok`)."""
    if len(rec.stack) < 2:
        return {}
    _, mod, _ = rec.stack[-1]
    _, parent, _ = rec.stack[-2]
    if getattr(parent, "gate", None) is not mod:
        return {}
    top_k = getattr(parent, "top_k", None) or getattr(parent, "num_experts_per_tok", None)
    if not top_k:
        return {}
    n_exp = int(logits.shape[-1])
    idx = logits.reshape(-1, n_exp).topk(int(top_k), dim=-1).indices.flatten()
    counts = rec.torch.bincount(idx, minlength=n_exp).tolist()
    return {"experts": n_exp, "top_k": int(top_k), "tokens_per_expert": [int(c) for c in counts]}


def _conv_geom(x, w, out, stride, padding, dilation, groups, nd: int) -> ConvGeom | None:
    if nd != 2 or (isinstance(padding, str) and padding not in ("valid", "same")):
        return None
    n_img = int(x.shape[0]) if x.dim() == 4 else 1
    c_in, h, wd = (int(s) for s in x.shape[-3:])
    kh, kw = int(w.shape[2]), int(w.shape[3])
    sh, sw = _pair(stride)
    dh, dw = _pair(dilation)
    if padding == "valid":
        ph = pw = 0
    elif padding == "same":
        ph, pw = dh * (kh - 1) // 2, dw * (kw - 1) // 2
    else:
        ph, pw = _pair(padding)
    if sh != sw or dh != dw or ph != pw:
        return None
    try:
        g = ConvGeom(n_img, c_in, h, wd, int(w.shape[0]), kh, kw, sh, ph, dh, int(groups))
    except ValueError:
        return None
    if (g.h_out, g.w_out) != tuple(int(s) for s in out.shape[-2:]):
        return None
    return g


def _h_conv(nd: int):
    def handler(rec: Recorder, func, args, kwargs):
        x = _arg(args, kwargs, 0, "input")
        w = _arg(args, kwargs, 1, "weight")
        if not rec.is_activation(x):
            return None
        stride = _arg(args, kwargs, 3, "stride", 1)
        padding = _arg(args, kwargs, 4, "padding", 0)
        dilation = _arg(args, kwargs, 5, "dilation", 1)
        groups = int(_arg(args, kwargs, 6, "groups", 1))
        name = rec.name_for("conv")
        x2, act, ameta = rec.activation(name, "conv", "conv", x)
        out = _call(func, args, kwargs, first=x2 if x2 is not x else None)
        c_out = int(w.shape[0])
        sp, wmeta = rec.weight_sparsity(w, rows_per_group=c_out // groups)
        k_dim = int(np.prod(w.shape[1:]))
        n_dim = c_out // groups
        sp = _bind_or_downgrade(sp, n_dim, k_dim)
        dt = rec.op_dtype(x)
        geom = _conv_geom(x, w, out, stride, padding, dilation, groups, nd)
        if geom is not None:
            op = Op.conv2d(geom, dtype=dt, weight=sp, activation=act, name=name)
        else:  # conv1d or asymmetric geometry: the same im2col GEMM view, without ConvGeom
            n_img = int(x.shape[0]) if x.dim() == nd + 2 else 1
            m_dim = n_img * int(np.prod(out.shape[-nd:]))
            op = Op.gemm(m_dim, n_dim, k_dim, batch=groups, dtype=dt, weight=sp, activation=act, name=name)
            op.meta["conv"] = {"nd": nd, "in_shape": list(x.shape), "out_shape": list(out.shape),
                               "weight_shape": list(w.shape), "groups": groups}
        depthwise = groups > 1 and groups == int(x.shape[-nd - 1])
        rec.add(op, out, gemm=True, role="conv", torch_dtype=str(x.dtype).replace("torch.", ""),
                bias=_arg(args, kwargs, 2, "bias") is not None, depthwise=depthwise or None,
                **wmeta, **ameta)
        return out
    return handler


def _h_matmul(pos: tuple[int, int]):
    def handler(rec: Recorder, func, args, kwargs):
        a = _arg(args, kwargs, pos[0], "input")
        b = _arg(args, kwargs, pos[1], "other" if pos == (0, 1) else "mat2")
        if not isinstance(a, rec.torch.Tensor) or not isinstance(b, rec.torch.Tensor):
            return None
        a_act, b_act = rec.is_activation(a), rec.is_activation(b)
        if not (a_act or b_act):
            return None
        out = func(*args, **kwargs)
        m_dim = int(a.shape[-2]) if a.dim() >= 2 else 1
        k_dim = int(a.shape[-1])
        n_dim = int(b.shape[-1]) if b.dim() >= 2 else 1
        batch = max(1, out.numel() // max(m_dim * n_dim, 1))
        name = rec.name_for("matmul")
        dt = rec.op_dtype(a if a_act else b)
        if a_act and not b_act and b.dim() == 2:  # x · Wᵀ with a parameter W = bᵀ shared by all rows
            sp, wmeta = rec.weight_sparsity(b.T)
            op = Op.gemm(m_dim * batch, n_dim, k_dim, dtype=dt, weight=sp, name=name)
        elif b_act and not a_act and a.dim() == 2:  # W · x  ≡  (xᵀ · Wᵀ)ᵀ: M ↔ N
            sp, wmeta = rec.weight_sparsity(a)
            op = Op.gemm(n_dim * batch, m_dim, k_dim, dtype=dt, weight=sp, name=name)
        else:
            wmeta = {}
            op = Op.gemm(m_dim, n_dim, k_dim, batch=batch, dtype=dt, weight_is_param=False, name=name)
        rec.add(op, out, gemm=op.weight_is_param, role=role_of(name) or None, **wmeta)
        return out
    return handler


def _h_sdpa(rec: Recorder, func, args, kwargs):
    q, k = _arg(args, kwargs, 0, "query"), _arg(args, kwargs, 1, "key")
    if not rec.is_activation(q):
        return None
    out = func(*args, **kwargs)
    mask = _arg(args, kwargs, 3, "attn_mask")
    causal = bool(_arg(args, kwargs, 5, "is_causal", False))
    heads = int(q.shape[-3]) if q.dim() >= 3 else 1
    kv_heads = int(k.shape[-3]) if k.dim() >= 3 else 1
    batch = int(np.prod(q.shape[:-3])) if q.dim() >= 4 else 1
    geom = AttnGeom(batch, heads, int(q.shape[-2]), int(k.shape[-2]), int(q.shape[-1]),
                    kv_heads=kv_heads if kv_heads != heads and heads % kv_heads == 0 else None,
                    causal=causal)
    name = rec.name_for("sdpa")
    op = Op.attention(geom, dtype=rec.op_dtype(q), name=name)
    mask_density = None
    if isinstance(mask, rec.torch.Tensor):
        allowed = mask if mask.dtype == rec.torch.bool else mask > -1e30
        mask_density = float(allowed.float().mean())
    rec.add(op, out, role="attention", attn_mask_density=mask_density)
    return out


def _h_mha(rec: Recorder, func, args, kwargs):
    """F.multi_head_attention_forward: q/k/v projections, attention, output projection."""
    query, key = _arg(args, kwargs, 0, "query"), _arg(args, kwargs, 1, "key")
    if not rec.is_activation(query):
        return None
    out = func(*args, **kwargs)
    heads = int(_arg(args, kwargs, 4, "num_heads"))
    in_w = _arg(args, kwargs, 5, "in_proj_weight")
    out_w = _arg(args, kwargs, 11, "out_proj_weight")
    separate = bool(kwargs.get("use_separate_proj_weight", False))
    batch_first_shape = query.shape  # MHA's functional form is (L, N, E) or (L, E)
    q_len = int(batch_first_shape[0])
    n = int(batch_first_shape[1]) if query.dim() == 3 else 1
    kv_len = int(key.shape[0])
    e = int(query.shape[-1])
    dt = rec.op_dtype(query)
    ws = ([kwargs.get(f"{p}_proj_weight") for p in "qkv"] if separate or in_w is None
          else [in_w[i * e:(i + 1) * e] for i in range(3)])
    for label, w, rows in zip(("q_proj", "k_proj", "v_proj"), ws, (q_len, kv_len, kv_len), strict=True):
        sp, wmeta = rec.weight_sparsity(w)
        op = Op.gemm(n * rows, int(w.shape[0]), int(w.shape[1]), dtype=dt, weight=sp, name=rec.name_for(label))
        rec.add(op, role="attn_in", **wmeta)
    geom = AttnGeom(n, heads, q_len, kv_len, e // heads,
                    causal=bool(_arg(args, kwargs, 16, "is_causal", False)))
    rec.add(Op.attention(geom, dtype=dt, name=rec.name_for("attention")), role="attention")
    sp, wmeta = rec.weight_sparsity(out_w)
    op = Op.gemm(n * q_len, int(out_w.shape[0]), int(out_w.shape[1]), dtype=dt, weight=sp,
                 name=rec.name_for("out_proj"))
    rec.add(op, role="attn_out", **wmeta)
    return out


def _h_embedding(rec: Recorder, func, args, kwargs):
    w = _arg(args, kwargs, 1, "weight")
    out = func(*args, **kwargs)
    if not isinstance(out, rec.torch.Tensor) or out.numel() == 0:
        return out
    op = Op.eltwise(out.numel(), dtype=rec.op_dtype(out), flops_per_elem=ELTWISE_FLOPS["embedding"],
                    name=rec.name_for("embedding"))
    rec.add(op, op_type="embedding", vocab=int(w.shape[0]), dim=int(w.shape[1]), role="embedding")
    return out


_RELU_LIKE = ("relu", "relu6", "hardtanh")
_PRODUCER_PASSTHROUGH = ("relu", "relu6", "hardtanh", "gelu", "silu", "sigmoid", "tanh", "hardswish",
                         "leaky_relu", "mul", "dropout")


def _h_eltwise(label: str, flops_key: str | None = None, pool: bool = False):
    def handler(rec: Recorder, func, args, kwargs):
        ins = [t for t in _tensors(list(args) + list(kwargs.values()), rec.torch)]
        acts = [t for t in ins if rec.is_activation(t)]
        if not acts:
            return None
        out = func(*args, **kwargs)
        if not isinstance(out, rec.torch.Tensor) or not out.is_floating_point() or out.numel() == 0:
            return out
        x = acts[0]
        if pool:
            numel = x.numel()
            n_in = 1
        else:
            numel = out.numel()
            n_in = max(1, sum(1 for t in ins if t.numel() == numel))
        op = Op.eltwise(numel, dtype=rec.op_dtype(out), flops_per_elem=ELTWISE_FLOPS[flops_key or label],
                        n_inputs=n_in, name=rec.name_for(label), numel_out=out.numel() if pool else None)
        rec.add(op, op_type=label)
        if label in _PRODUCER_PASSTHROUGH:
            prods = frozenset().union(*(rec.producers(t) for t in acts))
            rec.set_producers(out, prods)
        if label in _RELU_LIKE and _clamps_at_zero(label, args, kwargs):
            rec._relu_out[id(out)] = weakref.ref(out)
            direct = rec.producers(x) if len(acts) == 1 else frozenset()
            if direct:
                density = float((out != 0).float().mean())
                for i in direct:  # bwd: dY of the producing GEMM is zero where the ReLU was
                    rec.ops[i].meta["grad_output_density"] = density
        return out
    return handler


def _clamps_at_zero(label: str, args: tuple, kwargs: dict) -> bool:
    if label != "hardtanh":
        return True
    return float(_arg(args, kwargs, 1, "min_val", -1.0)) >= 0.0


def _handlers() -> dict[Any, Callable]:
    import torch
    import torch.nn.functional as F

    T = torch.Tensor
    h: dict[Any, Callable] = {}

    def put(objs, handler):
        for o in objs:
            if o is not None:
                h[o] = handler

    g = getattr
    put([F.linear], _h_linear)
    put([F.conv2d, torch.conv2d], _h_conv(2))
    put([F.conv1d, torch.conv1d], _h_conv(1))
    put([torch.matmul, T.matmul, T.__matmul__, torch.bmm, T.bmm, torch.mm, T.mm], _h_matmul((0, 1)))
    put([torch.addmm, T.addmm, torch.baddbmm, T.baddbmm], _h_matmul((1, 2)))
    put([F.scaled_dot_product_attention], _h_sdpa)
    put([F.multi_head_attention_forward], _h_mha)
    put([F.embedding], _h_embedding)
    for label, objs in {
        "relu": [F.relu, F.relu_, torch.relu, torch.relu_, T.relu, T.relu_],
        "relu6": [F.relu6], "hardtanh": [F.hardtanh, F.hardtanh_],
        "leaky_relu": [F.leaky_relu], "gelu": [F.gelu], "silu": [F.silu],
        "sigmoid": [torch.sigmoid, T.sigmoid, F.sigmoid], "tanh": [torch.tanh, T.tanh, F.tanh],
        "hardswish": [F.hardswish], "hardsigmoid": [F.hardsigmoid],
        "softmax": [F.softmax, torch.softmax, T.softmax], "log_softmax": [F.log_softmax, T.log_softmax],
        "layer_norm": [F.layer_norm], "rms_norm": [g(F, "rms_norm", None)],
        "group_norm": [F.group_norm], "batch_norm": [F.batch_norm],
        "add": [torch.add, T.add, T.add_, T.__add__, T.__radd__, T.__iadd__],
        "sub": [torch.sub, T.sub, T.sub_, T.__sub__, T.__rsub__, T.__isub__],
        "mul": [torch.mul, T.mul, T.mul_, T.__mul__, T.__rmul__, T.__imul__],
        "div": [torch.div, T.div, T.div_, T.__truediv__, T.__rtruediv__, T.__itruediv__],
    }.items():
        put(objs, _h_eltwise(label))
    put([F.adaptive_avg_pool2d, F.avg_pool2d, F.max_pool2d, F.adaptive_max_pool2d,
         g(F, "max_pool2d_with_indices", None), torch.mean, T.mean], _h_eltwise("pool", pool=True))
    return h


def _make_mode(rec: Recorder, handlers: dict[Any, Callable]):
    from torch.overrides import TorchFunctionMode

    class _TraceMode(TorchFunctionMode):
        def __torch_function__(self, func, types, args=(), kwargs=None):
            kwargs = kwargs or {}
            handler = handlers.get(func)
            if handler is not None:
                out = handler(rec, func, args, kwargs)
                if out is not None:
                    return out
            out = func(*args, **kwargs)
            ins = _tensors(list(args) + list(kwargs.values()), rec.torch)
            if ins and all(rec.is_param(t) for t in ins):  # weight.T, orig·mask …: still a weight
                rec.mark_param(out)
            return out

    return _TraceMode()


def _run(model: Any, example_inputs: Any, rec: Recorder) -> Any:
    import torch

    handles = []
    for path, mod in model.named_modules():
        def pre(m, _inputs, path=path):
            rec.stack.append((path, m, Counter()))

        def post(m, _inputs, _out):
            if rec.stack:
                rec.stack.pop()

        handles.append(mod.register_forward_pre_hook(pre))
        handles.append(mod.register_forward_hook(post))
    mode = _make_mode(rec, _handlers())
    try:
        with torch.no_grad(), mode:
            if isinstance(example_inputs, dict):
                return model(**example_inputs)
            if isinstance(example_inputs, (tuple, list)):
                return model(*example_inputs)
            return model(example_inputs)
    finally:
        for h in handles:
            h.remove()


def _shapes(x: Any) -> Any:
    import torch

    if isinstance(x, torch.Tensor):
        return {"shape": list(x.shape), "dtype": str(x.dtype).replace("torch.", "")}
    if isinstance(x, (list, tuple)):
        return [_shapes(v) for v in x]
    if isinstance(x, dict):
        return {k: _shapes(v) for k, v in x.items()}
    return repr(x)


def from_module(model: Any, example_inputs: Any, *, name: str | None = None, dtype: str | None = None,
                activations: Any = None, training: bool = False, provenance: dict | None = None,
                tile_shape: tuple[int, int] = DEFAULT_TILE) -> Trace:
    """Trace `model(example_inputs)` into a Trace (one forward pass, no gradients).

    example_inputs: a tensor, a tuple of positional inputs, or a dict of keyword inputs.
    dtype: the trace's dtype for every op (e.g. "fp16" to simulate an fp32 CPU model at half
      precision); default: each op's own torch dtype. The torch dtype is kept in op.meta.
    activations: an activation policy from workloads.activations (Measured(), Threshold(0.5),
      TopK(0.25), Oracle(), or their names "measured" / "relu") applied to the activation
      operand of every weight GEMM and conv; default None = activations recorded dense.
    training: also emit the backward GEMMs (workloads.training.training_trace).
    Call model.eval() first unless training-mode behaviour (dropout, batch statistics) is wanted.
    """
    try:
        import torch  # noqa: F401
    except ImportError:
        raise bad("torch", None, "torch installed (pip install simsparse[torch]) to trace modules") from None
    from workloads.activations import as_policy

    policy = as_policy(activations)
    if policy is not None and hasattr(policy, "prepare"):
        policy.prepare(model, example_inputs, lambda p: _trace_ops(model, example_inputs, dtype, p, tile_shape))
    ops = _trace_ops(model, example_inputs, dtype, policy, tile_shape)
    if not ops:
        raise bad("model", type(model).__name__, "a module whose forward calls at least one torch op")
    name = name or getattr(model, "simsparse_name", None) or type(model).__name__
    prov = {"model": name, "source": "torch", "inputs": _shapes(example_inputs),
            "weights": getattr(model, "simsparse_weights", "as given"),
            "pruning": getattr(model, "simsparse_pruning", None),
            "activations": policy.describe() if policy is not None else None}
    prov.update(provenance or {})
    trace = Trace(name, tuple(ops), prov)
    if training:
        from workloads.training import training_trace

        trace = training_trace(trace)
    return trace


def _trace_ops(model: Any, example_inputs: Any, dtype: str | None, policy: Any,
               tile_shape: tuple[int, int]) -> list[Op]:
    rec = Recorder(model, dtype, policy, tile_shape)
    _run(model, example_inputs, rec)
    return rec.ops


def summary_rows(trace: Trace) -> list[dict[str, Any]]:
    """One plain row per op (name, kind, shape, weight pattern, densities) for tables."""
    rows = []
    for op in trace:
        rows.append({"op": op.name, "kind": op.kind, "phase": op.phase, "shape": op.shape_str(),
                     "dtype": op.dtype, "weight": op.weight.label if op.weight_is_param else "-",
                     "weight_density": round(op.weight.density, 4) if op.weight_is_param
                     and op.kind in ("gemm", "conv2d") else None,
                     "activation": op.activation.label, "gflop": op.flops / 1e9})
    return rows


def total_params(trace: Trace) -> int:
    """Weight elements of the trace's parameter GEMMs / convs (dense count, each op once)."""
    return sum(op.n * op.k * op.batch for op in trace
               if op.kind in ("gemm", "conv2d") and op.weight_is_param and op.phase == "fwd")


__all__ = ["ELTWISE_FLOPS", "Recorder", "from_module", "role_of", "summary_rows", "total_params",
           "torch_dtype_name"]
