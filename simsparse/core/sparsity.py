"""Sparsity patterns: *what* is zero (the pattern) and *how much* (density + measured stats).

A pattern applies to a 2-D operand laid out as the GEMM convention stores it: the weight
W[N, K] (rows = output features, cols = the reduction axis K) or the activation x[M, K].
Structured groups (N:M, vectors, blocks) run along the last axis (K), as sparse Tensor Cores
and cuSPARSELt store them.

Every pattern can generate a seeded mask (`mask(shape, seed)`), say which parts of a given
mask break its rule (`check(mask)` → list of violations; empty = valid) and round-trip
through a plain dict (`to_dict` / `parse_pattern`).
"""

from __future__ import annotations

import copy
import math
import re
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np

from simsparse.core.errors import bad

ACTIVATION_SOURCES = ("relu", "threshold", "topk", "predictor", "moe", "measured", "synthetic")


def _check_density(density: float, field_name: str = "density") -> float:
    try:
        d = float(density)
    except (TypeError, ValueError):
        raise bad(field_name, density, "a number in (0, 1]") from None
    if not (0.0 < d <= 1.0) or math.isnan(d):
        raise bad(field_name, density, "a number in (0, 1]")
    return d


def _check_positive_int(value: Any, field_name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value <= 0:
        raise bad(field_name, value, "a positive integer")
    return int(value)


def _check_shape(shape: Any) -> tuple[int, int]:
    if len(shape) != 2:
        raise bad("shape", shape, "a 2-D shape (rows, cols)")
    return _check_positive_int(shape[0], "shape[0]"), _check_positive_int(shape[1], "shape[1]")


@dataclass(frozen=True)
class SparsityStats:
    """Measured nonzero distribution of one operand, for load-imbalance modelling."""

    row_nnz: np.ndarray | None = field(default=None, compare=False, repr=False)
    tile_nnz: np.ndarray | None = field(default=None, compare=False, repr=False)
    tile_shape: tuple[int, int] | None = None

    @classmethod
    def from_mask(cls, mask: np.ndarray, tile_shape: tuple[int, int] = (64, 64)) -> SparsityStats:
        """Per-row and per-tile nonzero counts of a 2-D mask (tiles at the edges may be partial)."""
        mask = np.asarray(mask, dtype=bool)
        rows, cols = mask.shape
        th, tw = tile_shape
        pr, pc = -rows % th, -cols % tw
        padded = np.pad(mask, ((0, pr), (0, pc)))
        tiles = padded.reshape(padded.shape[0] // th, th, padded.shape[1] // tw, tw).sum(axis=(1, 3))
        return cls(row_nnz=mask.sum(axis=1), tile_nnz=tiles.ravel(), tile_shape=tile_shape)

    def row_imbalance(self) -> float:
        """max / mean of the per-row nonzero counts (1.0 = perfectly balanced)."""
        if self.row_nnz is None or len(self.row_nnz) == 0 or self.row_nnz.mean() == 0:
            return 1.0
        return float(self.row_nnz.max() / self.row_nnz.mean())

    def tile_imbalance(self) -> float:
        """max / mean of the per-tile nonzero counts (1.0 = perfectly balanced)."""
        if self.tile_nnz is None or len(self.tile_nnz) == 0 or self.tile_nnz.mean() == 0:
            return 1.0
        return float(self.tile_nnz.max() / self.tile_nnz.mean())

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        if self.row_nnz is not None:
            out["row_nnz"] = [int(v) for v in self.row_nnz]
        if self.tile_nnz is not None:
            out["tile_nnz"] = [int(v) for v in self.tile_nnz]
        if self.tile_shape is not None:
            out["tile_shape"] = list(self.tile_shape)
        return out

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> SparsityStats:
        return cls(
            row_nnz=np.asarray(d["row_nnz"]) if "row_nnz" in d else None,
            tile_nnz=np.asarray(d["tile_nnz"]) if "tile_nnz" in d else None,
            tile_shape=tuple(d["tile_shape"]) if "tile_shape" in d else None,
        )


@dataclass(frozen=True)
class Sparsity:
    """Base of all patterns. `density` = fraction of elements that are stored / nonzero."""

    pattern: ClassVar[str] = "base"
    stats: SparsityStats | None = field(default=None, kw_only=True, compare=False, repr=False)

    @property
    def density(self) -> float:
        raise NotImplementedError

    @property
    def is_dense(self) -> bool:
        return False

    @property
    def label(self) -> str:
        return self.pattern

    def bind(self, rows: int, cols: int) -> Sparsity:
        """Resolve anything that depends on the operand's shape; raise if the shape cannot hold it."""
        return self

    def with_stats(self, stats: SparsityStats | None) -> Sparsity:
        """A copy carrying measured statistics (patterns with their own __init__ can't use replace)."""
        out = copy.copy(self)
        object.__setattr__(out, "stats", stats)
        return out

    def mask(self, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
        """A random boolean mask of this pattern (True = kept), reproducible from `seed`."""
        raise NotImplementedError

    def check(self, mask: np.ndarray) -> list[str]:
        """Which parts of `mask` break this pattern's rule (empty list = valid)."""
        raise NotImplementedError

    def is_valid(self, mask: np.ndarray) -> bool:
        return not self.check(mask)

    def to_dict(self) -> dict[str, Any]:
        d = self._params()
        d = {"pattern": self.pattern, **d}
        if self.stats is not None:
            d["stats"] = self.stats.to_dict()
        return d

    def _params(self) -> dict[str, Any]:
        return {}


def _exact_count_mask(size: int, count: int, rng: np.random.Generator) -> np.ndarray:
    flat = np.zeros(size, dtype=bool)
    flat[rng.choice(size, size=count, replace=False)] = True
    return flat


def _density_violation(mask: np.ndarray, density: float, tol: float) -> list[str]:
    actual = float(mask.mean())
    if abs(actual - density) > tol + 1.0 / mask.size:
        return [f"density {actual:.4f} differs from {density:.4f} by more than {tol}"]
    return []


@dataclass(frozen=True)
class _Fractional(Sparsity):
    """Patterns whose kept fraction is a free parameter (`density`, validated in (0, 1])."""

    density_: float = 1.0

    @property
    def density(self) -> float:
        return self.density_


@dataclass(frozen=True)
class Dense(Sparsity):
    """No zeros exploited."""

    pattern: ClassVar[str] = "dense"

    @property
    def density(self) -> float:
        return 1.0

    @property
    def is_dense(self) -> bool:
        return True

    def mask(self, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
        return np.ones(_check_shape(shape), dtype=bool)

    def check(self, mask: np.ndarray) -> list[str]:
        n_zero = int((~np.asarray(mask, bool)).sum())
        return [f"{n_zero} zero elements in a dense operand"] if n_zero else []


@dataclass(frozen=True)
class Unstructured(_Fractional):
    """Any element may be zero; `density` of them are kept."""

    pattern: ClassVar[str] = "unstructured"

    def __init__(self, density: float, *, stats: SparsityStats | None = None):
        object.__setattr__(self, "density_", _check_density(density))
        object.__setattr__(self, "stats", stats)

    @property
    def label(self) -> str:
        return f"unstructured({self.density:.3g})"

    def mask(self, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
        rows, cols = _check_shape(shape)
        rng = np.random.default_rng(seed)
        count = int(round(self.density * rows * cols))
        return _exact_count_mask(rows * cols, count, rng).reshape(rows, cols)

    def check(self, mask: np.ndarray, tol: float = 0.01) -> list[str]:
        return _density_violation(np.asarray(mask, bool), self.density, tol)

    def _params(self) -> dict[str, Any]:
        return {"density": self.density}

    def __repr__(self) -> str:
        return f"Unstructured({self.density!r})"


@dataclass(frozen=True)
class NM(Sparsity):
    """At most n nonzeros in every group of m consecutive elements along K (2:4, 1:4, 2:8, 4:8…)."""

    n: int = 2
    m: int = 4
    pattern: ClassVar[str] = "nm"

    def __post_init__(self) -> None:
        n = _check_positive_int(self.n, "n")
        m = _check_positive_int(self.m, "m")
        if n > m:
            raise bad("n:m", f"{n}:{m}", "n <= m (n kept out of every m), e.g. 2:4, 1:4, 2:8, 4:8")
        if m > 256:
            raise bad("m", m, "a group size of at most 256")

    @property
    def density(self) -> float:
        return self.n / self.m

    @property
    def is_dense(self) -> bool:
        return self.n == self.m

    @property
    def label(self) -> str:
        return f"{self.n}:{self.m}"

    def bind(self, rows: int, cols: int) -> Sparsity:
        if cols % self.m:
            raise bad("k", cols, f"a multiple of m={self.m} for {self.label} sparsity along K")
        return self

    def mask(self, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
        rows, cols = _check_shape(shape)
        self.bind(rows, cols)
        rng = np.random.default_rng(seed)
        keys = rng.random((rows, cols // self.m, self.m))
        kept = np.argsort(keys, axis=2)[:, :, : self.n]
        mask = np.zeros((rows, cols // self.m, self.m), dtype=bool)
        np.put_along_axis(mask, kept, True, axis=2)
        return mask.reshape(rows, cols)

    def check(self, mask: np.ndarray) -> list[str]:
        mask = np.asarray(mask, bool)
        rows, cols = mask.shape
        if cols % self.m:
            return [f"cols={cols} is not a multiple of m={self.m}"]
        counts = mask.reshape(rows, cols // self.m, self.m).sum(axis=2)
        bad_rows, bad_groups = np.nonzero(counts > self.n)
        return [
            f"row {r}, group {g} (cols {g * self.m}..{g * self.m + self.m - 1}): "
            f"{counts[r, g]} nonzeros > n={self.n}"
            for r, g in zip(bad_rows.tolist(), bad_groups.tolist(), strict=True)
        ]

    def _params(self) -> dict[str, Any]:
        return {"n": self.n, "m": self.m}


@dataclass(frozen=True)
class Block(_Fractional):
    """Whole bh×bw blocks are zero or kept; `density` of the blocks are kept."""

    bh: int = 1
    bw: int = 1
    pattern: ClassVar[str] = "block"

    def __init__(self, bh: int, bw: int, density: float, *, stats: SparsityStats | None = None):
        object.__setattr__(self, "bh", _check_positive_int(bh, "block[0]"))
        object.__setattr__(self, "bw", _check_positive_int(bw, "block[1]"))
        object.__setattr__(self, "density_", _check_density(density))
        object.__setattr__(self, "stats", stats)

    @property
    def label(self) -> str:
        return f"block{self.bh}x{self.bw}({self.density:.3g})"

    def bind(self, rows: int, cols: int) -> Sparsity:
        if rows % self.bh or cols % self.bw:
            raise bad("block", [self.bh, self.bw], f"block sizes that divide the operand {rows}x{cols}")
        return self

    def mask(self, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
        rows, cols = _check_shape(shape)
        self.bind(rows, cols)
        rng = np.random.default_rng(seed)
        nb = (rows // self.bh) * (cols // self.bw)
        blocks = _exact_count_mask(nb, int(round(self.density * nb)), rng)
        blocks = blocks.reshape(rows // self.bh, cols // self.bw)
        return np.kron(blocks, np.ones((self.bh, self.bw), dtype=bool)).astype(bool)

    def check(self, mask: np.ndarray) -> list[str]:
        mask = np.asarray(mask, bool)
        rows, cols = mask.shape
        if rows % self.bh or cols % self.bw:
            return [f"shape {rows}x{cols} is not divisible into {self.bh}x{self.bw} blocks"]
        b = mask.reshape(rows // self.bh, self.bh, cols // self.bw, self.bw).sum(axis=(1, 3))
        full = self.bh * self.bw
        br, bc = np.nonzero((b > 0) & (b < full))
        return [f"block ({r}, {c}) is partly zero" for r, c in zip(br.tolist(), bc.tolist(), strict=True)]

    def _params(self) -> dict[str, Any]:
        return {"block": [self.bh, self.bw], "density": self.density}

    def __repr__(self) -> str:
        return f"Block({self.bh}, {self.bw}, {self.density!r})"


@dataclass(frozen=True)
class Group(_Fractional):
    """Vector-wise sparsity: vectors of g consecutive elements along K are zero or kept."""

    g: int = 1
    pattern: ClassVar[str] = "group"

    def __init__(self, g: int, density: float, *, stats: SparsityStats | None = None):
        object.__setattr__(self, "g", _check_positive_int(g, "g"))
        object.__setattr__(self, "density_", _check_density(density))
        object.__setattr__(self, "stats", stats)

    @property
    def label(self) -> str:
        return f"group{self.g}({self.density:.3g})"

    def bind(self, rows: int, cols: int) -> Sparsity:
        if cols % self.g:
            raise bad("g", self.g, f"a vector length that divides K={cols}")
        return self

    def mask(self, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
        rows, cols = _check_shape(shape)
        return Block(1, self.g, self.density).mask((rows, cols), seed)

    def check(self, mask: np.ndarray) -> list[str]:
        return [v.replace("block", "vector") for v in Block(1, self.g, self.density).check(mask)]

    def _params(self) -> dict[str, Any]:
        return {"g": self.g, "density": self.density}

    def __repr__(self) -> str:
        return f"Group({self.g}, {self.density!r})"


@dataclass(frozen=True)
class Channel(_Fractional):
    """Whole rows (axis=0: output channels / filters) or columns (axis=1: input channels) pruned."""

    axis: int = 0
    pattern: ClassVar[str] = "channel"

    def __init__(self, density: float, axis: int = 0, *, stats: SparsityStats | None = None):
        if axis not in (0, 1):
            raise bad("axis", axis, "0 (output channels / rows of W) or 1 (input channels / cols)")
        object.__setattr__(self, "density_", _check_density(density))
        object.__setattr__(self, "axis", axis)
        object.__setattr__(self, "stats", stats)

    @property
    def label(self) -> str:
        return f"channel{self.axis}({self.density:.3g})"

    def mask(self, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
        rows, cols = _check_shape(shape)
        rng = np.random.default_rng(seed)
        size = rows if self.axis == 0 else cols
        keep = _exact_count_mask(size, max(1, int(round(self.density * size))), rng)
        return np.broadcast_to(keep[:, None] if self.axis == 0 else keep[None, :], (rows, cols)).copy()

    def check(self, mask: np.ndarray) -> list[str]:
        mask = np.asarray(mask, bool)
        along = mask.any(axis=1 - self.axis)
        whole = mask.all(axis=1 - self.axis)
        idx = np.nonzero(along & ~whole)[0]
        what = "row" if self.axis == 0 else "col"
        return [f"{what} {i} is partly zero" for i in idx.tolist()]

    def _params(self) -> dict[str, Any]:
        return {"density": self.density, "axis": self.axis}

    def __repr__(self) -> str:
        return f"Channel({self.density!r}, axis={self.axis})"


@dataclass(frozen=True)
class ConstantFanIn(Sparsity):
    """Every output row keeps exactly k of its K inputs (constant fan-in, balanced rows)."""

    k: int = 1
    fan_in: int | None = None
    pattern: ClassVar[str] = "constant_fan_in"

    def __post_init__(self) -> None:
        _check_positive_int(self.k, "k")
        if self.fan_in is not None:
            _check_positive_int(self.fan_in, "fan_in")
            if self.k > self.fan_in:
                raise bad("k", self.k, f"at most the fan-in K={self.fan_in}")

    @property
    def density(self) -> float:
        if self.fan_in is None:
            raise bad("fan_in", None, "a bound fan-in: attach the pattern to an operand first")
        return self.k / self.fan_in

    @property
    def label(self) -> str:
        return f"fanin{self.k}"

    def bind(self, rows: int, cols: int) -> Sparsity:
        if self.k > cols:
            raise bad("k", self.k, f"at most the fan-in K={cols}")
        return ConstantFanIn(self.k, cols, stats=self.stats)

    def mask(self, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
        rows, cols = _check_shape(shape)
        self.bind(rows, cols)
        rng = np.random.default_rng(seed)
        kept = np.argsort(rng.random((rows, cols)), axis=1)[:, : self.k]
        mask = np.zeros((rows, cols), dtype=bool)
        np.put_along_axis(mask, kept, True, axis=1)
        return mask

    def check(self, mask: np.ndarray) -> list[str]:
        counts = np.asarray(mask, bool).sum(axis=1)
        return [f"row {r}: {counts[r]} nonzeros > k={self.k}" for r in np.nonzero(counts > self.k)[0].tolist()]

    def _params(self) -> dict[str, Any]:
        d: dict[str, Any] = {"k": self.k}
        if self.fan_in is not None:
            d["fan_in"] = self.fan_in
        return d


@dataclass(frozen=True)
class Activation(_Fractional):
    """Dynamic (input-dependent) sparsity of an activation operand x[M, K].

    `density` = fraction of nonzero elements; `source` says how the zeros arise (relu,
    threshold à la TEAL, top-k à la Q-Sparse, predictor à la Deja Vu, moe routing).
    """

    source: str = "synthetic"
    pattern: ClassVar[str] = "activation"

    def __init__(self, density: float, source: str = "synthetic", *, stats: SparsityStats | None = None):
        if source not in ACTIVATION_SOURCES:
            raise bad("source", source, ", ".join(ACTIVATION_SOURCES))
        object.__setattr__(self, "density_", _check_density(density))
        object.__setattr__(self, "source", source)
        object.__setattr__(self, "stats", stats)

    @property
    def is_dense(self) -> bool:
        return self.density_ >= 1.0

    @property
    def label(self) -> str:
        return f"act-{self.source}({self.density:.3g})"

    def column_density(self, tokens: int) -> float:
        """Fraction of K columns nonzero in at least one of `tokens` rows (independent zeros)."""
        # union over tokens of independent Bernoulli(density) events: 1 - (1 - d)^M
        return 1.0 - (1.0 - self.density) ** max(int(tokens), 1)

    def mask(self, shape: tuple[int, int], seed: int = 0) -> np.ndarray:
        rows, cols = _check_shape(shape)
        return np.random.default_rng(seed).random((rows, cols)) < self.density

    def check(self, mask: np.ndarray, tol: float = 0.05) -> list[str]:
        return _density_violation(np.asarray(mask, bool), self.density, tol)

    def _params(self) -> dict[str, Any]:
        return {"density": self.density, "source": self.source}

    def __repr__(self) -> str:
        return f"Activation({self.density!r}, source={self.source!r})"


NAMED_NM = {"2:4": NM(2, 4), "1:4": NM(1, 4), "2:8": NM(2, 8), "4:8": NM(4, 8), "1:2": NM(1, 2)}

PATTERN_NAMES = ("dense", "n:m (e.g. 2:4)", "unstructured", "block", "group", "channel",
                 "constant_fan_in", "activation")


def _parse_nm(text: str, field_name: str) -> NM:
    parts = text.split(":")
    if len(parts) != 2 or not all(p.strip().isdigit() for p in parts):
        raise bad(field_name, text, "'n:m' with integers, e.g. '2:4'")
    return NM(int(parts[0]), int(parts[1]))


def _is_weight_field(field_name: str) -> bool:
    """'weight', 'op.weight', 'sparsity.weight[2]': a field that holds a weight operand's pattern."""
    last = field_name.rsplit(".", 1)[-1]
    return re.sub(r"\[\d+\]$", "", last) == "weight"


def parse_pattern(spec: Any, field_name: str = "pattern") -> Sparsity:
    """Build a Sparsity from a string ('dense', '2:4') or a dict ({'pattern': 'block', …}).

    The text form 'activation@0.4' is dynamic activation sparsity: a `field_name` naming a
    weight operand ('weight', 'op.weight') refuses it, naming the activation operand instead
    (workloads.apply_sparsity routes it there). The dict form is left alone: a stored
    backward-weight GEMM (dW = dYᵀ·X, weight_is_param=False) keeps the saved activation Xᵀ
    in its weight slot.
    """
    if isinstance(spec, Sparsity):
        return spec
    if spec is None:
        return Dense()
    text = spec if isinstance(spec, str) else None
    if isinstance(spec, str):
        spec = _parse_text(spec, field_name)
    if not isinstance(spec, dict):
        raise bad(field_name, spec, "a pattern name or an object with a 'pattern' field")
    d = dict(spec)
    name = d.pop("pattern", None)
    if name is None and "density" in d and set(d) <= {"density", "source", "stats"}:
        name = "activation" if "source" in d else "unstructured"
    if not isinstance(name, str):
        raise bad(f"{field_name}.pattern", name, ", ".join(PATTERN_NAMES))
    stats = SparsityStats.from_dict(d.pop("stats")) if isinstance(d.get("stats"), dict) else None
    d.pop("stats", None)
    key = name.strip().lower()
    try:
        if key == "dense":
            out: Sparsity = Dense()
        elif ":" in key:
            out = _parse_nm(key, f"{field_name}.pattern")
        elif key in ("nm", "n:m"):
            out = NM(d.pop("n"), d.pop("m"))
        elif key == "unstructured":
            out = Unstructured(_required(d, "density", field_name))
        elif key == "block":
            blk = _required(d, "block", field_name)
            if not isinstance(blk, (list, tuple)) or len(blk) != 2:
                raise bad(f"{field_name}.block", blk, "[bh, bw], two positive integers")
            out = Block(blk[0], blk[1], _required(d, "density", field_name))
        elif key in ("group", "vector"):
            out = Group(_required(d, "g", field_name), _required(d, "density", field_name))
        elif key == "channel":
            out = Channel(_required(d, "density", field_name), d.get("axis", 0))
        elif key in ("constant_fan_in", "fanin"):
            out = ConstantFanIn(_required(d, "k", field_name), d.get("fan_in"))
        elif key == "activation":
            out = Activation(_required(d, "density", field_name), d.get("source", "synthetic"))
        else:
            raise bad(f"{field_name}.pattern", name, ", ".join(PATTERN_NAMES))
    except KeyError as e:
        raise bad(f"{field_name}.{e.args[0]}", None, "a value (required for this pattern)") from None
    except ValueError as e:
        msg = str(e)
        if not msg.startswith(field_name):
            msg = f"{field_name}.{msg}"
        raise ValueError(msg) from None
    if text is not None and isinstance(out, Activation) and _is_weight_field(field_name):
        weight_names = ", ".join(p for p in PATTERN_NAMES if p != "activation")
        raise bad(field_name, text, f"a weight pattern ({weight_names}); '{text.strip()}' is activation "
                  "sparsity: give it as the activation operand (activation=…; "
                  "workloads.apply_sparsity(trace, 'activation@…') puts it there)")
    return out.with_stats(stats) if stats is not None else out


def _parse_text(text: str, field_name: str) -> dict[str, Any]:
    """Short text form: 'dense', '2:4', 'unstructured@0.1', 'block16x16@0.2', 'group8@0.25',
    'channel@0.5', 'fanin16', 'activation@0.4'."""
    name, _, dens = text.strip().lower().partition("@")
    d: dict[str, Any] = {"pattern": name}
    if dens:
        try:
            d["density"] = float(dens)
        except ValueError:
            raise bad(f"{field_name}.density", dens, "a number in (0, 1] after '@'") from None
    if name.startswith("block") and name != "block":
        dims = name[5:].split("x")
        if len(dims) != 2 or not all(x.isdigit() for x in dims):
            raise bad(f"{field_name}.block", name, "blockBHxBW@density, e.g. block16x16@0.2")
        d.update(pattern="block", block=[int(dims[0]), int(dims[1])])
    elif name.startswith("group") and name[5:].isdigit():
        d.update(pattern="group", g=int(name[5:]))
    elif name.startswith("fanin") and name[5:].isdigit():
        d.update(pattern="constant_fan_in", k=int(name[5:]))
    return d


def _required(d: dict[str, Any], key: str, field_name: str) -> Any:
    if key not in d:
        raise bad(f"{field_name}.{key}", None, "a value (required for this pattern)")
    return d[key]
