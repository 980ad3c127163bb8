"""Bit-reproducible elementary functions.

numpy's ``cos`` and ``exp`` may use SIMD kernels whose last bit depends on the CPU
(AVX-512 versus AVX2 versus NEON). The plan rounds cumulative targets to whole
samples, so a one-ulp difference could move a sample from one step to the next on
another machine. These functions use only ``+``, ``-``, ``*``, ``/`` and ``ldexp``,
each a separate numpy ufunc (never fused into FMA), so they round identically
everywhere IEEE-754 doubles do. Accuracy is a few ulp, ample for schedules.
"""

from __future__ import annotations

import math

import numpy as np

# sin(z) = z * sum_k (-1)^k z^(2k) / (2k+1)!, enough terms for |z| <= pi/2 to 1e-20.
_SIN_COEFFS = [(-1) ** k / math.factorial(2 * k + 1) for k in range(12)]
# exp(r) = sum_k r^k / k!, enough terms for |r| <= ln(2)/2 to 1e-20.
_EXP_COEFFS = [1.0 / math.factorial(k) for k in range(18)]
_LN2_HI = 0.693147180369123816490  # ln(2) split so that k * _LN2_HI is exact (Cody-Waite)
_LN2_LO = 1.90821492927058770002e-10


def _horner(coeffs: list[float], x: np.ndarray) -> np.ndarray:
    out = np.full_like(x, coeffs[-1])
    for c in reversed(coeffs[:-1]):
        out = out * x
        out = out + c
    return out


def cos_pi(x: np.ndarray) -> np.ndarray:
    """cos(pi * x) for x in [0, 1], computed as -sin(pi * (x - 1/2)), kept in [-1, 1]."""
    z = (np.asarray(x, dtype=np.float64) - 0.5) * math.pi
    return np.clip(-(z * _horner(_SIN_COEFFS, z * z)), -1.0, 1.0)


def exp(x: np.ndarray) -> np.ndarray:
    """exp(x) for |x| <= 700, by range reduction to |r| <= ln(2)/2."""
    x = np.asarray(x, dtype=np.float64)
    k = np.rint(x / math.log(2.0))
    r = (x - k * _LN2_HI) - k * _LN2_LO
    return np.ldexp(_horner(_EXP_COEFFS, r), k.astype(np.int64))
