"""What mappers produce (Mapping) and what cost models return (Cost)."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

BOUNDS = ("compute", "memory", "latency", "decode", "imbalance", "launch")
# what a user may ask the mapper for besides a kernel name: the fastest legal mapping ("auto"), or the
# fastest among the kernels measured on the machine ("measured"; mappers.best(measured_only=True))
MAPPER_CHOICES = ("auto", "measured")


@dataclass(frozen=True)
class Mapping:
    """How one op runs on one machine: kernel, tiling, loop order and work split.

    `tile` is (tile_m, tile_n, tile_k) of the output-stationary CTA/PE tile;
    `split_k` the number of K slices reduced afterwards; `params` holds class-specific
    choices (threads, PE array shape, stages…) as plain values.
    """

    kernel: str
    tile: tuple[int, int, int] = (0, 0, 0)
    split_k: int = 1
    dataflow: str = "output_stationary"
    loop_order: str = "mnk"
    weight_format: str = "dense"
    params: dict[str, Any] = field(default_factory=dict, compare=False, hash=False)

    def describe(self) -> str:
        tm, tn, tk = self.tile
        s = self.kernel
        if tm:
            s += f"[{tm}x{tn}x{tk}"
            s += f",splitk={self.split_k}]" if self.split_k > 1 else "]"
        return s


@dataclass(frozen=True)
class Cost:
    """Predicted cost of one op under one mapping. Units: seconds, cycles, bytes, FLOPs, joules."""

    t_s: float
    cycles: float
    flops: float
    bytes_by_level: dict[str, float]
    bound: str
    utilisation: float
    energy_j: float = 0.0
    breakdown_s: dict[str, float] = field(default_factory=dict)

    @property
    def bytes_total(self) -> float:
        return sum(self.bytes_by_level.values())
