"""Named kernel implementations and what each can run (legality, storage format, compute unit).

A kernel is a property of the hardware class (what libraries exist for it); the mapper
enumerates the legal ones for an op, the cost model prices each.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

from simsparse.core.ops import Op
from simsparse.core.sparsity import NM

# a legality rule returns None when the kernel can run the op, else the reason it cannot
Rule = Callable[[Op, object], str | None]


@dataclass(frozen=True)
class KernelInfo:
    """One named implementation (e.g. `cusparselt`) of a family of ops on one hardware class."""

    name: str
    hw_class: str
    kinds: tuple[str, ...]
    weight_patterns: tuple[str, ...]  # Sparsity.pattern values it accepts; "*" = any (a dense-format kernel
    # runs a pruned weight stored with its zeros, at the dense cost)
    weight_format: str  # storage format of the weight: dense, csr, bsr, nm, tiled_csl, bitmap
    unit: str  # tensor, sparse_tensor, cuda_core, simd, pe
    skips_weight_zeros: bool
    skips_activation_zeros: bool = False
    description: str = ""
    rules: tuple[Rule, ...] = field(default=(), compare=False)

    def why_not(self, op: Op, spec: object) -> str | None:
        """None if this kernel can run `op` on `spec`, else a one-line reason."""
        if op.kind not in self.kinds:
            return f"{self.name} runs {', '.join(self.kinds)} ops, not {op.kind}"
        if "*" not in self.weight_patterns and op.weight.pattern not in self.weight_patterns:
            return f"{self.name} needs a weight pattern in {self.weight_patterns}, not {op.weight.label}"
        for rule in self.rules:
            reason = rule(op, spec)
            if reason:
                return reason
        return None


def nm_fits(w: NM, n: int, m: int) -> bool:
    """Does every n':m' mask also satisfy n:m (so the n:m hardware can store it)?"""
    if w.m % m == 0:  # each m-subgroup of an m'-group holds at most n' ≤ n nonzeros
        return w.n <= n
    if m % w.m == 0:  # an m-group spans m/m' whole m'-groups
        return w.n * (m // w.m) <= n
    return False


def needs_nm(n: int, m: int) -> Rule:
    def rule(op: Op, spec: object) -> str | None:
        w = op.weight
        if isinstance(w, NM) and nm_fits(w, n, m):
            return None
        return f"needs weights that fit {n}:{m} (e.g. {n}:{m}, 1:{m}, {n}:{2 * m}), got {w.label}"

    return rule


def needs_dtype(*dtypes: str) -> Rule:
    def rule(op: Op, spec: object) -> str | None:
        return None if op.dtype in dtypes else f"needs dtype in {dtypes}, got {op.dtype}"

    return rule


def needs_activation_sparsity(op: Op, spec: object) -> str | None:
    return None if op.activation.density < 1.0 else "needs a sparse activation operand"
