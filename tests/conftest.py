"""Test-suite settings: deterministic hypothesis runs in CI, GPU tests skip where no GPU exists."""

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def _direct_conv(w, x, stride, pad, groups=1):
    """Convolution by its definition, one output element at a time (the tests' reference); w is
    [N, C / groups, kh, kw]: y[n, i, j] = sum of w[n, c, r, q] * x[g*C/groups + c, i*stride + r - pad,
    j*stride + q - pad] over the taps inside the image, g = n's group."""
    import numpy as np

    c_in, h, wd = x.shape
    n_out, c_g, kh, kw = w.shape
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    y = np.zeros((n_out, oh, ow))
    for n in range(n_out):
        base = (n // (n_out // groups)) * c_g
        for i in range(oh):
            for j in range(ow):
                for r in range(kh):
                    for q in range(kw):
                        ih, iw = i * stride + r - pad, j * stride + q - pad
                        if 0 <= ih < h and 0 <= iw < wd:
                            y[n, i, j] += sum(float(w[n, c, r, q]) * float(x[base + c, ih, iw]) for c in range(c_g))
    return y


def _direct_depthwise(w, x, stride, pad):
    """Depthwise convolution by its definition: w [C, kh, kw], one group per channel."""
    return _direct_conv(w[:, None], x, stride, pad, groups=x.shape[0])


@pytest.fixture(scope="session")
def direct_conv():
    return _direct_conv


@pytest.fixture(scope="session")
def direct_depthwise():
    return _direct_depthwise

