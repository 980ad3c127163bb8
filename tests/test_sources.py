import numpy as np
import pytest

from annealmix import TokenWindows


def test_token_windows_cut_samples_of_seq_len_plus_one():
    w = TokenWindows(np.arange(10, dtype=np.uint16), seq_len=3)
    assert len(w) == 3
    assert w[1].tolist() == [3, 4, 5, 6] and w[1].dtype == np.int64
    with pytest.raises(IndexError, match="sample 3 is out of range for 3 samples"):
        w[3]
    with pytest.raises(ValueError, match="fewer than one sample of seq_len \\+ 1 = 11"):
        TokenWindows(np.arange(5), seq_len=10)
    with pytest.raises(ValueError, match="1-D integer array"):
        TokenWindows(np.zeros(10), seq_len=2)
