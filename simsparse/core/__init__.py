"""Floor 0: the data model (numpy and pydantic only; imports nothing else of ours)."""

from simsparse.core.errors import SpecError
from simsparse.core.mapping import Cost, Mapping
from simsparse.core.ops import DTYPE_BYTES, DTYPES, PHASES, Op, Trace
from simsparse.core.sparsity import (
    NM,
    Activation,
    Block,
    Channel,
    ConstantFanIn,
    Dense,
    Group,
    Sparsity,
    SparsityStats,
    Unstructured,
    parse_pattern,
)

__all__ = [
    "DTYPES", "DTYPE_BYTES", "PHASES", "NM", "Activation", "Block", "Channel", "ConstantFanIn",
    "Cost", "Dense", "Group", "Mapping", "Op", "Sparsity", "SparsityStats", "SpecError",
    "Trace", "Unstructured", "parse_pattern",
]
