"""A pruned weight or a sparse activation can always be run as if dense (the zeros stored, every
activation read): on every built-in machine, the best mapping of an op with zeros in it is never
slower than that of the same op without them."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import hwmodels
import simsparse
from simsparse.core.ops import Op
from simsparse.core.sparsity import NM, Activation, Block, Unstructured

SPARSITIES = st.sampled_from([NM(2, 4), NM(1, 4), Unstructured(0.5), Unstructured(0.1), Block(4, 1, 0.2)])


@pytest.mark.parametrize("hw", hwmodels.list())
@settings(max_examples=30, deadline=None)
@given(m=st.sampled_from([1, 8, 196, 1024]), n=st.sampled_from([64, 512, 3072]),
       k=st.sampled_from([64, 768, 4096]), weight=SPARSITIES, act=st.sampled_from([1.0, 0.5, 0.05]))
def test_zeros_never_make_the_best_mapping_slower(hw, m, n, k, weight, act):
    spec = hwmodels.load(hw)
    dtype = "fp16" if spec.supports_dtype("fp16") and spec.hw_class != "cpu" else "fp32"

    def t(w, a) -> float:
        op = Op.gemm(m, n, k, dtype=dtype, **({"weight": w} if w else {}),
                     **({"activation": Activation(a, "relu")} if a < 1 else {}))
        return simsparse.simulate(op, spec).total_s

    both = t(weight, act)
    assert both <= t(None, act) * (1 + 1e-9), "zeros in the weight made it slower"
    assert both <= t(weight, 1.0) * (1 + 1e-9), "zeros in the activation made it slower"
