"""check_mapping: prove a mapping legal (every MAC covered once, buffers fit, N:M groups respected)."""

from __future__ import annotations

import importlib

import hwmodels
from hwmodels.spec import HardwareSpec
from simsparse.core.mapping import Mapping
from simsparse.core.ops import Op


def tile_ranges(extent: int, tile: int) -> list[tuple[int, int]]:
    """Half-open [start, stop) ranges of the tiles along one axis (last tile clipped)."""
    return [(s, min(s + tile, extent)) for s in range(0, extent, tile)]


def split_ranges(extent: int, parts: int) -> list[tuple[int, int]]:
    """K split into `parts` contiguous slices, sizes differing by at most one."""
    base, extra = divmod(extent, parts)
    out, start = [], 0
    for i in range(parts):
        stop = start + base + (1 if i < extra else 0)
        out.append((start, stop))
        start = stop
    return out


def _covers_exactly_once(ranges: list[tuple[int, int]], extent: int, axis: str) -> list[str]:
    """The ranges must be non-empty, disjoint and together equal [0, extent)."""
    problems = []
    pos = 0
    for a, b in sorted(ranges):
        if b <= a:
            problems.append(f"{axis}: empty range [{a}, {b})")
        if a != pos:
            problems.append(f"{axis}: {'gap' if a > pos else 'overlap'} at {min(a, pos)}")
        pos = max(pos, b)
    if pos != extent:
        problems.append(f"{axis}: ranges end at {pos}, extent is {extent}")
    return problems


def check_mapping(op: Op, mapping: Mapping, spec: HardwareSpec | str) -> list[str]:
    """Every reason `mapping` is not a legal way to run `op` on `spec` (empty list = legal)."""
    spec = hwmodels.load(spec)
    kinfo = hwmodels.kernels(spec).get(mapping.kernel)
    if kinfo is None:
        return [f"kernel: {mapping.kernel!r} is not a {spec.hw_class} kernel"]
    why = kinfo.why_not(op, spec)
    problems = [f"kernel: {why}"] if why else []
    tm, tn, tk = mapping.tile
    if tm:
        if mapping.split_k < 1 or mapping.split_k > op.k:
            problems.append(f"split_k: {mapping.split_k} not in [1, K={op.k}]")
            return problems
        # every output element (m, n) in exactly one tile, every k in exactly one K slice
        problems += _covers_exactly_once(tile_ranges(op.m, tm), op.m, "M")
        problems += _covers_exactly_once(tile_ranges(op.n, tn), op.n, "N")
        problems += _covers_exactly_once(split_ranges(op.k, mapping.split_k), op.k, "K")
    mod = importlib.import_module(f"mappers.{'systolic' if spec.hw_class == 'asic' else spec.hw_class}")
    if hasattr(mod, "check"):
        problems += mod.check(op, mapping, spec)
    return problems
