"""Built-in workloads by name (HF configs and the CNN layer tables), and sparsity applied to a trace."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from typing import Any

from simsparse.core.errors import bad
from simsparse.core.ops import Op, Trace
from simsparse.core.sparsity import Sparsity, parse_pattern
from workloads import cnn
from workloads.hf import ALIASES, config_names, hf
from workloads.recipe import Recipe, is_linear, looks_like_recipe

CNN_OPTIONS = ("batch", "image_size", "dtype", "num_classes")
TRANSFORMER_ONLY = ("seq_len", "kv_len", "include_lm_head", "routing", "seed")


def names() -> list[str]:
    """Built-in workload names: transformer configs and CNNs."""
    return sorted(config_names() + cnn.cnn_names())


def get(name: str, sparsity: str | Recipe | None = None, **kw: Any) -> Trace:
    """A built-in workload by name; keyword arguments go to its builder.

    Transformers (workloads.hf): batch, seq_len, phase (prefill | decode | train), kv_len,
    dtype, routing. CNNs (workloads.cnn): batch, image_size, dtype, phase ("train" adds the
    backward pass; prefill / decode are ignored, as are the transformer-only options).
    `sparsity` is a pattern for all linears ('2:4') or a recipe text (see workloads.recipe).
    """
    low = name.lower()
    key = ALIASES.get(low, low)
    train = kw.get("phase") == "train"
    if train:  # sparsity goes on the forward ops; the backward ops inherit it
        kw["phase"] = "prefill"
    if low.replace("-", "_") in cnn.TABLES:
        phase = kw.pop("phase", "prefill")
        for k in TRANSFORMER_ONLY:
            kw.pop(k, None)
        unknown = set(kw) - set(CNN_OPTIONS)
        if unknown:
            raise bad("option", sorted(unknown), ", ".join(CNN_OPTIONS + ("phase", "sparsity")))
        if phase not in ("prefill", "decode", "fwd", "inference"):
            raise bad("phase", phase, "prefill, decode (both mean inference for a CNN) or train")
        trace = cnn.trace(name, **kw)
    elif key in config_names():
        trace = hf(key, **kw)
    else:
        raise bad("workload", name, ", ".join(names()))
    if sparsity is not None:
        trace = apply_sparsity(trace, sparsity)
    if train:
        from workloads.training import training_trace

        trace = training_trace(trace)
    return trace


def apply_sparsity(trace: Trace, weight: Sparsity | str | dict | Recipe | None = None,
                   activation: Sparsity | dict | None = None,
                   where: Callable[[Op], bool] = is_linear) -> Trace:
    """Set the weight (and/or activation) sparsity of every op selected by `where`.

    `weight` may also be a recipe ('all linears 2:4; 50% teal on mlp inputs', see
    workloads.recipe). Ops whose shape cannot hold the weight pattern (2:4 on K = 147) keep
    their weight; they are listed in the trace's provenance under "skipped".
    """
    if looks_like_recipe(weight):
        if activation is not None:
            raise bad("activation", activation, "None when `weight` is a recipe (put it in the recipe)")
        return Recipe.parse(weight).apply(trace)
    w = parse_pattern(weight, "weight") if weight is not None else None
    a = parse_pattern(activation, "activation") if activation is not None else None
    ops, skipped = [], []
    for op in trace:
        if where(op):
            try:
                op = replace(op, weight=w if w is not None else op.weight,
                             activation=a if a is not None else op.activation, meta=dict(op.meta))
            except ValueError:
                skipped.append(op.name)
        ops.append(op)
    label = w.label if w is not None else "dense"
    prov = {**trace.provenance, "weight_sparsity": w.to_dict() if w else None,
            "activation_sparsity": a.to_dict() if a else None}
    if skipped:
        prov["skipped"] = skipped
    return Trace(f"{trace.name}[{label}]", tuple(ops), prov)
