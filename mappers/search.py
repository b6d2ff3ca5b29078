"""Search over legal mappings: enumerate per class, price each with hwmodels, keep the fastest."""

from __future__ import annotations

import difflib
import importlib
from collections import OrderedDict
from dataclasses import replace
from typing import Any

import hwmodels
from hwmodels.spec import HardwareSpec
from simsparse.core.mapping import Cost, Mapping
from simsparse.core.ops import Op

# hardware class → mapper module with candidates(op, spec, kernel_names) -> list[Mapping]
CLASS_MAPPERS = {"gpu": "mappers.gpu", "cpu": "mappers.cpu", "fpga": "mappers.fpga", "asic": "mappers.systolic"}


_LEGAL: OrderedDict[tuple, tuple[HardwareSpec, dict[str, str | None]]] = OrderedDict()


def legal_kernels(op: Op, spec: HardwareSpec) -> dict[str, str | None]:
    """Every kernel of the spec's class → None if it can run `op`, else why not (memoised per
    (op, spec), or per what the class's rules read of the op where its mapper names that in
    `legality_key`; treat the result as read-only)."""
    mod = _mapper_module(spec)
    key = (id(spec), mod.legality_key(op) if hasattr(mod, "legality_key") else op)
    hit = _LEGAL.get(key)
    if hit is not None and hit[0] is spec:
        return hit[1]
    out = {name: k.why_not(op, spec) for name, k in hwmodels.kernels(spec).items()}
    _LEGAL[key] = (spec, out)
    if len(_LEGAL) > 4096:
        _LEGAL.popitem(last=False)
    return out


_MODULES: dict[str, object] = {}


def _mapper_module(spec: HardwareSpec):
    mod = _MODULES.get(spec.hw_class)
    if mod is None:
        mod = _MODULES[spec.hw_class] = importlib.import_module(CLASS_MAPPERS[spec.hw_class])
    return mod


def candidates(op: Op, spec: HardwareSpec, kernel: str | None = None) -> list[Mapping]:
    """All legal mappings of `op` on `spec` (restricted to one kernel if named)."""
    return _mapper_module(spec).candidates(op, spec, kernel_names(op, spec, kernel))


def kernel_names(op: Op, spec: HardwareSpec, kernel: str | None = None) -> list[str]:
    """The kernels that can run `op` on `spec` (just `kernel` if named); ValueError if none can."""
    legal = legal_kernels(op, spec)
    if kernel is not None:
        if kernel not in legal:
            close = difflib.get_close_matches(kernel, list(legal), n=3)
            hint = f" (did you mean {', '.join(close)}?)" if close else ""
            raise ValueError(f"kernel: unknown {kernel!r} for {spec.name}{hint}; allowed: {', '.join(legal)}")
        if legal[kernel] is not None:
            ok = [k for k, why in legal.items() if why is None]
            raise ValueError(f"kernel: {kernel} cannot run this op on {spec.name}: {legal[kernel]}; "
                             f"legal here: {', '.join(ok) or 'none'}")
        names = [kernel]
    else:
        names = [k for k, why in legal.items() if why is None]
    if not names:
        reasons = "; ".join(f"{k}: {why}" for k, why in legal.items())
        raise ValueError(f"op: no kernel on {spec.name} can run {op.kind} {op.shape_str()} "
                         f"{op.dtype} ({reasons})")
    return names


def measured_kernel_names(op: Op, spec: HardwareSpec) -> list[str]:
    """The legal kernels of `op` that were timed on `spec` in the op's dtype (spec.measured_kernels)."""
    legal = legal_kernels(op, spec)
    return [k for k, dtypes in spec.measured_kernels.items() if op.dtype in dtypes and legal.get(k, "") is None]


def best(op: Op, spec: HardwareSpec, kernel: str | None = None, measured_only: bool = False,
         context: dict[str, Any] | None = None) -> tuple[Mapping, Cost]:
    """The fastest legal mapping and its cost (the class mapper's own `best` where it has one,
    e.g. the GPU mapper prices all its candidates in one vectorised pass).

    `measured_only`: the fastest among the mappings whose numbers were measured on this machine
    (hwmodels.measured: kernel, dtype and the class's run conditions, e.g. a CPU's thread count);
    where none is, the fastest of all, which then reads as not measured.
    `context`: facts about how the op runs that are not the op's (e.g. ``input_fresh_bytes``, the bytes
    of its input the op before it just wrote), added to every candidate's params before it is priced;
    a class model that does not read them prices as without (the GPU mapper's own `best` ignores them).

    A channel-pruned weight (sparsity.Channel) is priced as the smaller dense op it leaves (Op.compacted),
    unless `kernel` names a sparse kernel that runs the pruned weight as stored."""
    small = op.compacted()
    forced = hwmodels.kernels(spec).get(kernel) if kernel else None  # an unknown name: kernel_names says so
    if small is not op and (kernel is None or (forced is not None and forced.why_not(small, spec) is None)):
        op = small
    if measured_only and kernel is None:
        names = measured_kernel_names(op, spec)
        if names:
            hit = _best_of(op, spec, names, measured=True, context=context)
            if hit is not None:
                return hit
    return _best_of(op, spec, kernel_names(op, spec, kernel), context=context)


def _best_of(op: Op, spec: HardwareSpec, names: list[str], measured: bool = False,
             context: dict[str, Any] | None = None) -> tuple[Mapping, Cost] | None:
    mod = _mapper_module(spec)
    if hasattr(mod, "best"):
        hit = mod.best(op, spec, names)
        if not measured or hwmodels.measured(op, hit[0], spec):
            return hit
    best_pair: tuple[Mapping, Cost] | None = None
    for mapping in mod.candidates(op, spec, names):
        if context:
            mapping = replace(mapping, params={**mapping.params, **context})
        if measured and not hwmodels.measured(op, mapping, spec):
            continue
        c = hwmodels.cost(op, mapping, spec)
        if best_pair is None or c.t_s < best_pair[1].t_s:
            best_pair = (mapping, c)
    if best_pair is None and not measured:
        raise ValueError(f"op: no legal mapping of {op.kind} {op.shape_str()} {op.dtype} on {spec.name} "
                         f"(kernels tried: {', '.join(names)})")
    return best_pair
