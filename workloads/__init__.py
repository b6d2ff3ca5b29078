"""Workload extractors: models (torch modules, HF configs, layer tables) → operator traces.

    workloads.get("llama-2-70b", batch=16, phase="decode", kv_len=4096)   # from a config
    workloads.get("resnet50", batch=8, sparsity="all linears 2:4")         # from a layer table
    workloads.from_module(model, example_inputs)                            # from a torch module
    workloads.activations.capture(model, x, "teal@0.5")                     # activation sparsity
    workloads.prune.prune_model(model, "2:4")                               # magnitude pruning
    workloads.training_trace(trace)                                         # fwd + bwd GEMMs

Nothing here needs torch at import time; from_module / prune_model / build_torch import it.
"""

from workloads import activations, cnn, detect, prune
from workloads.detect import detect as detect_pattern
from workloads.hf import hf
from workloads.recipe import Recipe, is_linear
from workloads.torch_extract import from_module, summary_rows
from workloads.training import training_trace
from workloads.zoo import apply_sparsity, get, names

__all__ = ["Recipe", "activations", "apply_sparsity", "cnn", "detect", "detect_pattern", "from_module",
           "get", "hf", "is_linear", "names", "prune", "summary_rows", "training_trace"]
