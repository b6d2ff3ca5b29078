"""Sparsity recipes: which ops get which weight / activation sparsity, from a short text.

    "all linears 2:4"                       every weight GEMM / conv (not the head / router)
    "mlp unstructured@0.5; attention 2:4"   per block
    "50% teal on mlp inputs"                activation sparsity 50 % (density 0.5), TEAL-style
    "topk@0.25 on attention"                density form (fraction kept after '@')
    "all linears 2:4t"                      transposable 2:4 (stays 2:4 in bwd_data)
    "convs block4x4@0.5, fc dense"          several rules, ';' or ',' separated; later rules win

Selectors: all | linears | weights, mlp, mlp_in (gate/up/fc1), mlp_out (down/fc2), attention
(q/k/v/o), qkv, attn_out, experts, router, head (lm_head / classifier), convs, pointwise,
depthwise, or a glob on op names (`layers.*.fc1`, `*.down_proj`).
Activation methods (source): teal / threshold, topk / qsparse, dejavu / oracle / predictor,
relu, moe, measured, synthetic. A weight pattern an op cannot hold (2:4 on a conv with
K = 3·7·7, a block that does not tile it) leaves that op unchanged; the trace's provenance
lists those ops under "skipped".
"""

from __future__ import annotations

import fnmatch
import re
from collections.abc import Callable
from dataclasses import dataclass, replace
from typing import Any

from simsparse.core.errors import bad
from simsparse.core.ops import Op, Trace
from simsparse.core.sparsity import NM, Activation, Sparsity, parse_pattern

METHOD_SOURCES = {"teal": "threshold", "threshold": "threshold", "topk": "topk", "qsparse": "topk",
                  "q-sparse": "topk", "dejavu": "predictor", "deja-vu": "predictor", "oracle": "predictor",
                  "predictor": "predictor", "relu": "relu", "moe": "moe", "measured": "measured",
                  "synthetic": "synthetic", "activation": "synthetic"}


def is_linear(op: Op) -> bool:
    """Weight GEMMs / convs of the model — not attention products, the LM head / classifier or
    MoE routers."""
    return (op.kind in ("gemm", "conv2d") and op.weight_is_param and op.name != "lm_head"
            and op.meta.get("role") not in ("head", "router") and op.phase == "fwd")


def _role(*roles: str) -> Callable[[Op], bool]:
    return lambda op: is_linear(op) and op.meta.get("role") in roles


def _conv(op: Op) -> bool:
    return op.weight_is_param and (op.kind == "conv2d" or op.meta.get("role") == "conv") and op.phase == "fwd"


SELECTORS: dict[str, Callable[[Op], bool]] = {
    "all": is_linear, "linears": is_linear, "linear": is_linear, "weights": is_linear,
    "mlp": _role("mlp_in", "mlp_out"), "ffn": _role("mlp_in", "mlp_out"),
    "mlp_in": _role("mlp_in"), "up": _role("mlp_in"), "mlp_out": _role("mlp_out"), "down": _role("mlp_out"),
    "attention": _role("attn_in", "attn_out"), "attn": _role("attn_in", "attn_out"),
    "qkv": _role("attn_in"), "attn_out": _role("attn_out"),
    "experts": lambda op: is_linear(op) and "expert" in op.meta,
    "router": lambda op: op.meta.get("role") == "router",
    "head": lambda op: op.weight_is_param and (op.meta.get("role") == "head" or op.name == "lm_head"),
    "convs": _conv, "conv": _conv,
    "pointwise": lambda op: _conv(op) and op.conv is not None and op.conv.kh == op.conv.kw == 1,
    "depthwise": lambda op: _conv(op) and op.conv is not None and op.conv.is_depthwise,
}


def selector(text: str) -> Callable[[Op], bool]:
    """Predicate over ops for a selector word(s) or a glob on op names."""
    words = [w for w in text.lower().split() if w not in ("all", "the", "on", "of", "layers")] or ["all"]
    key = "_".join(words)
    key = {"all_linears": "linears", "mlp_inputs": "mlp", "mlp_outputs": "mlp"}.get(key, key)
    if key in SELECTORS:
        return SELECTORS[key]
    if len(words) == 1:  # a glob, or an op name / name suffix (`fc`, `lm_head`, `layers.0.fc1`)
        pat = text.strip()
        if any(ch in pat for ch in "*?["):
            return lambda op: op.weight_is_param and fnmatch.fnmatch(op.name, pat)
        return lambda op: op.weight_is_param and (op.name == pat or op.name.endswith("." + pat))
    raise bad("recipe.selector", text, ", ".join(sorted(SELECTORS)) + ", or a glob on op names")


@dataclass(frozen=True)
class Rule:
    """Ops chosen by `select` get `weight` and/or `activation` sparsity."""

    select: str
    weight: Sparsity | None = None
    activation: Sparsity | None = None
    transposable: bool = False

    def to_dict(self) -> dict[str, Any]:
        d: dict[str, Any] = {"select": self.select}
        if self.weight is not None:
            d["weight"] = self.weight.to_dict()
        if self.activation is not None:
            d["activation"] = self.activation.to_dict()
        if self.transposable:
            d["transposable"] = True
        return d


_PCT = re.compile(r"^\s*(\d+(?:\.\d+)?)\s*%\s*([\w-]+)\s+(?:sparsity\s+)?on\s+(.+?)\s*$")
_AT = re.compile(r"^\s*([\w-]+)@(\d*\.?\d+)\s+on\s+(.+?)\s*$")


def _act_rule(text: str) -> Rule | None:
    m = _PCT.match(text)
    if m:
        pct, method, sel = float(m.group(1)), m.group(2).lower(), m.group(3)
        if not 0 <= pct < 100:
            raise bad("recipe.sparsity", f"{pct}%", "a percentage of zeros in [0, 100)")
        density = 1 - pct / 100
    else:
        m = _AT.match(text)
        if not m:
            return None
        method, density, sel = m.group(1).lower(), float(m.group(2)), m.group(3)
    if method not in METHOD_SOURCES:
        raise bad("recipe.method", method, ", ".join(sorted(METHOD_SOURCES)))
    sel = re.sub(r"\s+(inputs?|activations?)$", "", sel.strip(), flags=re.I)
    selector(sel)  # validate now
    return Rule(sel, activation=Activation(density, METHOD_SOURCES[method]))


def _weight_rule(text: str) -> Rule:
    if "=" in text:
        sel, _, pat = text.partition("=")
        words = [*sel.split(), pat.strip()]
    else:
        words = text.split()
    if not words:
        raise bad("recipe", text, "'<selector> <pattern>' or '<pct>% <method> on <selector>'")
    pat = words[-1]
    transposable = False
    if pat.lower() == "transposable" and len(words) > 1:
        transposable, words = True, words[:-1]
        pat = words[-1]
    if re.fullmatch(r"\d+:\d+t", pat.lower()):
        transposable, pat = True, pat[:-1]
    weight = parse_pattern(pat, "recipe.pattern")
    if transposable and not isinstance(weight, NM):
        raise bad("recipe.transposable", pat, "an n:m pattern (e.g. 2:4t)")
    sel = " ".join(words[:-1]) or "all"
    selector(sel)
    if isinstance(weight, Activation):  # 'mlp activation@0.4': the inputs' sparsity, not the weights'
        return Rule(sel, activation=weight)
    return Rule(sel, weight=weight, transposable=transposable)


@dataclass(frozen=True)
class Recipe:
    """An ordered list of rules (later rules override earlier ones on the same op)."""

    rules: tuple[Rule, ...]
    text: str = ""

    @classmethod
    def parse(cls, text: str | Recipe) -> Recipe:
        if isinstance(text, Recipe):
            return text
        if not isinstance(text, str) or not text.strip():
            raise bad("recipe", text, "text such as 'all linears 2:4; 50% teal on mlp inputs'")
        rules = []
        for part in re.split(r"[;,]", text):
            if part.strip():
                rules.append(_act_rule(part) or _weight_rule(part))
        return cls(tuple(rules), text.strip())

    def to_dict(self) -> dict[str, Any]:
        return {"text": self.text, "rules": [r.to_dict() for r in self.rules]}

    def apply(self, trace: Trace) -> Trace:
        """The trace with the rules applied to the ops they select. On a training trace they go on
        the forward ops and the backward ops are derived again (workloads.training.rederive). A
        weight rule whose pattern no op it selects can hold is refused, naming the pattern."""
        from workloads.training import is_training, rederive

        if is_training(trace):
            return rederive(trace, self.apply)
        preds = [selector(r.select) for r in self.rules]
        ops, skipped = [], []
        matched = [False] * len(self.rules)
        tried, failed = [0] * len(self.rules), [""] * len(self.rules)
        n_fail = [0] * len(self.rules)
        predictor_density: dict[Any, float] = {}
        for op in trace:
            new = op
            meta = dict(op.meta)
            for j, (rule, pred) in enumerate(zip(self.rules, preds, strict=True)):
                if not pred(op):
                    continue
                matched[j] = True
                if rule.weight is not None:
                    tried[j] += 1
                    try:
                        new = replace(new, weight=rule.weight, meta=meta)
                        if rule.transposable:
                            ok = new.n % rule.weight.m == 0
                            meta["weight_transposable"] = ok
                    except ValueError as e:
                        skipped.append(op.name)
                        n_fail[j] += 1
                        failed[j] = failed[j] or f"{op.name}: {e}"
                        continue
                if rule.activation is not None:
                    new = replace(new, activation=rule.activation, meta=meta)
                    if rule.activation.source == "predictor" and op.meta.get("role") == "mlp_out":
                        predictor_density[op.meta.get("layer"), op.meta.get("expert")] = rule.activation.density
            ops.append(new)
        for j, (rule, hit) in enumerate(zip(self.rules, matched, strict=True)):
            if not hit:
                raise bad("recipe.selector", rule.select, f"a selector matching at least one op of {trace.name}")
            if tried[j] and n_fail[j] == tried[j] and not rule.weight.is_dense:
                raise bad("recipe.pattern", rule.weight.label, f"a pattern that fits at least one of the {tried[j]} "
                          f"ops '{rule.select}' selects in {trace.name}; none does ({failed[j]})")
        if predictor_density:  # Deja Vu: the MLP's first GEMMs only compute the predicted neurons
            for i, op in enumerate(ops):
                key = (op.meta.get("layer"), op.meta.get("expert"))
                if op.meta.get("role") == "mlp_in" and key in predictor_density:
                    ops[i] = replace(op, meta={**op.meta, "output_density": predictor_density[key],
                                                "output_sparsity_source": "predictor"})
        prov = {**trace.provenance, "recipe": self.to_dict()}
        if any(tried):
            n_skipped = len(set(skipped))
            n_weight = sum(1 for op in trace if any(r.weight is not None and p(op)
                                                     for r, p in zip(self.rules, preds, strict=True)))
            prov["sparsity_ops"] = {"applied": n_weight - n_skipped, "skipped": n_skipped}
        if skipped:
            prov["skipped"] = sorted(set(skipped))
        return Trace(f"{trace.name}[{self.text}]", tuple(ops), prov)


def looks_like_recipe(spec: Any) -> bool:
    """True for recipe text ('all linears 2:4') as opposed to a bare pattern ('2:4')."""
    return isinstance(spec, Recipe) or isinstance(spec, str) and bool(re.search(r"[\s;,=%]", spec.strip()))
