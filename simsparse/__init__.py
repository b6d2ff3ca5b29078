"""simsparse: how long, and at what energy, does this sparse network take on that hardware?

The public API is loaded lazily (PEP 562) so that lower floors can import
`simsparse.core` without pulling in the top floor.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_SUBMODULES = ("plot",)  # `simsparse.plot.speedup_heatmap(...)` after a plain `import simsparse`

_LAZY = {
    "simulate": "simsparse.api",
    "sweep": "simsparse.sweep",
    "SimResult": "simsparse.api",
    "predict_line": "simsparse.predict",
    "Op": "simsparse.core.ops",
    "Trace": "simsparse.core.ops",
    "ConvGeom": "simsparse.core.ops",
    "AttnGeom": "simsparse.core.ops",
    "Mapping": "simsparse.core.mapping",
    "Cost": "simsparse.core.mapping",
    "SpecError": "simsparse.core.errors",
    "Dense": "simsparse.core.sparsity",
    "Unstructured": "simsparse.core.sparsity",
    "NM": "simsparse.core.sparsity",
    "Block": "simsparse.core.sparsity",
    "Group": "simsparse.core.sparsity",
    "Channel": "simsparse.core.sparsity",
    "ConstantFanIn": "simsparse.core.sparsity",
    "Activation": "simsparse.core.sparsity",
    "parse_pattern": "simsparse.core.sparsity",
}

__all__ = sorted(_LAZY) + list(_SUBMODULES) + ["__version__"]


def __getattr__(name: str) -> Any:
    if name in _SUBMODULES:
        import importlib

        return importlib.import_module(f"simsparse.{name}")
    if name in _LAZY:
        import importlib

        value = getattr(importlib.import_module(_LAZY[name]), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'simsparse' has no attribute {name!r}")


def __dir__() -> list[str]:
    return __all__
