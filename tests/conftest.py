"""Test-suite settings: deterministic hypothesis runs in CI, GPU tests skip where no GPU exists."""

import os

import pytest
from hypothesis import settings

settings.register_profile("ci", derandomize=True, deadline=None, print_blob=True)
settings.register_profile("dev", deadline=None)
settings.load_profile("ci" if os.environ.get("CI") else "dev")


def _direct_depthwise(w, x, stride, pad):
    """Depthwise convolution by its definition, element by element (the tests' reference):
    y[c, i, j] = sum of w[c, r, q] * x[c, i*stride + r - pad, j*stride + q - pad] over taps inside the image."""
    import numpy as np

    c, h, wd = x.shape
    _, kh, kw = w.shape
    oh, ow = (h + 2 * pad - kh) // stride + 1, (wd + 2 * pad - kw) // stride + 1
    y = np.zeros((c, oh, ow))
    for ch in range(c):
        for i in range(oh):
            for j in range(ow):
                for r in range(kh):
                    for q in range(kw):
                        ih, iw = i * stride + r - pad, j * stride + q - pad
                        if 0 <= ih < h and 0 <= iw < wd:
                            y[ch, i, j] += float(w[ch, r, q]) * float(x[ch, ih, iw])
    return y


@pytest.fixture(scope="session")
def direct_depthwise():
    return _direct_depthwise

