"""A learned correction on top of an analytic CPU cost model, for a machine that was measured.

The analytic model (hwmodels.cpu) prices instruction counts and memory streams; on the measured host
it leaves a residual that depends on the shape in ways no term of it describes (validation/data/
cpu-host/README.md). Like nn-Meter's kernel predictors, a gradient-boosted tree ensemble learns that
residual, log(measured / modelled), from features of the op, the mapping and the analytic cost's own
breakdown, on the fit half of the host measurements only (simsparse.calibrate_cpu --residual). Each fit-half
row is learned twice: with the fitted model's error, and with the error of the model refitted without the
row's shape (a cross-fit), which is the error it makes on the shapes the correction is used on. It is
plain data: a JSON file next to the spec (``residual_file``), walked here by a numba function, no
learning library needed at simulation time.

It only applies where it was trained: the spec that names it, and the kernels it lists; any other
kernel or spec gets the analytic cost unchanged.
"""

from __future__ import annotations

import functools
import json
import math
from dataclasses import replace
from pathlib import Path
from typing import Any

import numba
import numpy as np

from simsparse.core.mapping import Cost, Mapping
from simsparse.core.ops import Op
from simsparse.core.sparsity import Block, Dense

SPECS_DIR = Path(__file__).parent / "specs"

# feature names, in the order features() returns them (a residual file lists the names it was trained on)
FEATURES = (
    "kernel", "log_m", "log_n", "log_k", "density", "log_density", "block_h", "block_w", "log_mb",
    "pixel_blocks", "m_mod_8", "mb_mod_32", "log_t_model", "core_share", "dram_share", "panel_share",
    "l3_resident_share", "log_dram_bytes", "log_x_panel_mib", "log_rotation_copies", "activation_density",
    "last_block_half_trips",
)


def features(op: Op, mapping: Mapping, spec: Any, cost: Cost, kernels: tuple[str, ...]) -> list[float]:
    """Feature vector of one call: the shape, the sparsity, the mapping's pixel block and the
    analytic cost's breakdown (shares of its time, the L3-resident share of its traffic)."""
    from hwmodels import cpu

    m, n, k = op.m, op.n, op.k
    # a kernel that stores the weight dense (or reads every activation) does the same work whatever
    # zeros it holds: it sees the operand as dense, as every row it was trained on did
    info = cpu.KERNELS.get(mapping.kernel)
    weight = op.weight if info is None or info.skips_weight_zeros else Dense()
    d = float(weight.density)
    bh, bw = (weight.bh, weight.bw) if isinstance(weight, Block) else (1, 1)
    mb = mapping.tile[0] if mapping.tile and mapping.tile[0] else m
    t = cost.t_s
    b = cost.breakdown_s
    dram = cost.bytes_by_level.get("dram", 0.0)
    copies = float(mapping.params.get("rotation_copies", 0) or 0)
    act = op.activation.density if info is None or info.skips_activation_zeros else 1.0
    # the pixel loop's tail in the last (or only) block: LLVM vectorises it as 4 unrolled full vectors
    # (64 floats), then 8-float half-vector trips, then scalar steps (hwmodels.cpu.loop_steps; read from
    # the numba kernels' AVX-512 assembly). m_mod_8 counts the scalar steps; the half-vector trips are
    # not priced alike by the core (pinned M sweep, m-sweep-20261124T1445Z.json: one trip costs what two do)
    blocks = math.ceil(m / mb)
    last = m - (blocks - 1) * mb
    return [float(kernels.index(mapping.kernel)), math.log(m), math.log(n), math.log(k), d, math.log(d + 1e-3),
            float(bh), float(bw), math.log(mb), float(blocks), float(m % 8), float(mb % 32),
            math.log(t), b.get("core", 0.0) / t, b.get("dram", 0.0) / t, b.get("panel", 0.0) / t,
            cpu.l3_resident_share(spec, mapping, dram, t), math.log(dram + 1.0),
            math.log(k * mb * op.dtype_bytes / 2**20), math.log(copies + 1.0), float(act),
            float(last % 64 // 8)]


class Ensemble:
    """Sum of regression trees plus a baseline (a gradient-boosted model, shrinkage folded into the
    leaf values). Each tree: arrays feature, threshold, left, right, value; a node with left = -1 is
    a leaf; x[feature] <= threshold goes left."""

    def __init__(self, data: dict[str, Any]):
        if tuple(data["features"]) != FEATURES:
            raise ValueError(f"residual file features: got {data['features']}; this version computes {list(FEATURES)}")
        self.kernels = tuple(data["kernels"])
        self.baseline = float(data["baseline"])
        self.source = data.get("source", "")
        # the analytic fit it corrects: its calibrated values (machine states excluded), checked against the spec
        self.analytic = {k: float(v) for k, v in data.get("analytic_params", {}).items()}
        # every tree's nodes in one flat table (child indices offset to it, -1 at a leaf)
        feat, thr, left, right, value, roots = [], [], [], [], [], []
        for t in data["trees"]:
            off = len(feat)
            roots.append(off)
            feat += t["feature"]
            thr += t["threshold"]
            left += [c + off if c >= 0 else -1 for c in t["left"]]
            right += [c + off if c >= 0 else -1 for c in t["right"]]
            value += t["value"]
        self.feature = np.asarray(feat, dtype=np.int64)
        self.threshold = np.asarray(thr, dtype=float)
        self.left = np.asarray(left, dtype=np.int64)
        self.right = np.asarray(right, dtype=np.int64)
        self.value = np.asarray(value, dtype=float)
        self.roots = np.asarray(roots, dtype=np.int64)

    def check(self, spec: Any) -> None:
        """Refuse a spec whose analytic values are not those the ensemble was trained on (a refit without
        retraining the residual would apply a correction of another model)."""
        eff = spec.efficiency
        for key, val in self.analytic.items():
            got = eff.get(key)
            if got is None or abs(got - val) > 1e-6 * max(abs(val), 1e-30):
                raise ValueError(f"residual_file {spec.residual_file!r}: trained on the analytic fit with {key} = {val:g}, "
                                 f"the spec has {got}; retrain it (python -m simsparse.calibrate_cpu --residual)")

    def predict(self, x: list[float]) -> float:
        return self.baseline + _walk(self.feature, self.threshold, self.left, self.right, self.value, self.roots,
                                     np.asarray(x, dtype=float))


@numba.njit(cache=True)
def _walk(feature, threshold, left, right, value, roots, x):  # pragma: no cover - compiled
    """Sum over trees of the leaf `x` reaches (the cost model's hot path: a few microseconds)."""
    total = 0.0
    for r in roots:
        i = r
        while left[i] >= 0:
            i = left[i] if x[feature[i]] <= threshold[i] else right[i]
        total += value[i]
    return total


@functools.lru_cache(maxsize=8)
def load(name: str) -> Ensemble:
    """The ensemble stored in `name` (a file name in hwmodels/specs/, or a path)."""
    path = Path(name) if Path(name).is_absolute() else SPECS_DIR / name
    if not path.exists():
        raise FileNotFoundError(f"residual_file: {path} does not exist")
    return Ensemble(json.loads(path.read_text()))


_CHECKED: dict[str, Any] = {}  # residual file -> the efficiency table last checked against it


def _copies_columns(op: Op) -> bool:
    """A convolution other than 1x1 / stride 1 (its GEMM runs on a column copy): no row the residuals were
    trained on is one (they are GEMMs and 1x1 convolutions), so it keeps the analytic cost."""
    g = op.conv
    return g is not None and not g.reads_in_place


def apply(op: Op, mapping: Mapping, spec: Any, cost: Cost) -> Cost:
    """`cost` times the learned correction exp(residual) where the spec names a residual file that
    covers the kernel; unchanged elsewhere. The breakdown keeps the analytic parts and adds the
    correction as its own entry ("residual", seconds, may be negative)."""
    name = getattr(spec, "residual_file", "")
    if not name or cost.t_s <= 0:
        return cost
    ens = load(name)
    if mapping.kernel not in ens.kernels or op.dtype != "fp32" or _copies_columns(op):
        return cost
    if _CHECKED.get(name) is not spec.efficiency:
        ens.check(spec)
        _CHECKED[name] = spec.efficiency
    factor = math.exp(ens.predict(features(op, mapping, spec, cost, ens.kernels)))
    t = cost.t_s * factor
    return replace(cost, t_s=t, cycles=cost.cycles * factor, energy_j=cost.energy_j * factor,
                   utilisation=min(1.0, cost.utilisation / factor),
                   breakdown_s={**cost.breakdown_s, "residual": t - cost.t_s})
