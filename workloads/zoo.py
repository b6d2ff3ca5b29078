"""Built-in workloads by name, and sparsity recipes applied to a trace."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from simsparse.core.errors import bad
from simsparse.core.ops import Op, Trace
from simsparse.core.sparsity import Sparsity, parse_pattern
from workloads.hf import config_names, hf


def names() -> list[str]:
    """Built-in workload names (HF configs)."""
    return config_names()


def get(name: str, **kw: Any) -> Trace:
    """A built-in workload by name; keyword arguments go to its builder (batch, seq_len, phase…)."""
    if name in config_names():
        return hf(name, **kw)
    raise bad("workload", name, ", ".join(names()))


def is_linear(op: Op) -> bool:
    """Weight GEMMs of the model (not attention products, not the LM head)."""
    return op.kind in ("gemm", "conv2d") and op.weight_is_param and op.name != "lm_head"


def apply_sparsity(trace: Trace, weight: Sparsity | str | dict | None = None,
                   activation: Sparsity | dict | None = None,
                   where: Callable[[Op], bool] = is_linear) -> Trace:
    """Set the weight (and/or activation) sparsity of every op selected by `where`."""
    w = parse_pattern(weight, "weight") if weight is not None else None
    a = parse_pattern(activation, "activation") if activation is not None else None
    ops = []
    for op in trace:
        if where(op):
            op = replace(op, weight=w if w is not None else op.weight,
                         activation=a if a is not None else op.activation)
        ops.append(op)
    label = w.label if w is not None else "dense"
    prov = {**trace.provenance, "weight_sparsity": w.to_dict() if w else None,
            "activation_sparsity": a.to_dict() if a else None}
    return Trace(f"{trace.name}[{label}]", tuple(ops), prov)
