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


@pytest.mark.parametrize("hw", ["h200", "host", "snapdragon-835"])
@pytest.mark.parametrize("axis,shape", [(0, (1024, 2048, 4096)), (1, (1024, 4096, 2048))])
def test_channel_pruning_runs_the_smaller_dense_layer(hw, axis, shape):
    # half the output channels (rows of W, axis 0) or input channels (columns, axis 1) gone: the layer
    # is a dense 1024 x 2048 x 2048 GEMM, and costs what that costs
    from simsparse.core.sparsity import Channel

    pruned = Op.gemm(1024, 4096, 4096, dtype="fp32", weight=Channel(0.5, axis=axis))
    assert simsparse.simulate(pruned, hw).total_s == pytest.approx(
        simsparse.simulate(Op.gemm(*shape, dtype="fp32"), hw).total_s, rel=1e-9)


def test_channel_pruned_conv_drops_its_filters():
    from simsparse.core.ops import ConvGeom
    from simsparse.core.sparsity import Channel

    geom = ConvGeom(1, 64, 56, 56, 128, 3, 3, 1, 1)
    small = Op.conv2d(ConvGeom(1, 64, 56, 56, 32, 3, 3, 1, 1), dtype="fp32")
    pruned = Op.conv2d(geom, dtype="fp32", weight=Channel(0.25))
    assert pruned.compacted().n == small.n == 32
    assert simsparse.simulate(pruned, "host").total_s == pytest.approx(simsparse.simulate(small, "host").total_s)
