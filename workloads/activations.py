"""Activation sparsity measured on real forward passes (statistics, never tensors, go in the trace).

A policy sees the activation operand x of every weight GEMM / conv while
`workloads.from_module` runs the model, may zero parts of it (the sparsified x is what the
layer then computes with, so later layers see the effect), and returns the density as an
`Activation(density, source=…)` for the op's activation operand plus extra numbers for
op.meta. Policies:

* Measured()      — zeros as they occur (ReLU outputs, dropout…): source "relu" when x came
                    straight from a ReLU, else "measured".
* Threshold(d)    — magnitude threshold calibrated per layer to keep a fraction d of |x|
                    (TEAL, Liu et al. 2024): a calibration pass on the dense model sets each
                    layer's threshold, the measuring pass applies it. source "threshold".
* TopK(d)         — per token keep the round(d·K) largest |x| (Q-Sparse, Wang et al. 2024).
                    source "topk".
* Oracle(d=None)  — contextual neuron selection with a perfect predictor (Deja Vu, Liu et
                    al. 2023) on MLP outputs (fc2 / down_proj inputs): the active neurons
                    per token (nonzero, or the top d by magnitude). The producing GEMMs
                    (fc1 / up / gate) get meta["output_density"] — their skipped rows.
                    source "predictor".

MoE routing (tokens per expert) is recorded by the extractor itself on the router op
(meta["tokens_per_expert"]); `expert_counts(trace)` collects it, `routing_counts` computes
it from router logits in numpy.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from simsparse.core.errors import bad
from simsparse.core.ops import Trace
from simsparse.core.sparsity import Activation, SparsityStats

STATS_MAX_ELEMS = 1 << 24  # per-token nonzero stats only for activations up to this size
NOT_ACTIVATION_SPARSE = ("head", "router", "embedding")


def _default_where(name: str, role: str, kind: str) -> bool:
    """Inputs of every weight GEMM except the LM head / classifier and MoE routers."""
    return kind in ("linear", "conv") and role not in NOT_ACTIVATION_SPARSE


def _linear_only(name: str, role: str, kind: str) -> bool:
    return kind == "linear" and role not in NOT_ACTIVATION_SPARSE


def _mlp_out(name: str, role: str, kind: str) -> bool:
    return kind == "linear" and role == "mlp_out"


def _exact_density(mask: Any) -> float:
    return float(mask.float().mean()) if mask.numel() else 1.0


def _activation(density: float, source: str, numel: int, stats: SparsityStats | None = None) -> Activation:
    # Activation needs density > 0: an all-zero operand keeps the smallest representable density
    d = min(1.0, max(density, 1.0 / max(numel, 1)))
    return Activation(d, source, stats=stats)


def _token_view(x: Any, kind: str) -> Any:
    """x as [tokens, K]: linear inputs are [..., K]; conv inputs NC… → one row per pixel."""
    if kind == "conv" and x.dim() > 2:
        x = x.movedim(1, -1)
    return x.reshape(-1, x.shape[-1])


def _row_stats(mask2d: Any) -> SparsityStats | None:
    if mask2d.numel() > STATS_MAX_ELEMS:
        return None
    return SparsityStats.from_mask(mask2d.to("cpu").numpy())


@dataclass
class Policy:
    """Base: which ops (`where(name, role, kind)`), what to do with x (`sparsify`), and the source."""

    where: Callable[[str, str, str], bool] = field(default=_default_where, kw_only=True)
    source: str = field(default="measured", kw_only=True)

    def sparsify(self, rec: Any, name: str, kind: str, x: Any) -> tuple[Any, Any, dict]:
        """(x to compute with, bool mask of its nonzeros, extra meta)."""
        return x, x != 0, {}

    def on_input(self, rec: Any, name: str, role: str, kind: str, x: Any) -> tuple[Any, Activation | None, dict]:
        if not self.where(name, role, kind) or not x.is_floating_point():
            return x, None, {}
        x2, mask, meta = self.sparsify(rec, name, kind, x)
        density = _exact_density(mask)
        stats = _row_stats(_token_view(mask, kind)) if kind == "linear" else None
        src = self.source_for(rec, x)
        meta = {"activation_density": density, "activation_source": src, **meta}
        return x2, _activation(density, src, mask.numel(), stats), meta

    def source_for(self, rec: Any, x: Any) -> str:
        return self.source

    def describe(self) -> dict[str, Any]:
        return {"policy": type(self).__name__, "source": self.source}


@dataclass
class Measured(Policy):
    """Zeros exactly as the model produces them (ReLU, dropout …); nothing is changed."""

    def source_for(self, rec: Any, x: Any) -> str:
        return "relu" if rec.produced_by_relu(x) else "measured"


@dataclass
class Threshold(Policy):
    """TEAL-style magnitude thresholding, calibrated per layer to keep `density` of |x|."""

    density: float = 0.5
    calibration_inputs: Any = None
    where: Callable[[str, str, str], bool] = field(default=_linear_only, kw_only=True)
    source: str = field(default="threshold", kw_only=True)
    thresholds: dict[str, float] = field(default_factory=dict, kw_only=True)
    _calibrating: bool = field(default=False, kw_only=True, repr=False)

    def __post_init__(self) -> None:
        if not 0 < self.density <= 1:
            raise bad("density", self.density, "a number in (0, 1] (fraction of activations kept)")

    def prepare(self, model: Any, example_inputs: Any, run: Callable[[Any], Any]) -> None:
        """Calibration pass on the dense model: one threshold per op name."""
        if self.calibration_inputs is not None:
            from workloads.torch_extract import _trace_ops

            run = (lambda p: _trace_ops(model, self.calibration_inputs, None, p, (64, 64)))  # noqa: E731
        self._calibrating = True
        try:
            run(self)
        finally:
            self._calibrating = False

    def sparsify(self, rec: Any, name: str, kind: str, x: Any) -> tuple[Any, Any, dict]:
        mag = x.detach().abs().float().flatten()
        if self._calibrating:
            keep = int(round(self.density * mag.numel()))
            if keep >= mag.numel():
                self.thresholds[name] = -1.0
            else:  # the (numel - keep)-th smallest |x|: values strictly above it are kept
                self.thresholds[name] = float(mag.kthvalue(mag.numel() - keep).values)
            return x, x != 0, {}
        t = self.thresholds.get(name)
        if t is None:
            raise bad("op", name, "an op seen in the calibration pass (same model structure)")
        mask = x.abs() > t
        return x * mask, mask, {"threshold": t, "target_density": self.density}

    def describe(self) -> dict[str, Any]:
        return {"policy": "Threshold (TEAL-like)", "source": self.source, "density": self.density,
                "calibration": "separate inputs" if self.calibration_inputs is not None else "same inputs"}


@dataclass
class TopK(Policy):
    """Q-Sparse-style top-k: per token keep the round(density·K) largest |x| along K."""

    density: float = 0.5
    where: Callable[[str, str, str], bool] = field(default=_linear_only, kw_only=True)
    source: str = field(default="topk", kw_only=True)

    def __post_init__(self) -> None:
        if not 0 < self.density <= 1:
            raise bad("density", self.density, "a number in (0, 1] (fraction of activations kept)")

    def sparsify(self, rec: Any, name: str, kind: str, x: Any) -> tuple[Any, Any, dict]:
        import torch

        dim = 1 if kind == "conv" and x.dim() > 2 else -1
        k_len = x.shape[dim]
        k = min(k_len, max(1, int(round(self.density * k_len))))
        idx = x.detach().abs().topk(k, dim=dim).indices
        mask = torch.zeros_like(x, dtype=torch.bool).scatter_(dim, idx, True)
        return x * mask, mask, {"topk": k}

    def describe(self) -> dict[str, Any]:
        return {"policy": "TopK (Q-Sparse-like)", "source": self.source, "density": self.density}


@dataclass
class Oracle(Policy):
    """Deja Vu-style contextual MLP neuron selection by a perfect predictor.

    density=None keeps the truly active neurons (x ≠ 0, e.g. after ReLU); a number keeps the
    top `density` of them by |x| per token.
    """

    density: float | None = None
    where: Callable[[str, str, str], bool] = field(default=_mlp_out, kw_only=True)
    source: str = field(default="predictor", kw_only=True)

    def sparsify(self, rec: Any, name: str, kind: str, x: Any) -> tuple[Any, Any, dict]:
        import torch

        if self.density is None:
            mask = x != 0
        else:
            k = min(x.shape[-1], max(1, int(round(self.density * x.shape[-1]))))
            idx = x.detach().abs().topk(k, dim=-1).indices
            mask = torch.zeros_like(x, dtype=torch.bool).scatter_(-1, idx, True)
        d = _exact_density(mask)
        for i in rec.producers(x):  # the GEMMs whose output rows the predictor lets us skip
            rec.ops[i].meta["output_density"] = d
            rec.ops[i].meta["output_sparsity_source"] = self.source
        return x * mask, mask, {}

    def describe(self) -> dict[str, Any]:
        return {"policy": "Oracle (Deja Vu-like)", "source": self.source, "density": self.density}


POLICY_NAMES = ("measured", "relu", "threshold@D", "teal@D", "topk@D", "qsparse@D", "oracle[@D]",
                "dejavu[@D]")


def as_policy(spec: Any) -> Policy | None:
    """A Policy from an object or its text form: measured | relu | teal@0.5 | threshold@0.5 |
    topk@0.25 | qsparse@0.25 | oracle | oracle@0.1 | dejavu (D = density kept)."""
    if spec is None or isinstance(spec, Policy):
        return spec
    if not isinstance(spec, str):
        raise bad("activations", spec, "a Policy or one of " + ", ".join(POLICY_NAMES))
    name, _, dens = spec.strip().lower().partition("@")
    try:
        d = float(dens) if dens else None
    except ValueError:
        raise bad("activations", spec, "a density after '@', e.g. teal@0.5") from None
    if name in ("measured", "relu"):
        return Measured()
    if name in ("threshold", "teal", "topk", "qsparse") and d is None:
        raise bad("activations", spec, f"{name}@D with D the fraction kept, e.g. {name}@0.5")
    if name in ("threshold", "teal"):
        return Threshold(d)
    if name in ("topk", "qsparse"):
        return TopK(d)
    if name in ("oracle", "dejavu", "predictor"):
        return Oracle(d)
    raise bad("activations", spec, ", ".join(POLICY_NAMES))


def capture(model: Any, example_inputs: Any, policy: Any = "measured", **kw: Any) -> Trace:
    """Run `model` on real inputs and return its trace with measured activation densities
    (a shorthand for from_module(model, inputs, activations=policy, **kw))."""
    from workloads.torch_extract import from_module

    return from_module(model, example_inputs, activations=as_policy(policy), **kw)


def densities(trace: Trace) -> dict[str, float]:
    """Per op name: the measured density of its activation operand (exact, before clamping)."""
    out = {}
    for op in trace:
        if "activation_density" in op.meta:
            out[op.name] = float(op.meta["activation_density"])
        elif op.activation.pattern == "activation":
            out[op.name] = op.activation.density
    return out


def routing_counts(router_logits: np.ndarray, top_k: int) -> list[int]:
    """Tokens routed to each expert: every token goes to its top_k largest logits."""
    logits = np.asarray(router_logits, dtype=np.float64)
    n_exp = logits.shape[-1]
    flat = logits.reshape(-1, n_exp)
    top = np.argsort(-flat, axis=1, kind="stable")[:, :top_k]
    return [int(c) for c in np.bincount(top.ravel(), minlength=n_exp)]


def expert_counts(trace: Trace) -> dict[str, list[int]]:
    """Router op name → tokens per expert, for every MoE router the trace recorded."""
    return {op.name: list(op.meta["tokens_per_expert"]) for op in trace if "tokens_per_expert" in op.meta}
