"""Per hardware class, the search over legal mappings, and the checker that proves one legal."""

from mappers.check import check_mapping
from mappers.search import best, candidates, legal_kernels

__all__ = ["best", "candidates", "check_mapping", "legal_kernels"]
