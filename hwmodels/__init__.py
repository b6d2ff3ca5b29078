"""Hardware specs (YAML, pydantic-validated, every number sourced) and one cost model per class.

    >>> import hwmodels
    >>> spec = hwmodels.load("h100-sxm")
    >>> faster = spec.replace(hbm_bw_gbps=4800)      # a what-if copy
"""

from __future__ import annotations

import importlib

from hwmodels.kernels import KernelInfo
from hwmodels.spec import (
    SPEC_CLASSES,
    ASICSpec,
    CPUSpec,
    FPGASpec,
    GPUSpec,
    HardwareSpec,
    load,
    load_file,
    parse_spec,
)
from hwmodels.spec import list_specs as list  # noqa: A001  (the API the issue names: hwmodels.list())
from simsparse.core.mapping import Cost, Mapping
from simsparse.core.ops import Op

# hardware class → module that holds its KERNELS table and cost(op, mapping, spec)
CLASS_MODELS = {"gpu": "hwmodels.gpu", "cpu": "hwmodels.cpu", "fpga": "hwmodels.fpga", "asic": "hwmodels.asic"}


def model_for(spec: HardwareSpec):
    """The cost-model module of the spec's hardware class."""
    return importlib.import_module(CLASS_MODELS[spec.hw_class])


def kernels(spec: HardwareSpec) -> dict[str, KernelInfo]:
    """The named kernels the spec's class knows (legal or not for a given op)."""
    return model_for(spec).KERNELS


def all_kernels() -> dict[str, KernelInfo]:
    """Every kernel of every class that has a model installed."""
    out: dict[str, KernelInfo] = {}
    for mod in CLASS_MODELS.values():
        try:
            out.update(importlib.import_module(mod).KERNELS)
        except ModuleNotFoundError:
            continue
    return out


def cost(op: Op, mapping: Mapping, spec: HardwareSpec) -> Cost:
    """Price one op under one mapping on one machine."""
    return model_for(spec).cost(op, mapping, spec)


def measured(op: Op, mapping: Mapping, spec: HardwareSpec) -> bool:
    """Was this kernel timed on this machine in this dtype, under this mapping's run conditions, and its
    model checked against those timings (spec.measured_kernels; a class model may name further conditions
    its measurements did not cover in `outside_measured`)? False: the number is the model's alone."""
    if op.dtype not in spec.measured_kernels.get(mapping.kernel, ()):
        return False
    outside = getattr(model_for(spec), "outside_measured", None)
    return outside is None or outside(op, mapping, spec) is None


__all__ = [
    "ASICSpec", "CPUSpec", "FPGASpec", "GPUSpec", "HardwareSpec", "KernelInfo", "SPEC_CLASSES",
    "all_kernels", "cost", "kernels", "list", "load", "load_file", "measured", "model_for", "parse_spec",
]
