"""Hardware spec schema (pydantic), one model per hardware class, loaded from YAML.

Every number in a spec file carries its source. Either inline::

    sm_count: {value: 132, source: "NVIDIA H100 datasheet (hpctech copy), 'SMs | 132'"}

or plain with an entry under ``sources:`` of the same name. A file with a number and no
source is refused. Calibrated parameters cite the measurement file they were fitted on.
"""

from __future__ import annotations

import difflib
from pathlib import Path
from typing import Any, ClassVar, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from simsparse.core.errors import SpecError
from simsparse.core.ops import DTYPE_BYTES

SPEC_DIR = Path(__file__).parent / "specs"
_YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)  # same documents, libyaml speed
HW_CLASSES = ("gpu", "cpu", "fpga", "asic")
_NON_NUMERIC = {"name", "hw_class", "display_name", "vendor", "notes", "sources", "aliases",
                "isa", "sparse_patterns", "kernels", "host", "arch"}


def _unwrap_sourced(data: dict[str, Any]) -> dict[str, Any]:
    """Turn {field: {value, source}} into {field: value} + sources[field]; return new dict."""
    out: dict[str, Any] = {}
    raw_sources = data.get("sources") or {}
    if not isinstance(raw_sources, dict):
        raise ValueError(f"sources: got {type(raw_sources).__name__}; allowed: a mapping field → source text")
    sources: dict[str, str] = {str(k): str(v) for k, v in raw_sources.items()}
    for key, val in data.items():
        if key == "sources":
            continue
        if isinstance(val, dict) and "value" in val and set(val) <= {"value", "source", "unit", "note"}:
            out[key] = val["value"]
            if "source" in val:
                sources[key] = str(val["source"])
        elif isinstance(val, dict) and key not in _NON_NUMERIC:
            inner: dict[str, Any] = {}
            for k2, v2 in val.items():
                if isinstance(v2, dict) and "value" in v2:
                    inner[k2] = v2["value"]
                    if "source" in v2:
                        sources[f"{key}.{k2}"] = str(v2["source"])
                else:
                    inner[k2] = v2
            out[key] = inner
        else:
            out[key] = val
    out["sources"] = sources
    return out


def _missing_sources(data: dict[str, Any]) -> list[str]:
    """Numeric fields (or dict entries) that have no source, nor a source for their parent."""
    sources = data.get("sources", {})
    missing = []
    for key, val in data.items():
        if key in _NON_NUMERIC:
            continue
        if isinstance(val, (int, float)) and not isinstance(val, bool):
            if key not in sources:
                missing.append(key)
        elif isinstance(val, dict):
            for k2, v2 in val.items():
                if isinstance(v2, (int, float)) and not isinstance(v2, bool):
                    if key not in sources and f"{key}.{k2}" not in sources:
                        missing.append(f"{key}.{k2}")
    return missing


class HardwareSpec(BaseModel):
    """Fields every hardware class has. Units: Hz, bytes, bytes/s (as GB/s fields), FLOP/s, W, pJ."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    hw_class_name: ClassVar[str] = "base"

    name: str
    hw_class: Literal["gpu", "cpu", "fpga", "asic"]
    display_name: str
    vendor: str = ""
    notes: str = ""
    aliases: list[str] = Field(default_factory=list)
    sources: dict[str, str] = Field(default_factory=dict)

    clock_hz: float = Field(gt=0)
    tdp_w: float = Field(default=0.0, ge=0)
    # energy per operation / per byte (pJ), for the energy column; 0 = unknown
    pj_per_flop: dict[str, float] = Field(default_factory=dict)
    pj_per_byte_dram: float = Field(default=0.0, ge=0)
    # calibrated efficiency parameters (dimensionless unless named otherwise)
    efficiency: dict[str, float] = Field(default_factory=dict)
    # kernel -> the dtypes it was timed in on this very machine, its model checked against those timings
    # (validation/data/...); a number priced with any other kernel or dtype is the model's alone. A what-if
    # copy (replace) is another machine: it keeps them only where it changes run conditions alone
    measured_kernels: dict[str, list[str]] = Field(default_factory=dict)
    # fields whose change leaves the machine as measured (the run conditions a model checks itself,
    # e.g. a CPU's thread count: hwmodels.measured)
    keeps_measured: ClassVar[frozenset[str]] = frozenset()

    @model_validator(mode="before")
    @classmethod
    def _sources(cls, data: Any) -> Any:
        if not isinstance(data, dict):
            raise ValueError("a spec must be a mapping of fields")
        data = _unwrap_sourced(data)
        missing = _missing_sources(data)
        if data.get("measured_kernels") and "measured_kernels" not in data["sources"]:
            missing.append("measured_kernels (which measurement files)")
        if missing:
            raise ValueError(f"numbers without a source: {', '.join(missing)} "
                             "(give {value: …, source: …} or an entry under 'sources:')")
        return data

    @model_validator(mode="after")
    def _known_kernels(self) -> HardwareSpec:
        if self.measured_kernels:
            import hwmodels  # the class's kernel table lives with its cost model

            known = hwmodels.kernels(self)
            unknown = [k for k in self.measured_kernels if k not in known]
            if unknown:
                raise ValueError(f"measured_kernels: unknown {unknown} for class {self.hw_class}; "
                                 f"allowed: {', '.join(known)}")
            for name, dtypes in self.measured_kernels.items():
                bad_dtypes = [d for d in dtypes if d not in DTYPE_BYTES]
                if bad_dtypes or not dtypes:
                    raise ValueError(f"measured_kernels.{name}: got {dtypes}; allowed: a non-empty list of "
                                     f"{', '.join(DTYPE_BYTES)}")
        return self

    # --- what every cost model may ask -----------------------------------------------------
    def peak_flops(self, dtype: str, sparse_nm: tuple[int, int] | None = None) -> float:
        """Datasheet peak FLOP/s for a dtype (dense, or on the structured-sparse unit)."""
        raise NotImplementedError

    @property
    def dram_bw(self) -> float:
        """Main-memory bandwidth in bytes/s (datasheet)."""
        raise NotImplementedError

    def supports_dtype(self, dtype: str) -> bool:
        try:
            return self.peak_flops(dtype) > 0
        except SpecError:
            return False

    def replace(self, **changes: Any) -> HardwareSpec:
        """A what-if copy: spec.replace(hbm_bw_gbps=4800). Changed numbers are sourced 'what-if'."""
        fields = type(self).model_fields
        unknown = [k for k in changes if k not in fields]
        if unknown:
            raise SpecError(f"replace: unknown field(s) {unknown}; allowed: {sorted(fields)}")
        data = self.model_dump(exclude_unset=True)
        if "measured_kernels" not in changes and not set(changes) <= self.keeps_measured:
            data.pop("measured_kernels", None)  # another machine: nothing of it was measured
        data.update(changes)
        data["sources"] = {**data["sources"], **{k: "what-if override" for k in changes}}
        try:
            return type(self).model_validate(data)
        except ValidationError as e:
            raise SpecError(format_validation_error(self.name, e)) from None


class GPUSpec(HardwareSpec):
    """A GPU with Tensor Cores (optionally 2:4 sparse Tensor Cores)."""

    hw_class_name: ClassVar[str] = "gpu"
    hw_class: Literal["gpu"]
    arch: str = ""
    sm_count: int = Field(gt=0)
    boost_clock_hz: float = Field(default=0.0, ge=0)  # max boost for CUDA-core math; clock_hz = tensor clock
    tc_flops_per_clk_per_sm: dict[str, float]  # dense Tensor Core FLOP/clk/SM per dtype
    sparse_tc_speedup: float = Field(default=1.0, ge=1.0)  # 2:4 peak multiplier (2 on sm80+; 1 = none)
    cuda_fp32_flops_per_clk_per_sm: float = Field(gt=0)
    hbm_bw_gbps: float = Field(gt=0)
    hbm_bytes: float = Field(gt=0)
    l2_bytes: float = Field(gt=0)
    l2_bw_gbps: float = Field(default=0.0, ge=0)
    smem_bytes_per_sm: float = Field(gt=0)
    regs_bytes_per_sm: float = Field(default=256 * 1024, gt=0)
    max_threads_per_sm: int = Field(default=2048, gt=0)

    def peak_flops(self, dtype: str, sparse_nm: tuple[int, int] | None = None) -> float:
        if dtype not in DTYPE_BYTES:
            raise SpecError(f"dtype: got {dtype!r}; allowed: {', '.join(DTYPE_BYTES)}")
        per_clk = self.tc_flops_per_clk_per_sm.get(dtype, 0.0)
        if per_clk <= 0 and dtype == "fp32":
            return self.cuda_fp32_peak
        if per_clk <= 0:
            raise SpecError(f"dtype: {self.name} has no Tensor Core path for {dtype!r}; "
                            f"allowed: {', '.join(k for k, v in self.tc_flops_per_clk_per_sm.items() if v > 0)}")
        peak = per_clk * self.sm_count * self.clock_hz
        if sparse_nm is not None and self.sparse_tc_speedup > 1.0:
            peak *= self.sparse_tc_speedup
        return peak

    @property
    def cuda_fp32_peak(self) -> float:
        return self.cuda_fp32_flops_per_clk_per_sm * self.sm_count * (self.boost_clock_hz or self.clock_hz)

    @property
    def dram_bw(self) -> float:
        return self.hbm_bw_gbps * 1e9

    @property
    def has_sparse_tc(self) -> bool:
        return self.sparse_tc_speedup > 1.0


class CPUSpec(HardwareSpec):
    """A multi-core CPU with SIMD units (NEON, WASM SIMD128, AVX2, AVX-512)."""

    hw_class_name: ClassVar[str] = "cpu"
    hw_class: Literal["cpu"]
    keeps_measured: ClassVar[frozenset[str]] = frozenset({"threads"})  # hwmodels.cpu.outside_measured checks them
    isa: str  # "neon" | "wasm_simd128" | "avx2" | "avx512" | …
    cores: int = Field(gt=0)
    simd_bits: int = Field(gt=0)
    fma_units_per_core: float = Field(gt=0)
    dram_bw_gbps: float = Field(gt=0)
    l1d_bytes: float = Field(gt=0)
    l2_bytes: float = Field(gt=0)
    l3_bytes: float = Field(default=0.0, ge=0)
    l1_bw_bytes_per_clk: float = Field(default=0.0, ge=0)
    l2_bw_bytes_per_clk: float = Field(default=0.0, ge=0)
    l3_bw_bytes_per_clk: float = Field(default=0.0, ge=0)
    simd_overhead: float = Field(default=1.0, ge=1.0)  # >1 for WASM SIMD vs native
    dtype_lanes_scale: dict[str, float] = Field(default_factory=dict)  # lanes relative to fp32
    # per-core issue resources the CPU cost model counts instructions against (hwmodels/cpu.py)
    load_ports: float = Field(default=2.0, gt=0)  # SIMD loads (of simd_bits) per cycle
    store_ports: float = Field(default=1.0, gt=0)  # SIMD stores per cycle
    fused_fma: bool = True  # False: a multiply-add is two instructions (WASM SIMD128 without relaxed-simd)
    fp_pipes: float = Field(default=0.0, ge=0)  # SIMD FP pipes taking a mul or an add; 0 = fma_units_per_core
    threads: int = Field(default=0, ge=0)  # threads the runtime uses; 0 = all cores
    # front end: instructions decoded per cycle (A73: 2); 0 = not a limit (the ports bind first)
    decode_width: float = Field(default=0.0, ge=0)
    # L2 read bandwidth shared by all cores of the cluster; 0 = per-core l2_bw_bytes_per_clk × threads
    l2_shared_bw_bytes_per_clk: float = Field(default=0.0, ge=0)
    # load-to-use latency of an L1 miss that hits L2, in core cycles, and the L1 misses one core
    # keeps in flight (memory-level parallelism); 0 = not modelled (the XNNPACK sparse kernels'
    # L1-missing gathers are then priced as bandwidth only, hwmodels/cpu.py)
    l2_latency_cycles: float = Field(default=0.0, ge=0)
    l1_outstanding_misses: float = Field(default=0.0, ge=0)
    isa_features: list[str] = Field(default_factory=list)  # e.g. avx512f, avx512_vnni, dotprod
    probe_file: str = ""  # for a measured host: the probe file its numbers come from
    residual_file: str = ""  # for a measured host: its learned correction (hwmodels/residual.py), in specs/

    @property
    def simd_issue_per_clk(self) -> float:
        """Multiply-adds (vectors of simd_bits) issued per cycle per core."""
        if self.fused_fma:
            return self.fma_units_per_core
        # no fused FMA: a multiply and an add each take one FP pipe issue
        return (self.fp_pipes or self.fma_units_per_core) / 2

    def peak_flops(self, dtype: str, sparse_nm: tuple[int, int] | None = None) -> float:
        if dtype not in DTYPE_BYTES:
            raise SpecError(f"dtype: got {dtype!r}; allowed: {', '.join(DTYPE_BYTES)}")
        lanes = self.simd_bits / 32 * self.dtype_lanes_scale.get(dtype, 1.0)
        # FMA = 2 FLOPs per lane per unit per cycle
        return 2 * lanes * self.simd_issue_per_clk * self.cores * self.clock_hz / self.simd_overhead

    @property
    def dram_bw(self) -> float:
        return self.dram_bw_gbps * 1e9


class FPGASpec(HardwareSpec):
    """An FPGA N:M sparse training accelerator (DSP PE array + on-chip BRAM/URAM + DDR/HBM)."""

    hw_class_name: ClassVar[str] = "fpga"
    hw_class: Literal["fpga"]
    pe_rows: int = Field(gt=0)
    pe_cols: int = Field(gt=0)
    macs_per_pe_per_clk: float = Field(default=1.0, gt=0)
    onchip_bytes: float = Field(gt=0)
    ddr_bw_gbps: float = Field(gt=0)
    nm_supported: list[str] = Field(default_factory=list)

    def peak_flops(self, dtype: str, sparse_nm: tuple[int, int] | None = None) -> float:
        peak = 2 * self.pe_rows * self.pe_cols * self.macs_per_pe_per_clk * self.clock_hz
        if sparse_nm is not None and f"{sparse_nm[0]}:{sparse_nm[1]}" in self.nm_supported:
            peak *= sparse_nm[1] / sparse_nm[0]
        return peak

    @property
    def dram_bw(self) -> float:
        return self.ddr_bw_gbps * 1e9


class ASICSpec(HardwareSpec):
    """A high-sparsity ASIC: PE array that skips zero operands (weights and/or activations)."""

    hw_class_name: ClassVar[str] = "asic"
    hw_class: Literal["asic"]
    pes: int = Field(gt=0)
    macs_per_pe_per_clk: float = Field(default=1.0, gt=0)
    onchip_bytes: float = Field(gt=0)
    dram_bw_gbps: float = Field(gt=0)
    max_sparse_speedup: float = Field(default=1.0, ge=1.0)

    def peak_flops(self, dtype: str, sparse_nm: tuple[int, int] | None = None) -> float:
        return 2 * self.pes * self.macs_per_pe_per_clk * self.clock_hz

    @property
    def dram_bw(self) -> float:
        return self.dram_bw_gbps * 1e9


SPEC_CLASSES: dict[str, type[HardwareSpec]] = {
    "gpu": GPUSpec, "cpu": CPUSpec, "fpga": FPGASpec, "asic": ASICSpec,
}


def format_validation_error(where: str, err: ValidationError) -> str:
    """One line per problem: 'where: field: message'."""
    lines = []
    for e in err.errors():
        loc = ".".join(str(p) if str(p).isprintable() else repr(p) for p in e["loc"]) or "(top level)"
        msg = " ".join(e["msg"].removeprefix("Value error, ").split())
        lines.append(f"{where}: {loc}: {msg}")
    return "; ".join(lines)


def parse_spec(data: Any, where: str = "spec") -> HardwareSpec:
    """Validate a spec mapping (already parsed from YAML) into the model of its class."""
    if not isinstance(data, dict):
        raise SpecError(f"{where}: expected a mapping of fields, got {type(data).__name__}")
    hw_class = data.get("hw_class")
    if not isinstance(hw_class, str) or hw_class not in SPEC_CLASSES:
        raise SpecError(f"{where}: hw_class: got {hw_class!r}; allowed: {', '.join(HW_CLASSES)}")
    try:
        return SPEC_CLASSES[hw_class].model_validate(data)
    except ValidationError as e:
        raise SpecError(format_validation_error(where, e)) from None


def read_yaml(path: str | Path, what: str = "a readable .yaml file") -> Any:
    """Parse a YAML file; unreadable or malformed → one SpecError line with file, line and column."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as e:
        raise SpecError(f"{path}: cannot read ({e.strerror}); allowed: {what}") from None
    try:
        return yaml.load(text, Loader=_YAML_LOADER)  # noqa: S506 — a safe loader (libyaml's when present)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        pos = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise SpecError(f"{path.name}: malformed YAML{pos}: {getattr(e, 'problem', None) or e}") from None


def load_file(path: str | Path) -> HardwareSpec:
    """Load and validate one YAML spec file."""
    return parse_spec(read_yaml(path, "a readable hardware spec .yaml file"), where=Path(path).name)


_CACHE: dict[str, HardwareSpec] = {}


def _index() -> dict[str, Path]:
    """Spec name → file (the file's stem is the spec's name)."""
    return {p.stem: p for p in sorted(SPEC_DIR.glob("*.yaml"))}


def _aliases() -> dict[str, str]:
    """Alias (a spec file's ``aliases:`` list, e.g. 'h100', 'sd835') → spec name. An alias that is
    also a spec name, or is claimed by two files, is refused: it would make a name mean two things."""
    out: dict[str, str] = {}
    idx = _index()
    for name, path in idx.items():
        data = read_yaml(path, "a readable hardware spec .yaml file")
        for alias in (data.get("aliases") or []) if isinstance(data, dict) else []:
            a = str(alias).strip().lower()
            if a in idx or out.get(a, name) != name:
                raise SpecError(f"{path.name}: aliases: {a!r} already names {out.get(a, a)}; "
                                "allowed: a name no other spec or alias uses")
            out[a] = name
    return out


def list_specs(hw_class: str | None = None) -> list[str]:
    """Names of the built-in specs, optionally of one class."""
    names = sorted(_index())
    if hw_class is None:
        return names
    return [n for n in names if load(n).hw_class == hw_class]


def load(name: str | Path | HardwareSpec) -> HardwareSpec:
    """A built-in spec by name ('h100-sxm'), or a YAML file path."""
    if isinstance(name, HardwareSpec):
        return name
    key = str(name)
    if key in _CACHE:
        return _CACHE[key]
    if key.endswith((".yaml", ".yml")) or "/" in key:
        spec = load_file(key)
    else:
        idx = _index()
        norm = key.strip().lower()
        if norm not in idx:
            aliases = _aliases()
            if norm not in aliases:
                close = difflib.get_close_matches(norm, [*idx, *aliases], n=3, cutoff=0.4)
                hint = f"; did you mean {', '.join(close)}?" if close else ""
                raise SpecError(f"hardware: unknown name {key!r}{hint} (known: {', '.join(idx)}; "
                                f"aliases: {', '.join(sorted(aliases))})")
            norm = aliases[norm]
        spec = load_file(idx[norm])
    _CACHE[key] = spec
    return spec
