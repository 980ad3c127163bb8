"""Sources: a sample index -> the sample.

A random-access source is anything with ``len`` and ``[]`` (a Python sequence, a
numpy array, a map-style dataset). Token data is cut into fixed-length samples by
``TokenWindows``.
"""

from __future__ import annotations

import numpy as np

from . import _validate

__all__ = ["TokenWindows"]


class TokenWindows:
    """A flat token array cut into samples of ``seq_len + 1`` tokens.

    Sample ``i`` is ``tokens[i * seq_len : (i + 1) * seq_len + 1]``: consecutive
    samples share one token, so each gives ``seq_len`` next-token targets (the
    nanoGPT and Megatron convention). A memory-mapped array is read lazily.

    Args:
        tokens: 1-D integer array (in memory or ``np.memmap``).
        seq_len: tokens per sample, not counting the extra target token.
    """

    def __init__(self, tokens: np.ndarray, seq_len: int) -> None:
        if getattr(tokens, "ndim", None) != 1 or not np.issubdtype(tokens.dtype, np.integer):
            raise ValueError(
                f"tokens must be a 1-D integer array, got {getattr(tokens, 'shape', None)} "
                f"{getattr(tokens, 'dtype', type(tokens).__name__)}"
            )
        self.tokens = tokens
        self.seq_len = _validate.integer("seq_len", seq_len, minimum=1)
        if len(self) == 0:
            raise ValueError(
                f"tokens holds {tokens.size} tokens, fewer than one sample of seq_len + 1 = "
                f"{self.seq_len + 1}; give more tokens or a shorter seq_len"
            )

    def __len__(self) -> int:
        return max(0, (self.tokens.size - 1) // self.seq_len)

    def __getitem__(self, i: int) -> np.ndarray:
        i = int(i)
        if not 0 <= i < len(self):
            raise IndexError(f"sample {i} is out of range for {len(self)} samples")
        start = i * self.seq_len
        return np.asarray(self.tokens[start : start + self.seq_len + 1], dtype=np.int64)
