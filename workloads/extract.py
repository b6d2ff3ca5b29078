"""One call behind `simsparse extract`: a model name or a Python entry point → a Trace.

    extract("llama-2-70b", batch=16, phase="decode", kv_len=4096, sparsity="all linears 2:4")
    extract("resnet50", prune="2:4")                  # builds the torch model, prunes, traces
    extract("mypkg.models:make", prune="unstructured@0.1", activations="measured")

An entry point `pkg.module:function` (or `path/to/file.py:function`) is called with no
arguments and must return (model, example_inputs); torch is then needed.
"""

from __future__ import annotations

import importlib
import importlib.util
from pathlib import Path
from typing import Any

from simsparse.core.errors import bad
from simsparse.core.ops import Trace


def is_entry_point(spec: str) -> bool:
    return ":" in spec and not spec.lower().startswith(("http:", "https:")) and \
        not spec.split(":")[0].isdigit()


def load_entry_point(spec: str) -> tuple[Any, Any]:
    """Call `pkg.module:function` (or `file.py:function`) and return its (model, example_inputs)."""
    target, _, func_name = spec.rpartition(":")
    if not target or not func_name:
        raise bad("model", spec, "pkg.module:function or path/to/file.py:function")
    try:
        if target.endswith(".py"):
            path = Path(target)
            if not path.exists():
                raise bad("model", spec, "an existing .py file before ':'")
            mod_spec = importlib.util.spec_from_file_location(path.stem, path)
            module = importlib.util.module_from_spec(mod_spec)
            mod_spec.loader.exec_module(module)
        else:
            module = importlib.import_module(target)
    except ModuleNotFoundError as e:
        raise bad("model", spec, f"an importable module ({e})") from None
    fn = getattr(module, func_name, None)
    if not callable(fn):
        raise bad("model", spec, f"a function {func_name!r} in {target}")
    out = fn()
    if not isinstance(out, tuple) or len(out) != 2:
        raise bad("model", spec, "a function returning (model, example_inputs)")
    return out


def extract(model: str, *, batch: int = 1, seq_len: int = 128, phase: str = "prefill",
            kv_len: int | None = None, dtype: str | None = None, sparsity: str | None = None,
            prune: str | None = None, activations: str | None = None, training: bool = False,
            image_size: int = 224, seed: int = 0) -> Trace:
    """Trace a built-in workload or an entry point's torch model.

    sparsity: a pattern ('2:4') or recipe applied to the finished trace (any model).
    prune: magnitude-prune every Linear / Conv of a torch model with this pattern before tracing
      (weights that cannot hold it stay dense). For a built-in CNN this builds its torch model
      (synthetic seeded weights); transformers from configs have no weights to prune.
    activations: activation policy for torch models (measured, teal@0.5, topk@0.25, oracle).
    training: add the backward GEMMs (also phase="train" for built-ins).
    """
    from workloads import cnn, zoo
    from workloads.training import training_trace

    train = training or phase == "train"
    is_cnn = model.lower().replace("-", "_") in cnn.TABLES
    if is_entry_point(model) or (is_cnn and (prune or activations)):
        import torch

        from workloads.prune import prune_model
        from workloads.torch_extract import from_module

        torch.manual_seed(seed)
        if is_entry_point(model):
            net, inputs = load_entry_point(model)
            name = model.rpartition(":")[2]
        else:
            net, inputs = cnn.model_and_inputs(model, batch, image_size, seed)
            name = model.lower()
        if prune:
            prune_model(net, prune)
        trace = from_module(net, inputs, name=name, dtype=dtype or "fp16", activations=activations,
                            provenance={"entry_point": model if is_entry_point(model) else None, "seed": seed})
    else:
        if prune or activations:
            raise bad("prune/activations", prune or activations,
                      "a torch model (entry point or zoo CNN); for configs use --sparsity recipes")
        kw: dict[str, Any] = {"batch": batch, "phase": "prefill" if train else phase, "dtype": dtype or "fp16"}
        if is_cnn:
            kw["image_size"] = image_size
        else:
            kw.update(seq_len=seq_len, kv_len=kv_len, seed=seed)
        trace = zoo.get(model, **kw)
    if sparsity:  # on the forward ops, before the backward ops are derived from them
        trace = zoo.apply_sparsity(trace, sparsity)
    return training_trace(trace) if train else trace
