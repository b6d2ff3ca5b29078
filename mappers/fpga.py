"""FPGA mapper: one mapping per legal kernel until the FPGA tiling search arrives with its issue."""

from __future__ import annotations

import hwmodels
from simsparse.core.mapping import Mapping
from simsparse.core.ops import Op


def candidates(op: Op, spec: object, kernel_names: list[str]) -> list[Mapping]:
    kernels = hwmodels.kernels(spec)
    return [Mapping(kernel=n, weight_format=kernels[n].weight_format, dataflow="weight_stationary")
            for n in kernel_names]
