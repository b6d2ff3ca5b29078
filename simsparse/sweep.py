"""What-if sweeps: a YAML spec → points (a grid or a seeded sample) → costed in chunks → a store.

    >>> import simsparse
    >>> df = simsparse.sweep("examples/sweeps/gemm_small.yaml", out="results/")   # resumable
    >>> df = simsparse.sweep({"gemms": {"m": [1, 16], "n": 4096, "k": 4096},
    ...                       "sparsity": ["dense", "2:4"], "hardware": ["h100-sxm"]})

A spec names workloads (built-in names, trace files, HF configs with batch / seq grids) and
plain GEMM-shape grids; sparsity recipes (pattern × density grids for weights and
activations); hardware (spec names, and what-if overrides gridded with `spec.replace`);
mapper options (auto, measured or a kernel) and fidelity. See examples/sweeps/*.yaml.

Every point becomes one row with all its inputs and outputs, keyed by a stable hash of the
inputs (canonical JSON → sha256) and the simsparse version. With `out=` the rows go to a
`ResultStore` as each chunk finishes; re-running skips finished points (a point that failed,
e.g. no kernel can run it, is stored with `error` set and tried again on the next run), and a
sweep killed at any moment resumes without lost, duplicated or corrupted rows.

Execution: in-process (default), `workers=N` local processes, or `dask="tcp://host:8786"`
(or a `distributed.Client` / `LocalCluster`; its workers need simsparse installed and any trace
files of the spec readable at the same path). Points travel in chunks; within a process, op
costs are cached per (op, hardware variant, kernel) and identical ops of a trace are costed
once, so the cost model sees each distinct problem once per worker. The main process alone
writes the store.

`simsparse.sweep` is this module's `sweep` function; the module is also callable, so
`simsparse.sweep(spec)` works whichever of the two an import left on the package. For the
module's other names use `from simsparse.sweep import load_spec, points, …`.
"""

from __future__ import annotations

import functools
import hashlib
import itertools
import json
import math
import sys
import time
import types
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field
from dataclasses import replace as dc_replace
from pathlib import Path
from typing import Any, Literal

import numpy as np
import pyarrow as pa
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from simsparse.core.errors import SpecError
from simsparse.core.mapping import MAPPER_CHOICES
from simsparse.core.ops import DTYPES, MAX_DIM, Op
from simsparse.core.sparsity import Activation, Dense, Sparsity, Unstructured, parse_pattern

AS_TRACED = "as-traced"
SAMPLING_METHODS = ("grid", "random", "lhs")

# --------------------------------------------------------------------------------------------
# The spec (structure checked by pydantic; meaning checked by `_Plan`, with the field named)
# --------------------------------------------------------------------------------------------


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class GemmGrid(_Strict):
    """A grid of plain GEMM shapes y[M,N] = x[M,K]·W[N,K]ᵀ (kernel-level sweeps)."""

    m: Any
    n: Any
    k: Any
    batch: Any = 1
    dtype: Any = "fp16"


class WorkloadEntry(_Strict):
    """One workload: a built-in `name`, a `trace` file, or an `hf_config` (file or mapping)."""

    name: str | None = None
    trace: str | None = None
    hf_config: str | dict[str, Any] | None = None
    batch: Any = 1
    seq_len: Any = 128
    phase: Any = "decode"
    kv_len: Any = None
    dtype: Any = "fp16"


class SparsityGrid(_Strict):
    """Weight and activation patterns; a dict entry with lists (e.g. density: [..]) is a grid."""

    weight: list[Any] = Field(default_factory=lambda: ["dense"])
    activation: list[Any] = Field(default_factory=lambda: ["dense"])


class Sampling(_Strict):
    """grid (every combination), or a seeded sample of `n` points: random or lhs (Latin hypercube)."""

    method: Literal["grid", "random", "lhs"] = "grid"
    n: int | None = Field(default=None, gt=0)
    seed: int = 0


class SweepSpec(_Strict):
    """A what-if sweep: (workloads ∪ GEMM grids) × sparsity × hardware × mapper × fidelity."""

    name: str = "sweep"
    workloads: list[WorkloadEntry] = Field(default_factory=list)
    gemms: list[GemmGrid] = Field(default_factory=list)
    sparsity: SparsityGrid = Field(default_factory=SparsityGrid)
    hardware: list[Any]
    mapper: list[str] = Field(default_factory=lambda: ["auto"])
    fidelity: list[str] = Field(default_factory=lambda: ["analytic"])
    sampling: Sampling = Field(default_factory=Sampling)
    chunk_size: int | None = Field(default=None, gt=0)
    _base_dir: Path = PrivateAttr(default_factory=Path.cwd)  # where relative paths in the spec resolve

    @model_validator(mode="before")
    @classmethod
    def _shorthands(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError(f"got {type(data).__name__}; allowed: a mapping of sweep fields")
        d = dict(data)
        if isinstance(d.get("workloads"), (str, dict)):
            d["workloads"] = [d["workloads"]]
        if isinstance(d.get("workloads"), list):
            d["workloads"] = [{"name": w} if isinstance(w, str) else w for w in d["workloads"]]
        if isinstance(d.get("gemms"), dict):
            d["gemms"] = [d["gemms"]]
        if isinstance(d.get("sparsity"), (list, str)):
            d["sparsity"] = {"weight": d["sparsity"]}
        if isinstance(d.get("sparsity"), dict):
            s = dict(d["sparsity"])
            for f in ("weight", "activation"):
                if f in s and not isinstance(s[f], list):
                    s[f] = [s[f]]
            d["sparsity"] = s
        for f in ("hardware", "mapper", "fidelity"):
            if isinstance(d.get(f), (str, dict)):
                d[f] = [d[f]]
        return d

    @classmethod
    def from_yaml(cls, path: str | Path) -> SweepSpec:
        return load_spec(path)


_SECTION_FIELDS = {"": SweepSpec, "workloads": WorkloadEntry, "gemms": GemmGrid,
                   "sparsity": SparsityGrid, "sampling": Sampling}


def _loc_str(loc: Iterable[Any]) -> str:
    out = ""
    for p in loc:
        out += f"[{p}]" if isinstance(p, int) else (f".{p}" if out else str(p))
    return out or "(top level)"


def _format_pydantic(where: str, err: ValidationError) -> str:
    """The first problem as one line: 'file: field: got X; allowed: Y'."""
    errors = err.errors()
    # an unknown key first: it is most likely the misspelling of a missing one ('hardwre:')
    e = next((x for x in errors if x["type"] == "extra_forbidden"), errors[0])
    loc = tuple(p for p in e["loc"] if not (isinstance(p, str) and ("[" in p or p in ("str", "dict"))))
    field_s = _loc_str(loc)
    msg = e["msg"].removeprefix("Value error, ")
    if e["type"] == "extra_forbidden":
        import difflib

        model = _SECTION_FIELDS.get(str(loc[0]) if len(loc) > 1 else "", SweepSpec)
        close = difflib.get_close_matches(str(loc[-1]), list(model.model_fields), n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        return f"{where}: {field_s}: unknown field{hint}; allowed: {', '.join(model.model_fields)}"
    if e["type"] == "missing":
        return f"{where}: {field_s}: missing; this field is required"
    if msg.startswith("got "):
        return f"{where}: {field_s}: {msg}"
    allowed = msg.removeprefix("Input should be ").removeprefix("input should be ")
    return f"{where}: {field_s}: got {e.get('input')!r}; allowed: {allowed}"


def load_spec(spec: str | Path | dict[str, Any] | SweepSpec) -> SweepSpec:
    """A SweepSpec from a YAML file, a mapping or a SweepSpec; raise SpecError naming the field."""
    if isinstance(spec, SweepSpec):
        return spec
    where, base_dir = "sweep spec", Path.cwd()
    if isinstance(spec, (str, Path)):
        path = Path(spec)
        where, base_dir = path.name, path.resolve().parent
        from hwmodels.spec import read_yaml

        data = read_yaml(path, "a readable sweep .yaml file")
    else:
        data = spec
    try:
        out = SweepSpec.model_validate(data)
    except ValidationError as e:
        raise SpecError(_format_pydantic(where, e)) from None
    out._base_dir = base_dir
    try:
        _Plan(out)  # check the meaning now, so a bad spec fails before any work starts
    except SpecError as e:
        raise SpecError(f"{where}: {e}") from None
    return out


# --------------------------------------------------------------------------------------------
# Values, patterns and hardware variants
# --------------------------------------------------------------------------------------------


def _values(v: Any, where: str, kind: str = "int") -> list[Any]:
    """A scalar, a list, or a range {min, max, steps, log} → list of values, checked."""
    if isinstance(v, dict):
        allowed = {"min", "max", "steps", "log", "multiple_of"}
        if set(v) - allowed or not {"min", "max", "steps"} <= set(v):
            raise SpecError(f"{where}: got {v!r}; allowed: a value, a list, or "
                            "{min, max, steps, log, multiple_of}")
        lo, hi, steps, log = v["min"], v["max"], v["steps"], bool(v.get("log", False))
        if not all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in (lo, hi)) or lo > hi \
                or (log and lo <= 0) or not isinstance(steps, int) or steps < 1:
            raise SpecError(f"{where}: got {v!r}; allowed: min <= max (both > 0 with log), steps >= 1")
        arr = np.geomspace(lo, hi, steps) if log else np.linspace(lo, hi, steps)
        vals: list[Any] = [float(x) for x in arr]
        if kind == "int":
            q = v.get("multiple_of", 1)
            if isinstance(q, bool) or not isinstance(q, int) or q < 1:
                raise SpecError(f"{where}.multiple_of: got {q!r}; allowed: a positive integer")
            vals = list(dict.fromkeys(max(q, int(round(x / q)) * q) for x in vals))
    elif isinstance(v, list):
        if not v:
            raise SpecError(f"{where}: got []; allowed: a non-empty list")
        vals = list(v)
    else:
        vals = [v]
    for x in vals:
        if kind == "int":
            if isinstance(x, float) and x.is_integer():
                x = int(x)
            if isinstance(x, bool) or not isinstance(x, int) or x <= 0 or x > MAX_DIM:
                raise SpecError(f"{where}: got {x!r}; allowed: positive integers up to 2**40")
        elif kind == "dtype" and x not in DTYPES:
            raise SpecError(f"{where}: got {x!r}; allowed: {', '.join(DTYPES)}")
        elif kind == "phase" and x not in ("prefill", "decode"):
            raise SpecError(f"{where}: got {x!r}; allowed: prefill, decode")
        elif kind == "number" and (isinstance(x, bool) or not isinstance(x, (int, float))):
            raise SpecError(f"{where}: got {x!r}; allowed: numbers")
    if kind == "int":
        vals = [int(x) for x in vals]
    uniq: dict[str, Any] = {}
    for x in vals:
        uniq.setdefault(json.dumps(x, sort_keys=True, default=str), x)
    return list(uniq.values())


def _canon_sparsity(s: Sparsity) -> dict[str, Any]:
    d = s.to_dict()
    d.pop("stats", None)
    return d


def pattern_text(d: dict[str, Any] | Sparsity) -> str:
    """Short text form of a pattern ('dense', '2:4', 'unstructured@0.1', 'block16x16@0.2'…)."""
    if isinstance(d, Sparsity):
        d = _canon_sparsity(d)
    p = d.get("pattern")
    dens = d.get("density")
    if p in ("dense", AS_TRACED):
        return p
    if p == "nm":
        return f"{d['n']}:{d['m']}"
    if p == "unstructured":
        return f"unstructured@{dens!r}"
    if p == "block":
        return f"block{d['block'][0]}x{d['block'][1]}@{dens!r}"
    if p == "group":
        return f"group{d['g']}@{dens!r}"
    if p == "channel" and d.get("axis", 0) == 0:
        return f"channel@{dens!r}"
    if p == "constant_fan_in" and d.get("fan_in") is None:
        return f"fanin{d['k']}"
    if p == "activation":
        src = d.get("source", "synthetic")
        return f"activation@{dens!r}" if src == "synthetic" else f"{src}@{dens!r}"
    return json.dumps(d, sort_keys=True, separators=(",", ":"))


def _is_pair(v: Any) -> bool:
    return isinstance(v, list) and len(v) == 2 and all(isinstance(x, int) for x in v)


def _expand_patterns(entries: list[Any], where: str) -> list[dict[str, Any]]:
    """Pattern entries (text, numbers for activations, or dicts with list-valued grids) → canonical dicts."""
    is_act = where.endswith("activation")
    out: list[dict[str, Any]] = []
    for i, e in enumerate(entries):
        w = f"{where}[{i}]"
        if isinstance(e, str) and e.strip().lower() == AS_TRACED:
            out.append({"pattern": AS_TRACED})
            continue
        if is_act and isinstance(e, (int, float)) and not isinstance(e, bool):
            e = {"pattern": "activation", "density": e}
        if isinstance(e, dict):
            grid_keys = [k for k, v in e.items()
                         if (isinstance(v, list) and not (k == "block" and _is_pair(v))) or
                         (isinstance(v, dict) and k != "stats")]
            axes = []
            for k in grid_keys:
                vals = _values(e[k], f"{w}.{k}", "number" if k == "density" else "any")
                axes.append([(k, v) for v in vals])
            combos = [dict(e, **dict(c)) for c in itertools.product(*axes)] if axes else [e]
        elif isinstance(e, str):
            combos = [e]
        else:
            raise SpecError(f"{w}: got {e!r}; allowed: a pattern such as dense, 2:4, unstructured@0.1, "
                            "block16x16@0.2, or a mapping {pattern: …, density: [..]}")
        for c in combos:
            if is_act and isinstance(c, dict) and "pattern" not in c:
                c = {"pattern": "activation", **c}
            try:
                s = parse_pattern(c, w)
            except ValueError as err:
                msg = str(err)
                raise SpecError(msg if msg.startswith(w) else f"{w}: {msg}") from None
            if is_act and isinstance(s, Unstructured):
                s = Activation(s.density)
            d = _canon_sparsity(s)
            if d not in out:
                out.append(d)
    if not out:
        raise SpecError(f"{where}: got []; allowed: at least one pattern")
    return out


_NOT_OVERRIDABLE = {"name", "hw_class", "display_name", "vendor", "notes", "aliases", "sources", "arch"}


def _hw_variants(entries: list[Any], base_dir: Path) -> list[dict[str, Any]]:
    """hardware entries (names, spec files, {name: {field: values}}) → variants (one spec each)."""
    import hwmodels

    if not entries:
        raise SpecError("hardware: got []; allowed: at least one spec name, e.g. h100-sxm")
    variants: list[dict[str, Any]] = []
    for i, e in enumerate(entries):
        w = f"hardware[{i}]"
        if isinstance(e, str):
            items: list[tuple[str, Any]] = [(e, None)]
        elif isinstance(e, dict) and e:
            items = list(e.items())
        else:
            raise SpecError(f"{w}: got {e!r}; allowed: a spec name, or {{name: {{field: [values]}}}}")
        for name, ov in items:
            ref = _resolve_hw(str(name), base_dir, w)
            spec = hwmodels.load(ref)
            if ov is None:
                ov = {}
            if not isinstance(ov, dict):
                raise SpecError(f"{w}.{name}: got {ov!r}; allowed: a mapping of spec fields to values")
            fields = type(spec).model_fields
            allowed = [f for f in fields if f not in _NOT_OVERRIDABLE]
            axes = []
            for fname, vals in ov.items():
                top, _, sub = str(fname).partition(".")
                if top not in allowed or (sub and not isinstance(getattr(spec, top), dict)):
                    raise SpecError(f"{w}.{name}.{fname}: unknown override field; allowed: {', '.join(allowed)}"
                                    " (dict fields as field.key, e.g. efficiency.hbm_eff)")
                axes.append([(fname, v) for v in _values(vals, f"{w}.{name}.{fname}", "any")])
            for combo in itertools.product(*axes):
                overrides = dict(combo)
                try:
                    built = _apply_overrides(spec, overrides)
                except SpecError:
                    raise SpecError(_override_error(spec, overrides, f"{w}.{name}")) from None
                variants.append(_variant(ref, overrides, built))
    uniq: dict[str, dict[str, Any]] = {}
    for v in variants:
        uniq.setdefault(v["hw_variant"] + v["hw_fp"], v)
    return list(uniq.values())


def _override_error(spec: Any, overrides: dict[str, Any], where: str) -> str:
    """The first field of a what-if that the spec schema refuses, as 'where.field: got X; allowed: Y'."""
    for fname, v in overrides.items():
        try:
            _apply_overrides(spec, {fname: v})
        except SpecError as err:
            reason = str(err).rsplit(": ", 1)[-1]
            reason = reason.removeprefix("Input should be ").removeprefix("Value error, ")
            return f"{where}.{fname}: got {v!r}; allowed: {reason}"
    return f"{where}: got {overrides!r}; allowed: values the {spec.name} schema accepts together"


def _resolve_hw(name: str, base_dir: Path, where: str) -> str:
    import hwmodels

    if name.endswith((".yaml", ".yml")) or "/" in name:
        p = Path(name)
        if not p.is_absolute() and (base_dir / p).exists():
            p = base_dir / p
        if not p.exists():
            raise SpecError(f"{where}: got {name!r}; allowed: an existing spec file, or one of "
                            f"{', '.join(hwmodels.list())}")
        hwmodels.load(str(p.resolve()))  # validates (SpecError names the file and field)
        return str(p.resolve())
    try:
        hwmodels.load(name)
    except SpecError as err:
        import difflib

        close = difflib.get_close_matches(name.lower(), hwmodels.list(), n=2, cutoff=0.4)
        hint = f" (did you mean {', '.join(close)}?)" if close else ""
        if "unknown name" in str(err):
            raise SpecError(f"{where}: got {name!r}{hint}; allowed: {', '.join(hwmodels.list())} "
                            "or a spec .yaml file") from None
        raise
    return name


def _apply_overrides(spec: Any, overrides: dict[str, Any]) -> Any:
    if not overrides:
        return spec
    changes: dict[str, Any] = {}
    for fname, v in overrides.items():
        top, _, sub = fname.partition(".")
        if sub:
            changes.setdefault(top, dict(getattr(spec, top)))[sub] = v
        else:
            changes[top] = v
    return spec.replace(**changes)


def _variant(ref: str, overrides: dict[str, Any], spec: Any) -> dict[str, Any]:
    name = Path(ref).stem if ref.endswith((".yaml", ".yml")) else ref
    label = name + ("[" + ",".join(f"{k}={v}" for k, v in overrides.items()) + "]" if overrides else "")
    fp = hashlib.sha256(json.dumps(spec.model_dump(), sort_keys=True, default=str).encode()).hexdigest()[:12]
    # _hw_ref (how to load it: a name or an absolute path) is payload; hw_fp identifies the spec
    return {"hardware": name, "_hw_ref": ref, "overrides": overrides, "hw_variant": label, "hw_fp": fp}


# --------------------------------------------------------------------------------------------
# Planning: the spec's points, each with its canonical inputs and key
# --------------------------------------------------------------------------------------------


@functools.lru_cache(maxsize=1)
def _version() -> str:
    """simsparse version + a fingerprint of the model code, so a changed model never reuses
    stored results computed by the old one."""
    from pathlib import Path

    import simsparse

    root = Path(simsparse.__file__).resolve().parent.parent
    h = hashlib.sha256()
    for pkg in ("simsparse/core", "hwmodels", "mappers", "workloads"):
        for f in sorted((root / pkg).rglob("*.py")) + sorted((root / pkg).rglob("*.yaml")):
            h.update(f.relative_to(root).as_posix().encode())
            h.update(f.read_bytes())
    return f"{simsparse.__version__}+{h.hexdigest()[:12]}"


def _canon(v: Any) -> str:
    """Canonical JSON: sorted keys, no spaces (what the key hashes)."""
    return json.dumps(v, sort_keys=True, separators=(",", ":"), default=str)


def point_key(inputs: dict[str, Any], version: str | None = None) -> str:
    """Stable hash of a point's inputs (fields starting with '_' excluded) and the simsparse version:
    sha256 of the canonical JSON, first 32 hex digits."""
    canon = {k: v for k, v in inputs.items() if not k.startswith("_") and k != "key"}
    canon["simsparse_version"] = version or _version()
    return hashlib.sha256(_canon(canon).encode()).hexdigest()[:32]


@dataclass
class _Block:
    """One product of axes (a GEMM grid or one workload entry) × the global axes."""

    base: dict[str, Any]
    axes: list[tuple[str, list[Any]]]
    sizes: list[int] = field(init=False)

    def __post_init__(self) -> None:
        self.sizes = [len(v) for _, v in self.axes]
        # point_key's canonical JSON, assembled from pieces computed once per axis value: every
        # input name gets a slot in sorted order, every axis value knows its (slot, JSON) pairs
        base_json = {k: _canon(v) for k, v in self.base.items() if not k.startswith("_")}
        axis_json = [[{k: _canon(x) for k, x in (v.items() if name == "hw" else [(name, v)])
                       if not k.startswith("_")} for v in vals] for name, vals in self.axes]
        names = sorted(set(base_json) | {k for per in axis_json for d in per for k in d} |
                       {"simsparse_version"})
        slot = {k: j for j, k in enumerate(names)}
        self._prefix = [_canon(k) + ":" for k in names]
        self._base_slots = [(slot[k], v) for k, v in base_json.items()]
        self._axis_slots = [[[(slot[k], v) for k, v in d.items()] for d in per] for per in axis_json]
        self._version_slot = slot["simsparse_version"]

    def key(self, idx: Iterable[int], version_json: str) -> str:
        """point_key(self.point(idx), version), from the precomputed canonical pieces."""
        vals: list[str | None] = [None] * len(self._prefix)
        for j, v in self._base_slots:
            vals[j] = v
        for per, i in zip(self._axis_slots, idx, strict=True):
            for j, v in per[i]:
                vals[j] = v
        vals[self._version_slot] = version_json
        blob = "{" + ",".join(p + v for p, v in zip(self._prefix, vals, strict=True) if v is not None) + "}"
        return hashlib.sha256(blob.encode()).hexdigest()[:32]

    @property
    def size(self) -> int:
        return math.prod(self.sizes)

    def point(self, idx: Iterable[int]) -> dict[str, Any]:
        p = dict(self.base)
        for (name, vals), i in zip(self.axes, idx, strict=True):
            v = vals[i]
            if name == "hw":
                p.update(v)
            else:
                p[name] = v
        return p

    def all_indices(self) -> Iterator[tuple[int, ...]]:
        return itertools.product(*(range(s) for s in self.sizes))

    def unravel(self, flat: int) -> tuple[int, ...]:
        return tuple(int(i) for i in np.unravel_index(flat, self.sizes)) if self.sizes else ()


def _file_fp(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()[:16]


class _Plan:
    """The validated, expanded spec: blocks of axes, and the points they define."""

    def __init__(self, spec: SweepSpec):
        from simsparse.api import FIDELITIES

        self.spec = spec
        base_dir = spec._base_dir
        if not spec.workloads and not spec.gemms:
            raise SpecError("workloads/gemms: got neither; allowed: at least one workload or GEMM grid")
        weights = _expand_patterns(spec.sparsity.weight, "sparsity.weight")
        acts = _expand_patterns(spec.sparsity.activation, "sparsity.activation")
        hws = _hw_variants(spec.hardware, base_dir)
        mappers_ = self._mappers(spec.mapper, hws)
        for i, f in enumerate(spec.fidelity):
            if f not in FIDELITIES:
                raise SpecError(f"fidelity[{i}]: got {f!r}; allowed: {', '.join(FIDELITIES)}")
        if spec.sampling.method != "grid" and spec.sampling.n is None:
            raise SpecError(f"sampling.n: missing; allowed: a positive number of points for "
                            f"method {spec.sampling.method}")
        tail = [("weight", weights), ("activation", acts), ("hw", hws), ("mapper", mappers_),
                ("fidelity", list(dict.fromkeys(spec.fidelity)))]
        self.blocks: list[_Block] = []
        for i, g in enumerate(spec.gemms):
            w = f"gemms[{i}]"
            axes = [(f, _values(getattr(g, f), f"{w}.{f}", "int")) for f in ("m", "n", "k", "batch")]
            axes.append(("dtype", _values(g.dtype, f"{w}.dtype", "dtype")))
            self.blocks.append(_Block({"source": "gemm"}, axes + tail))
        for i, wl in enumerate(spec.workloads):
            self.blocks.append(self._workload_block(wl, f"workloads[{i}]", base_dir, tail))

    @staticmethod
    def _mappers(names: list[str], hws: list[dict[str, Any]]) -> list[str]:
        """The mapper axis; a kernel no listed machine offers is refused (a machine of another class
        than the kernel's gets an error row for it: `_Cache.best`)."""
        import hwmodels

        offered: dict[str, None] = {}
        for v in hws:
            offered.update(dict.fromkeys(hwmodels.kernels(hwmodels.load(v["_hw_ref"]))))
        for i, m in enumerate(names):
            if m not in MAPPER_CHOICES and m not in offered:
                on = ", ".join(dict.fromkeys(v["hardware"] for v in hws))
                raise SpecError(f"mapper[{i}]: got {m!r}; allowed with hardware {on}: "
                                f"{', '.join(MAPPER_CHOICES)}, {', '.join(offered)}")
        return list(dict.fromkeys(names))

    @staticmethod
    def _workload_block(wl: WorkloadEntry, w: str, base_dir: Path, tail: list) -> _Block:
        import workloads
        from simsparse.core.ops import Trace

        given = [f for f in ("name", "trace", "hf_config") if getattr(wl, f) is not None]
        if len(given) != 1:
            raise SpecError(f"{w}: got {given or 'none'} of name/trace/hf_config; allowed: exactly one")
        if wl.trace is not None:
            extra = sorted(wl.model_fields_set & {"batch", "seq_len", "phase", "kv_len", "dtype"})
            if extra:
                raise SpecError(f"{w}.{extra[0]}: not used with a trace file (the trace fixes its shapes); "
                                "allowed: name, hf_config entries take batch/seq_len/phase/kv_len/dtype")
            p = Path(wl.trace)
            if not p.is_absolute() and (base_dir / p).exists():
                p = base_dir / p
            try:
                t = Trace.load(p)
            except ValueError as err:
                raise SpecError(f"{w}.trace: {err}") from None
            prov = t.provenance
            base = {"source": "workload", "workload": t.name, "workload_fp": _file_fp(p),
                    "batch": prov.get("batch"), "seq_len": prov.get("seq_len"), "phase": prov.get("phase"),
                    "kv_len": prov.get("kv_len"), "dtype": prov.get("dtype"),
                    "_payload": {"kind": "trace", "ref": str(p.resolve())}}
            return _Block(base, list(tail))
        if wl.name is not None:
            if wl.name not in workloads.names():
                raise SpecError(f"{w}.name: got {wl.name!r}; allowed: {', '.join(workloads.names())} "
                                "(or trace: / hf_config:)")
            base = {"source": "workload", "workload": wl.name, "workload_fp": None,
                    "_payload": {"kind": "name", "ref": wl.name}}
        else:
            from workloads.hf import load_config

            cfg = wl.hf_config
            if isinstance(cfg, str):
                p = Path(cfg)
                if not p.is_absolute() and (base_dir / p).exists():
                    p = base_dir / p
                if p.suffix == ".json" or p.exists():
                    try:
                        cfg = json.loads(p.read_text())
                    except (OSError, json.JSONDecodeError) as err:
                        raise SpecError(f"{w}.hf_config: got {wl.hf_config!r}; allowed: a readable "
                                        f"config.json ({err})") from None
            try:
                name, cfg_d = load_config(cfg)
                workloads.hf(cfg_d, batch=1, seq_len=1)
            except (KeyError, TypeError, ValueError) as err:
                raise SpecError(f"{w}.hf_config: got an unusable config ({type(err).__name__}: {err}); "
                                "allowed: a HF config with hidden_size, num_attention_heads, "
                                "num_hidden_layers, vocab_size…") from None
            fp = hashlib.sha256(json.dumps(cfg_d, sort_keys=True, default=str).encode()).hexdigest()[:16]
            base = {"source": "workload", "workload": name, "workload_fp": fp,
                    "_payload": {"kind": "hf", "ref": cfg_d}}
        axes = [("batch", _values(wl.batch, f"{w}.batch", "int")),
                ("seq_len", _values(wl.seq_len, f"{w}.seq_len", "int")),
                ("phase", _values(wl.phase, f"{w}.phase", "phase")),
                ("kv_len", [None] if wl.kv_len is None else _values(wl.kv_len, f"{w}.kv_len", "int")),
                ("dtype", _values(wl.dtype, f"{w}.dtype", "dtype"))]
        return _Block(base, axes + tail)

    @property
    def size(self) -> int:
        """Points in the full grid (before sampling)."""
        return sum(b.size for b in self.blocks)

    def _indices(self) -> Iterator[tuple[_Block, tuple[int, ...]]]:
        s = self.spec.sampling
        if s.method == "grid":
            for b in self.blocks:
                for idx in b.all_indices():
                    yield b, idx
            return
        n = min(int(s.n or 0), self.size)
        rng = np.random.default_rng(s.seed)
        if s.method == "random":
            flat = np.sort(rng.choice(self.size, size=n, replace=False))
            offsets = np.cumsum([0] + [b.size for b in self.blocks])
            for f in flat.tolist():
                bi = int(np.searchsorted(offsets, f, side="right") - 1)
                yield self.blocks[bi], self.blocks[bi].unravel(f - int(offsets[bi]))
            return
        from scipy.stats import qmc

        # Latin hypercube per block, points shared out in proportion to block sizes
        shares = np.array([b.size for b in self.blocks], dtype=float)
        counts = np.floor(shares / shares.sum() * n).astype(int)
        for i in np.argsort(-(shares / shares.sum() * n - counts))[: n - counts.sum()]:
            counts[i] += 1
        for b, c in zip(self.blocks, counts.tolist(), strict=True):
            if c <= 0:
                continue
            u = qmc.LatinHypercube(d=len(b.sizes), rng=rng).random(c)
            idx = np.minimum((u * np.asarray(b.sizes)).astype(int), np.asarray(b.sizes) - 1)
            for row in idx.tolist():
                yield b, tuple(row)

    def points(self) -> list[dict[str, Any]]:
        """The points of the sweep (inputs + 'key'), unique by key, in a stable order."""
        version_json = _canon(_version())
        seen: set[str] = set()
        out = []
        for b, idx in self._indices():
            p = b.point(idx)
            p["key"] = k = b.key(idx, version_json)
            if k not in seen:
                seen.add(k)
                out.append(p)
        return out


def points(spec: str | Path | dict[str, Any] | SweepSpec) -> list[dict[str, Any]]:
    """The points a spec defines (each a dict of inputs with its 'key'), without running them."""
    return _Plan(load_spec(spec)).points()


# --------------------------------------------------------------------------------------------
# Evaluation (runs in workers): chunk of points → Arrow table of rows
# --------------------------------------------------------------------------------------------

INT_COLUMNS = ("m", "n", "k", "batch", "seq_len", "kv_len", "tokens", "n_ops")
STR_COLUMNS = ("key", "simsparse_version", "source", "workload", "workload_fp", "phase", "dtype", "weight",
               "activation", "hardware", "hw_variant", "hw_fp", "overrides", "mapper", "fidelity",
               "kernel", "mapping", "bound", "error")


class _Evaluator:
    """Per-process caches: specs, patterns, traces, and (op, hardware variant, kernel) → cost."""

    MAX_COSTS = 500_000

    def __init__(self) -> None:
        self.specs: dict[str, Any] = {}
        self.patterns: dict[str, Sparsity] = {}
        self.traces: dict[str, Any] = {}
        self.trace_ops: dict[tuple[str, str, str], list[tuple[Op, str, int]]] = {}
        # (op, its meta as JSON, hardware variant, kernel) → (mapping, cost); Op equality ignores
        # `meta`, which a model may read (e.g. MoE expert_tokens), so it is part of the key
        self.costs: dict[tuple[Op, str, str, str | None], tuple[Any, Any]] = {}
        self.hits = 0
        self.misses = 0
        self._memo: dict[int, tuple[Any, Any]] = {}

    def memo(self, obj: Any, fn: Any) -> Any:
        """fn(obj), computed once per object of the current chunk (points share their axis values)."""
        hit = self._memo.get(id(obj))
        if hit is None:
            hit = self._memo[id(obj)] = (obj, fn(obj))  # holding obj keeps its id unique meanwhile
        return hit[1]

    def spec(self, p: dict[str, Any]) -> tuple[Any, str]:
        sid = p["_hw_ref"] + self.memo(p["overrides"], lambda o: json.dumps(o, sort_keys=True))
        s = self.specs.get(sid)
        if s is None:
            import hwmodels

            s = self.specs[sid] = _apply_overrides(hwmodels.load(p["_hw_ref"]), p["overrides"])
        return s, sid

    def pattern(self, d: dict[str, Any]) -> Sparsity | None:
        if d["pattern"] == AS_TRACED:
            return None
        ck = self.memo(d, lambda o: json.dumps(o, sort_keys=True))
        s = self.patterns.get(ck)
        if s is None:
            s = self.patterns[ck] = parse_pattern(d)
        return s

    def best(self, op: Op, meta: str, spec: Any, sid: str, kernel: str | None,
             measured_only: bool = False) -> tuple[Any, Any]:
        ck = (op, meta, sid, kernel, measured_only)
        hit = self.costs.get(ck)
        if hit is not None:
            self.hits += 1
            return hit
        import hwmodels
        import mappers

        use = kernel
        if use is not None:
            k = hwmodels.kernels(spec).get(use)
            if k is None:  # a kernel of another class: refused, as api.simulate does, never replaced
                raise SpecError(f"mapper: got {use!r}; allowed on {spec.name}: {', '.join(MAPPER_CHOICES)}, "
                                f"{', '.join(hwmodels.kernels(spec))}")
            if k.why_not(op, spec) is not None:  # forced kernel illegal for this op: mapper picks
                return self.best(op, meta, spec, sid, None)
        self.misses += 1
        hit = mappers.best(op, spec, kernel=use, measured_only=measured_only)
        if len(self.costs) >= self.MAX_COSTS:
            self.costs.clear()
        self.costs[ck] = hit
        return hit

    def ops(self, p: dict[str, Any]) -> list[tuple[Op, str, int]]:
        """The distinct ops of the point's problem: (op, meta JSON, multiplicity)."""
        w, a = self.pattern(p["weight"]), self.pattern(p["activation"])
        if p["source"] == "gemm":
            op = Op("gemm", p["m"], p["n"], p["k"], p["batch"], p["dtype"], "fwd",
                    w if w is not None else Dense(), a if a is not None else Dense(), "")
            return [(op, "", 1)]
        wkey = json.dumps({k: p.get(k) for k in ("workload", "workload_fp", "batch", "seq_len", "phase",
                                                  "kv_len", "dtype")}, sort_keys=True, default=str)
        tk = (wkey, json.dumps(p["weight"], sort_keys=True), json.dumps(p["activation"], sort_keys=True))
        hit = self.trace_ops.get(tk)
        if hit is not None:
            return hit
        import workloads

        trace = self.traces.get(wkey)
        if trace is None:
            trace = self.traces[wkey] = self._trace(p)
        if w is not None or a is not None:
            trace = workloads.apply_sparsity(trace, w, a)
        counts: dict[tuple[Op, str], int] = {}
        for op in trace:  # identical ops (same shapes, patterns, meta) are costed once
            k = (dc_replace(op, name=""), _canon(op.meta) if op.meta else "")
            counts[k] = counts.get(k, 0) + 1
        self.trace_ops[tk] = out = [(op, meta, n) for (op, meta), n in counts.items()]
        return out

    @staticmethod
    def _trace(p: dict[str, Any]) -> Any:
        import workloads
        from simsparse.core.ops import Trace

        pay = p["_payload"]
        if pay["kind"] == "trace":
            return Trace.load(pay["ref"])
        kw = {"batch": p["batch"], "seq_len": p["seq_len"], "phase": p["phase"], "kv_len": p["kv_len"],
              "dtype": p["dtype"]}
        if pay["kind"] == "name":
            return workloads.get(pay["ref"], **kw)
        return workloads.hf(pay["ref"], **kw)

    def row(self, p: dict[str, Any]) -> dict[str, Any]:
        """One point → its row: inputs flattened, then outputs (or `error`)."""
        import hwmodels

        r: dict[str, Any] = {k: v for k, v in p.items() if not k.startswith("_")}
        r["weight"], r["weight_density"] = self.memo(p["weight"], _text_density)
        r["activation"], r["activation_density"] = self.memo(p["activation"], _text_density)
        r["overrides"] = self.memo(p["overrides"], lambda o: json.dumps(o, sort_keys=True) if o else "")
        for f, v in p["overrides"].items():
            r[f"hw_{f.replace('.', '_')}"] = v
        if p["source"] == "gemm":
            r["tokens"] = p["m"]
        elif p.get("phase") is not None and p.get("batch") is not None:
            r["tokens"] = p["batch"] * (p["seq_len"] if p["phase"] == "prefill" else 1)
        r["error"] = None
        try:
            spec, sid = self.spec(p)
            kernel = None if p["mapper"] in MAPPER_CHOICES else p["mapper"]
            only = p["mapper"] == "measured"
            results = [(self.best(op, meta, spec, sid, kernel, only), n, op) for op, meta, n in self.ops(p)]
        except Exception as e:  # noqa: BLE001 — one bad point must not sink the sweep: record why
            r["error"] = f"{type(e).__name__}: {e}" if str(e) else type(e).__name__
            return r
        if len(results) == 1 and results[0][1] == 1:
            (mapping, cost), _, op = results[0]
            r.update(t_s=cost.t_s, cycles=cost.cycles, energy_j=cost.energy_j, flops=op.flops,
                     useful_flops=op.useful_flops, executed_flops=cost.flops, bound=cost.bound, utilisation=cost.utilisation,
                     kernel=mapping.kernel, mapping=mapping.describe(), n_ops=1,
                     measured_share=float(hwmodels.measured(op, mapping, spec)))
            total_bytes = 0.0
            for lvl, nb in cost.bytes_by_level.items():
                r[f"bytes_{lvl}"] = nb
                total_bytes += nb
            r["bytes_total"] = total_bytes
        else:
            from simsparse.api import aggregate

            agg = aggregate(((op, mapping, cost, n) for (mapping, cost), n, op in results), spec)
            r.update(t_s=agg["t_s"], cycles=agg["cycles"], energy_j=agg["energy_j"], flops=agg["flops"],
                     useful_flops=agg["useful_flops"], executed_flops=agg["executed_flops"], bound=agg["bound"], utilisation=agg["utilisation"],
                     kernel=agg["kernel"], mapping="", n_ops=agg["n_ops"], measured_share=agg["measured_share"])
            for lvl, nb in agg["bytes_by_level"].items():
                r[f"bytes_{lvl}"] = nb
            r["bytes_total"] = sum(agg["bytes_by_level"].values())
        r["tflops_per_s"] = r["useful_flops"] / r["t_s"] / 1e12 if r["t_s"] else 0.0  # as api.aggregate
        return r


def _text_density(d: dict[str, Any]) -> tuple[str, float | None]:
    return pattern_text(d), _density(d)


def _density(d: dict[str, Any]) -> float | None:
    if d["pattern"] == "dense":
        return 1.0
    if d["pattern"] == "nm":
        return d["n"] / d["m"]
    if "density" in d:
        return float(d["density"])
    return None


_EVALUATOR: _Evaluator | None = None


def _evaluator() -> _Evaluator:
    global _EVALUATOR
    if _EVALUATOR is None:
        _EVALUATOR = _Evaluator()
    return _EVALUATOR


def rows_to_table(rows: list[dict[str, Any]]) -> pa.Table:
    """Rows → Arrow table with fixed column types (ints, strings, else float64)."""
    names: dict[str, None] = {}
    for r in rows:
        for k in r:
            names.setdefault(k, None)
    cols = {}
    for name in names:
        vals = [r.get(name) for r in rows]
        if name in INT_COLUMNS:
            typ = pa.int64()
        elif name in STR_COLUMNS:
            typ = pa.string()
        else:
            typ = pa.float64()
        cols[name] = pa.array(vals, type=typ, from_pandas=True)
    return pa.table(cols)


def evaluate_chunk(chunk: list[dict[str, Any]]) -> pa.Table:
    """Cost one chunk of points (in whichever process runs it) → Arrow table, one row per point."""
    ev = _evaluator()
    ev._memo.clear()
    try:
        return rows_to_table([ev.row(p) for p in chunk])
    finally:
        ev._memo.clear()


# --------------------------------------------------------------------------------------------
# Execution: in-process, local processes, or Dask; finished chunks written as they arrive
# --------------------------------------------------------------------------------------------


def _chunks(items: list[Any], size: int) -> list[list[Any]]:
    return [items[i:i + size] for i in range(0, len(items), size)]


def _default_chunk_size(n: int, workers: int) -> int:
    if workers <= 1:
        return max(16, min(1024, n // 20 or 1))
    return max(16, min(2048, n // (workers * 8) or 1))


class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def _progress(total: int, enabled: bool, skipped: int) -> Any:
    """A tqdm bar on stderr (points, points/s, ETA), or nothing when disabled."""
    if not enabled:
        return _NoBar()
    from tqdm import tqdm

    bar = tqdm(total=total, unit="pt", dynamic_ncols=True, smoothing=0.05, desc="sweep", file=sys.stderr,
               mininterval=0.5)
    if skipped:
        bar.set_postfix_str(f"{skipped} already done")
    return bar


def _run_inprocess(chunks: list[list[dict]]) -> Iterator[tuple[int, pa.Table]]:
    for i, c in enumerate(chunks):
        yield i, evaluate_chunk(c)


def _exit_with_parent(parent_pid: int) -> None:
    """Worker initializer: leave when the sweep process is gone (e.g. SIGKILLed), never linger."""
    import os
    import threading

    def watch() -> None:
        while True:
            time.sleep(0.5)
            if os.getppid() != parent_pid:
                os._exit(0)

    threading.Thread(target=watch, daemon=True, name="simsparse-parent-watch").start()


def _run_processes(chunks: list[list[dict]], workers: int) -> Iterator[tuple[int, pa.Table]]:
    import multiprocessing as mp
    import os
    from concurrent.futures import FIRST_COMPLETED, ProcessPoolExecutor, wait

    ctx = mp.get_context("fork" if "fork" in mp.get_all_start_methods() else "spawn")
    with ProcessPoolExecutor(max_workers=workers, mp_context=ctx, initializer=_exit_with_parent,
                             initargs=(os.getpid(),)) as ex:
        todo = iter(enumerate(chunks))
        pending: dict[Any, int] = {}
        try:
            for i, c in itertools.islice(todo, 2 * workers):
                pending[ex.submit(evaluate_chunk, c)] = i
            while pending:
                done, _ = wait(pending, return_when=FIRST_COMPLETED)
                for fut in done:
                    i = pending.pop(fut)
                    nxt = next(todo, None)
                    if nxt is not None:
                        pending[ex.submit(evaluate_chunk, nxt[1])] = nxt[0]
                    yield i, fut.result()
        except BaseException:
            ex.shutdown(wait=False, cancel_futures=True)
            raise


def _dask_client(dask: Any) -> tuple[Any, bool]:
    """(client, whether we own it) from a Client, a LocalCluster or a scheduler address."""
    try:
        from distributed import Client
    except ImportError:
        raise ValueError("dask: got a cluster address but dask.distributed is not installed; "
                         "allowed: pip install 'simsparse[dist]'") from None
    if isinstance(dask, Client):
        return dask, False
    address = getattr(dask, "scheduler_address", dask)  # a LocalCluster, or "tcp://host:8786"
    try:
        return Client(address, timeout="20s"), True
    except (OSError, TimeoutError, ValueError) as e:
        raise ValueError(f"dask: got {address!r}; allowed: a reachable scheduler address ({e})") from None


def _run_dask(chunks: list[list[dict]], client: Any) -> Iterator[tuple[int, pa.Table]]:
    from distributed import as_completed

    futures = [client.submit(evaluate_chunk, c, pure=False) for c in chunks]
    index = {f.key: i for i, f in enumerate(futures)}
    try:
        for fut in as_completed(futures):
            yield index[fut.key], fut.result()
            fut.release()
    finally:
        client.cancel([f for f in futures if not f.done()])


def sweep(spec: str | Path | dict[str, Any] | SweepSpec, out: str | Path | None = None, *,
          workers: int = 0, dask: Any = None, chunk_size: int | None = None, progress: bool = False,
          fresh: bool = False, stats: dict[str, Any] | None = None) -> Any:
    """Run a sweep and return one row per point (a pandas DataFrame, in the spec's point order).

    out         results directory (a ResultStore); finished points there are skipped (failed
                ones are retried), and each chunk is written as it finishes, so a killed sweep
                resumes where it stopped.
                None: keep everything in memory.
    workers     0/1 = in-process; N > 1 = N local processes.
    dask        a scheduler address ("tcp://host:8786"), a distributed.Client or a LocalCluster.
    chunk_size  points per task (default: from the point count and workers, or the spec's).
    progress    show a progress bar (points/s, ETA) on stderr.
    fresh       recompute points already in `out` (the new rows supersede the old).
    stats       if a dict is given, it is filled with counts and timings of this run.
    """
    import pandas as pd

    from simsparse.store import ResultStore

    t0 = time.perf_counter()
    sspec = load_spec(spec)
    pts = _Plan(sspec).points()
    store = ResultStore(out) if out is not None else None
    done: set[str] = set()
    if store is not None and not fresh:
        done = store.keys(ok_only=True)  # points that failed are tried again (the model may be fixed)
    todo = [p for p in pts if p["key"] not in done]
    workers = int(workers or 0)
    if workers < 0:
        raise ValueError(f"workers: got {workers}; allowed: 0 (in-process) or a positive number")
    size = chunk_size or sspec.chunk_size or _default_chunk_size(len(todo), workers if not dask else 8)
    chunks = _chunks(todo, size)
    if store is not None:
        store.write_meta(f"sweep-{hashlib.sha256(sspec.model_dump_json().encode()).hexdigest()[:12]}",
                         {"spec": sspec.model_dump(mode="json"), "simsparse_version": _version(),
                          "points": len(pts), "written_at": time.strftime("%Y-%m-%dT%H:%M:%S%z")})
    client, own_client = _dask_client(dask) if dask is not None else (None, False)
    if client is not None:
        runner = _run_dask(chunks, client)
    elif workers > 1 and len(chunks) > 1:
        runner = _run_processes(chunks, workers)
    else:
        runner = _run_inprocess(chunks)
    t_plan = time.perf_counter() - t0
    tables: list[pa.Table] = []
    bar = _progress(len(todo), progress, len(pts) - len(todo))
    try:
        for i, table in runner:
            if store is not None:
                store.write(table)
            else:
                tables.append(table)
            bar.update(len(chunks[i]))
    finally:
        bar.close()
        if own_client:
            client.close()
    t_run = time.perf_counter() - t0 - t_plan
    keys = [p["key"] for p in pts]
    if store is not None:
        table = store.read_table(set(keys))
    else:
        table = pa.concat_tables(tables, promote_options="permissive") if tables else None
    df = table.to_pandas() if table is not None else pd.DataFrame({"key": pd.Series([], dtype=str)})
    order = {k: i for i, k in enumerate(keys)}
    df = df.iloc[np.argsort(df["key"].map(order).to_numpy(), kind="stable")].reset_index(drop=True)
    if stats is not None:
        stats.update(points=len(pts), skipped=len(pts) - len(todo), computed=len(todo), chunks=len(chunks),
                     chunk_size=size, plan_s=t_plan, run_s=t_run, total_s=time.perf_counter() - t0,
                     errors=int(df["error"].notna().sum()) if "error" in df else 0,
                     top_error=df["error"].dropna().value_counts().index[0]
                     if "error" in df and df["error"].notna().any() else None,
                     points_per_s=len(todo) / t_run if t_run > 0 else float("inf"))
    return df


# `simsparse.sweep` may resolve to this module (when `import simsparse.sweep` ran first) or to
# the function (through simsparse.__init__'s lazy table); make the module callable so that
# `simsparse.sweep(spec)` works either way.
class _CallableModule(types.ModuleType):
    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return sweep(*args, **kwargs)


sys.modules[__name__].__class__ = _CallableModule

__all__ = ["GemmGrid", "Sampling", "SparsityGrid", "SweepSpec", "WorkloadEntry", "evaluate_chunk",
           "load_spec", "pattern_text", "point_key", "points", "rows_to_table", "sweep"]
