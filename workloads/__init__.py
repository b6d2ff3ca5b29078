"""Workload extractors: models (torch modules, HF configs, layer tables) → operator traces."""

from workloads.hf import hf
from workloads.zoo import apply_sparsity, get, names

__all__ = ["apply_sparsity", "get", "hf", "names"]
