"""exp(-x) for the compositing loops, written in plain arithmetic so that those loops vectorise.

A call to libm's expf inside a loop keeps LLVM from vectorising it and forces every live register
to be spilled around the call; this version has no call, no integer conversion and no table, only
float multiply-adds and selects, so a loop over a 4 x 4 pixel block becomes SIMD code.

Method (Cody-Waite): x = n ln2 - r with n = round(x / ln2), |r| <= ln2 / 2; e^-x = 2^-n e^r, e^r by
its Taylor polynomial (degree 7 in float32, 12 in float64), and 2^-n for n in [0, 15] as a product
of exact powers of two chosen by selects. Inputs are clamped to [0, EXP_INPUT_MAX]; above that
the result (< 5e-5) only ever meets the 1/255 alpha cut-off, so the clamp changes nothing.
Accuracy: relative error below 1.2e-7 in float32 and 4e-16 in float64 on [0, EXP_INPUT_MAX]
(checked in tests/test_rasterize_native.py against math.exp).

Numba's on-disk cache of kernels.py only watches kernels.py: after editing this file, touch
kernels.py (or delete its __pycache__/*.nbi) so the kernels are compiled again.
"""

from __future__ import annotations

import math

import numpy as np
from numba import njit
from numba.core import types
from numba.extending import overload

EXP_INPUT_MAX = 10.0  # e^-10 * 0.999 < 1/255: nothing above it is ever composited


def exp_neg(x):
    """e^-x for a float x (meant for x >= 0; x < 0 is treated as 0). Numba-only: call it from jitted code."""
    raise NotImplementedError("exp_neg is only available inside Numba-compiled functions")


@overload(exp_neg)  # LLVM inlines it; inlining in Numba IR only adds compile warnings
def _exp_neg_overload(x):
    if not isinstance(x, types.Float):
        return None
    single = x.bitwidth == 32
    f = np.float32 if single else np.float64
    if single:  # ln 2 split so that n * LN2_HI is exact for the n that occur
        ln2_hi, ln2_lo = f(0.693359375), f(-2.12194440e-4)
    else:
        ln2_hi, ln2_lo = f(6.93147180369123816490e-01), f(1.90821492927058770002e-10)
    inv_ln2, half, one, zero, top = f(1.0 / math.log(2.0)), f(0.5), f(1.0), f(0.0), f(EXP_INPUT_MAX)
    c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11, c12 = (f(1.0 / math.factorial(i)) for i in range(13))
    eight, four, two = f(8.0), f(4.0), f(2.0)
    pow8, pow4, pow2, pow1 = f(2.0**-8), f(2.0**-4), f(2.0**-2), f(2.0**-1)

    if single:

        @njit(inline="always")
        def taylor(r):
            return c0 + r * (c1 + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * c7))))))

    else:

        @njit(inline="always")
        def taylor(r):
            return c0 + r * (c1 + r * (c2 + r * (c3 + r * (c4 + r * (c5 + r * (c6 + r * (c7 + r * (
                c8 + r * (c9 + r * (c10 + r * (c11 + r * c12)))))))))))  # fmt: skip

    def impl(x):
        x = min(max(x, zero), top)
        n = np.floor(x * inv_ln2 + half)  # 0 <= n <= 15
        r = (n * ln2_hi - x) + n * ln2_lo
        # 2^-n from the binary digits of n, by selects (no integer conversion: keeps the loop SIMD).
        m = n
        take = m >= eight
        scale = pow8 if take else one
        m = m - eight if take else m
        take = m >= four
        scale = scale * pow4 if take else scale
        m = m - four if take else m
        take = m >= two
        scale = scale * pow2 if take else scale
        m = m - two if take else m
        scale = scale * pow1 if m >= one else scale
        return taylor(r) * scale

    return impl
