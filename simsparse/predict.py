"""The `predict` batch contract: JSON lines in, one JSON line out per input.

Input line fields:
  hardware    spec name (required)
  op          {"kind": "gemm", "m": …, "n": …, "k": …, "dtype": "fp16", "batch": 1} (required)
  weight      {"pattern": "dense"} | {"pattern": "2:4"} (any "n:m") |
              {"pattern": "unstructured", "density": 0.1} |
              {"pattern": "block", "block": [bh, bw], "density": …} (optional, default dense)
  activation  {"density": …, "source": "relu"|"threshold"|…} (optional)
  kernel      a named implementation, e.g. "cublas", "cusparselt" (optional; absent = mapper picks)

Output: one line per input line (a blank one included), in order: the input echoed, plus t_s,
cycles, kernel, mapping, measured (the kernel was timed on this machine in this dtype and its model
checked against it: hwmodels.measured), bound, flops, bytes_hbm (off-chip memory traffic: HBM on a
GPU, DRAM on a CPU or ASIC, DDR on an FPGA), bytes_<level> for every level the model counts,
utilisation, energy_j. A bad line yields {"input": …, "error": {"field": …, "reason": …}} and the
rest still run.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Iterator
from typing import Any

import hwmodels
import mappers
import mappers.search
from simsparse.core.errors import SpecError
from simsparse.core.mapping import MAPPER_CHOICES
from simsparse.core.ops import Op
from simsparse.core.sparsity import Activation, Dense, parse_pattern

ALLOWED_FIELDS = {"hardware", "op", "weight", "activation", "kernel", "mapper", "id", "tag"}
# the levels the class models count off-chip memory traffic at (gpu, cpu / asic, fpga): `bytes_hbm`
OFF_CHIP_LEVELS = ("hbm", "dram", "ddr")


class LineError(ValueError):
    """A predict line is invalid: `field` names where, `reason` says what is allowed."""

    def __init__(self, field: str, reason: str):
        super().__init__(f"{field}: {reason}")
        self.field = field
        self.reason = reason


def _split_error(exc: Exception, default_field: str, prefix: str = "") -> LineError:
    """Turn our 'field: got …; allowed: …' messages into (field, reason), field under `prefix`."""
    if isinstance(exc, LineError):
        return exc
    msg = str(exc) or type(exc).__name__
    head, sep, rest = msg.partition(": ")
    if sep and " " not in head.strip() and len(head) < 60:
        field = head.strip()
        if prefix and not field.startswith(prefix):
            field = f"{prefix}.{field}"
        return LineError(field, rest)
    return LineError(default_field, msg)


def _parse_activation(obj: Any) -> Activation | Dense:
    if obj is None:
        return Dense()
    if not isinstance(obj, dict):
        raise LineError("activation", f"got {obj!r}; allowed: an object {{\"density\": (0, 1]}}")
    if set(obj) - {"density", "source", "pattern"}:
        extra = sorted(set(obj) - {"density", "source", "pattern"})
        raise LineError("activation", f"unknown field(s) {extra}; allowed: density, source")
    if "density" not in obj:
        raise LineError("activation.density", "missing; allowed: a number in (0, 1]")
    try:
        return Activation(obj["density"], obj.get("source", "synthetic"))
    except ValueError as e:
        raise _split_error(e, "activation", prefix="activation") from None


def parse_line(obj: Any) -> tuple[Op, str, str | None, bool]:
    """Validate one decoded input object → (op, hardware name, kernel or None, measured only)."""
    if not isinstance(obj, dict):
        raise LineError("line", f"got {type(obj).__name__}; allowed: a JSON object")
    unknown = set(obj) - ALLOWED_FIELDS
    if unknown:
        raise LineError(sorted(unknown)[0], f"unknown field; allowed: {', '.join(sorted(ALLOWED_FIELDS))}")
    hw = obj.get("hardware")
    if not isinstance(hw, str) or not hw:
        raise LineError("hardware", f"got {hw!r}; allowed: a spec name such as h100-sxm "
                        f"({', '.join(hwmodels.list())})")
    kernel = obj.get("kernel")
    if kernel is not None and not isinstance(kernel, str):
        raise LineError("kernel", f"got {kernel!r}; allowed: a kernel name string")
    mapper = obj.get("mapper", "auto")
    if mapper not in MAPPER_CHOICES:
        raise LineError("mapper", f"got {mapper!r}; allowed: {', '.join(MAPPER_CHOICES)}")
    op_d = obj.get("op")
    if not isinstance(op_d, dict):
        raise LineError("op", f"got {op_d!r}; allowed: {{\"kind\": \"gemm\", \"m\": …, \"n\": …, \"k\": …}}")
    for f in ("m", "n", "k", "batch"):
        v = op_d.get(f)
        if v is not None and (isinstance(v, bool) or not isinstance(v, int)):
            if not (isinstance(v, float) and math.isfinite(v) and v.is_integer()):
                raise LineError(f"op.{f}", f"got {v!r}; allowed: a positive integer")
    # weight / activation may sit at the top level or inside op, not both (never dropped)
    for f in ("weight", "activation"):
        if f in op_d and obj.get(f) is not None:
            raise LineError(f"op.{f}", f"given twice (also as top-level {f!r}); allowed: one of the two")
    w_field = "op.weight" if "weight" in op_d else "weight"
    weight = op_d.get("weight", obj.get("weight"))
    if weight is not None and not isinstance(weight, (dict, str)):
        raise LineError(w_field, f"got {weight!r}; allowed: an object {{\"pattern\": …}}")
    try:
        w = parse_pattern(weight, w_field)
    except ValueError as e:
        raise _split_error(e, w_field) from None
    try:
        act = _parse_activation(op_d.get("activation", obj.get("activation")))
    except LineError as e:
        if "activation" in op_d:
            raise LineError(f"op.{e.field}", e.reason) from None
        raise
    d = {k: v for k, v in op_d.items() if k not in ("weight", "activation")}
    d["weight"], d["activation"] = w, act
    try:
        if d.get("kind", "gemm") == "gemm":
            allowed = {"kind", "m", "n", "k", "batch", "dtype", "phase", "name", "weight", "activation"}
            extra = set(d) - allowed
            if extra:
                raise LineError(f"op.{sorted(extra)[0]}", f"unknown field; allowed: {', '.join(sorted(allowed))}")
        op = Op.from_dict(d, where="op")
    except LineError:
        raise
    except (ValueError, TypeError) as e:
        raise _split_error(e, "op") from None
    return op, hw, kernel, mapper == "measured"


def _spec(name: str):
    try:
        return hwmodels.load(name)
    except SpecError as e:
        raise LineError("hardware", str(e).removeprefix("hardware: ")) from None


Parsed = tuple[Op, object, str | None, bool]  # (op, spec, kernel, measured only)


def _parse(obj: Any) -> Parsed | LineError:
    """Validate a decoded line → (op, spec, kernel, measured only), or the LineError that answers it."""
    try:
        op, hw, kernel, measured_only = parse_line(obj)
        return op, _spec(hw), kernel, measured_only
    except LineError as e:
        return e
    except Exception as e:  # noqa: BLE001 — every line gets an answer, never a traceback
        return LineError("internal", f"{type(e).__name__}: {e}")


def _answer(obj: Any, parsed: Parsed | LineError) -> dict[str, Any]:
    """The output line for one input (never raises)."""
    try:
        if isinstance(parsed, LineError):
            raise parsed
        op, spec, kernel, measured_only = parsed
        try:
            mapping, cost = mappers.best(op, spec, kernel=kernel, measured_only=measured_only)
        except ValueError as e:
            raise _split_error(e, "kernel" if kernel else "op") from None
    except LineError as e:
        return {"input": obj, "error": {"field": e.field, "reason": e.reason}}
    except Exception as e:  # noqa: BLE001 — the contract: every line gets an answer, never a traceback
        return {"input": obj, "error": {"field": "internal", "reason": f"{type(e).__name__}: {e}"}}
    out = dict(obj)
    out.update({
        "t_s": cost.t_s, "cycles": cost.cycles, "kernel": mapping.kernel, "mapping": mapping.describe(),
        "measured": hwmodels.measured(op, mapping, spec), "bound": cost.bound, "flops": cost.flops, "utilisation": cost.utilisation, "energy_j": cost.energy_j,
    })
    for level, nbytes in cost.bytes_by_level.items():
        out[f"bytes_{level}"] = nbytes
    levels = cost.bytes_by_level
    out["bytes_hbm"] = next((levels[lv] for lv in OFF_CHIP_LEVELS if lv in levels), 0.0)
    return out


def predict_obj(obj: Any) -> dict[str, Any]:
    """Answer one decoded input object (never raises for bad input)."""
    return _answer(obj, _parse(obj))


def _decode(line: str) -> Any | LineError:
    if not line.strip():
        return LineError("line", "blank; allowed: a JSON object (one per line)")
    try:
        return json.loads(line)
    except (json.JSONDecodeError, RecursionError) as e:
        return LineError("line", f"not valid JSON ({getattr(e, 'msg', 'too deeply nested')})")


def predict_line(line: str) -> dict[str, Any]:
    """Answer one raw input line."""
    obj = _decode(line)
    if isinstance(obj, LineError):
        return {"input": line[:200], "error": {"field": obj.field, "reason": obj.reason}}
    return predict_obj(obj)


def _prefill(parsed: list[Parsed | LineError]) -> None:
    """Price the GPU tile kernels of a whole batch in a few vectorised passes (fills the model's
    memo; answers are then the same as one by one). Best effort: any failure here is left for
    the per-line path to report."""
    from hwmodels import gpu as gpu_model

    groups: dict[tuple[int, tuple[str, ...]], tuple[object, list[Op]]] = {}
    for p in parsed:
        if isinstance(p, LineError):
            continue
        op, spec, kernel, measured_only = p
        if getattr(spec, "hw_class", None) != "gpu":
            continue
        try:
            names = mappers.search.measured_kernel_names(op, spec) if measured_only and kernel is None else []
            names = names or mappers.search.kernel_names(op, spec, kernel)
        except ValueError:
            continue
        tile = tuple(k for k in names if k in gpu_model.TILE_KERNELS)
        if tile:
            groups.setdefault((id(spec), tile), (spec, []))[1].append(op)
    for (_, tile), (spec, ops) in groups.items():
        if len(ops) > 1:
            try:
                gpu_model.evaluate_many(ops, spec, tile)
            except Exception:  # noqa: BLE001, S112 — the per-line path reports real errors
                continue


def _fd_batches(fd: int, size: int) -> Iterator[list[str]]:
    """Lines from a pipe or terminal, batched by what is already available: after each blocking
    read, only data that is ready *now* joins the batch, so a client that waits for each answer
    before writing its next line is answered at once."""
    import os
    import select

    buf, eof = b"", False
    while not eof:
        data = os.read(fd, 1 << 16)
        if not data:
            break
        buf += data
        while buf.count(b"\n") < size and select.select([fd], [], [], 0)[0]:
            more = os.read(fd, 1 << 16)
            if not more:
                eof = True
                break
            buf += more
        *complete, buf = buf.split(b"\n")
        for i in range(0, len(complete), size):
            yield [ln.decode("utf-8", "replace") for ln in complete[i:i + size]]
    if buf:
        yield [buf.decode("utf-8", "replace")]


def _chunks(lines: Iterable[str], size: int) -> Iterator[list[str]]:
    """Batches of lines: from a pipe or terminal as they become available, otherwise fixed size."""
    try:
        import os
        import stat

        fd = lines.fileno()  # type: ignore[attr-defined]
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            yield from _fd_batches(fd, size)
            return
    except (AttributeError, OSError, ValueError):
        pass
    batch: list[str] = []
    for line in lines:
        batch.append(line)
        if len(batch) >= size:
            yield batch
            batch = []
    if batch:
        yield batch




def predict_stream(lines: Iterable[str], batch: int = 1024) -> Iterator[dict[str, Any]]:
    """One answer per input line, in order (a blank line gets an error: the answers line up with
    the lines); lines are priced in batches."""
    for chunk in _chunks(lines, batch):
        raw = list(chunk)
        decoded = [_decode(ln) for ln in raw]
        parsed = [d if isinstance(d, LineError) else _parse(d) for d in decoded]
        if len(parsed) > 1:
            _prefill(parsed)
        for ln, d, p in zip(raw, decoded, parsed, strict=True):
            if isinstance(d, LineError):
                yield {"input": ln[:200], "error": {"field": d.field, "reason": d.reason}}
            else:
                yield _answer(d, p)
