"""Built-in workloads by name (HF configs and the CNN layer tables), and sparsity applied to a trace."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from inspect import signature
from pathlib import Path
from typing import Any

from simsparse.core.errors import bad
from simsparse.core.ops import Op, Trace
from simsparse.core.sparsity import Activation, Sparsity, parse_pattern
from workloads import cnn
from workloads.hf import ALIASES, config_names, hf, is_config_path
from workloads.recipe import Recipe, is_linear, looks_like_recipe

CNN_OPTIONS = ("batch", "image_size", "dtype", "num_classes")
TRANSFORMER_ONLY = ("seq_len", "kv_len", "include_lm_head", "routing", "seed")
HF_OPTIONS = tuple(p for p in signature(hf).parameters if p not in ("name_or_config", "phase"))


def names() -> list[str]:
    """Built-in workload names: transformer configs and CNNs."""
    return sorted(config_names() + cnn.cnn_names())


def get(name: str | dict[str, Any] | Path, sparsity: str | Recipe | None = None, **kw: Any) -> Trace:
    """A built-in workload by name, or a transformer from a HF config; keyword arguments go to
    its builder.

    `name`: a built-in name (workloads.names()), a path to a HF config.json, or a config dict
    (both built by workloads.hf). Transformers (workloads.hf): batch, seq_len, phase (prefill |
    decode | train), kv_len, dtype, include_lm_head, routing, seed. CNNs (workloads.cnn): batch,
    image_size, dtype, num_classes, phase ("train" adds the backward pass; prefill / decode
    are ignored, as are the transformer-only options). An unknown option is refused, naming
    the allowed ones. `sparsity` is a pattern for all linears ('2:4') or a recipe text (see
    workloads.recipe), applied to the forward ops before any backward ops are derived.
    """
    train = kw.get("phase") == "train"
    if train:  # sparsity goes on the forward ops; the backward ops inherit it
        kw["phase"] = "prefill"
    if isinstance(name, str) and not is_config_path(name) and name.lower().replace("-", "_") in cnn.TABLES:
        phase = kw.pop("phase", "prefill")
        for k in TRANSFORMER_ONLY:
            kw.pop(k, None)
        _check_options(kw, CNN_OPTIONS)
        if phase not in ("prefill", "decode", "fwd", "inference"):
            raise bad("phase", phase, "prefill, decode (both mean inference for a CNN) or train")
        trace = cnn.trace(name, **kw)
    else:
        if isinstance(name, str) and not is_config_path(name):
            low = name.lower()
            if ALIASES.get(low, low) not in config_names():
                raise bad("workload", name, ", ".join(names()) + ", a path to a HF config.json or a config dict")
        elif not isinstance(name, (str, dict, Path)) and not hasattr(name, "to_dict"):
            raise bad("workload", type(name).__name__, "a built-in name (" + ", ".join(names())
                      + "), a path to a HF config.json, a config dict or a transformers config")
        _check_options(kw, HF_OPTIONS)
        trace = hf(name, **kw)
    if sparsity is not None:
        trace = apply_sparsity(trace, sparsity)
    if train:
        from workloads.training import training_trace

        trace = training_trace(trace)
    return trace


def _check_options(kw: dict[str, Any], allowed: tuple[str, ...]) -> None:
    unknown = set(kw) - set(allowed) - {"phase"}
    if unknown:
        raise bad("option", sorted(unknown), ", ".join(allowed + ("phase", "sparsity")))


def apply_sparsity(trace: Trace, weight: Sparsity | str | dict | Recipe | None = None,
                   activation: Sparsity | str | dict | None = None,
                   where: Callable[[Op], bool] = is_linear) -> Trace:
    """Set the weight (and/or activation) sparsity of every op selected by `where`.

    `weight` may also be a recipe ('all linears 2:4; 50% teal on mlp inputs', see
    workloads.recipe), or an activation pattern ('activation@0.4', the CLI's `-s
    activation@0.4`): that one is dynamic sparsity of the ops' inputs, so it goes to the
    activation operand of the same ops (every linear, as the recipe '60% activation on all').

    Ops whose shape cannot hold the weight pattern (2:4 on K = 147) keep their weight (their
    activation pattern is still set); the trace's provenance lists them under "skipped" and
    counts them ("sparsity_ops": applied / skipped). A weight pattern that no selected op can
    hold (fan-in above every K, an M that divides no K) is refused, naming the pattern and why.

    On a training trace the pattern goes on the forward ops and the backward ops are derived
    again (workloads.training.rederive): the same trace as get(…, phase="train", sparsity=…).
    """
    from workloads.training import is_training, rederive

    if is_training(trace):
        return rederive(trace, lambda fwd: apply_sparsity(fwd, weight, activation, where))
    if looks_like_recipe(weight):
        if activation is not None:
            raise bad("activation", activation, "None when `weight` is a recipe (put it in the recipe)")
        return Recipe.parse(weight).apply(trace)
    w = parse_pattern(weight, "sparsity") if weight is not None else None
    a = parse_pattern(activation, "activation") if activation is not None else None
    if isinstance(w, Activation):  # input sparsity given where a weight pattern goes: the activation operand
        if a is not None:
            raise bad("activation", activation, f"None when the pattern {weight!r} is itself activation sparsity")
        w, a = None, w
    ops, skipped, why = [], [], ""
    selected = 0
    for op in trace:
        if where(op):
            selected += 1
            if w is not None:
                try:
                    op = replace(op, weight=w, meta=dict(op.meta))
                except ValueError as e:
                    skipped.append(op.name)
                    why = why or f"{op.name}: {e}"
            if a is not None:
                op = replace(op, activation=a, meta=dict(op.meta))
        ops.append(op)
    if w is not None and not w.is_dense and len(skipped) == selected:
        text = weight if isinstance(weight, str) else w.label
        reason = f"none does ({why})" if selected else "the trace has no such op"
        raise bad("sparsity", text, f"a weight pattern that fits at least one of the {selected} weight ops "
                  f"of {trace.name}; {reason}")
    label = "+".join(p.label for p in (w, a) if p is not None) or "dense"
    prov = {**trace.provenance, "weight_sparsity": w.to_dict() if w else None,
            "activation_sparsity": a.to_dict() if a else None}
    if w is not None:
        prov["sparsity_ops"] = {"applied": selected - len(skipped), "skipped": len(skipped)}
    if skipped:
        prov["skipped"] = skipped
    return Trace(f"{trace.name}[{label}]", tuple(ops), prov)
