"""Megatron's sample dict: its three switches, the masks and positions they make.

Megatron's GPT dataset hands its training step ``tokens``, ``labels``,
``loss_mask`` and ``position_ids`` (and, where it builds one, ``attention_mask``),
shaped by ``--reset-position-ids``, ``--reset-attention-mask`` and
``--eod-mask-loss`` (all off by default). ``MEGATRON_FLAGS`` names them as Megatron
does; ``Packed`` sets them from its document boundaries, ``megatron_fields`` from
the EOD token of a window, as Megatron computes them (both tested window by window
against megatron-core's own builder).
"""

from __future__ import annotations

from typing import Any

import numpy as np

__all__ = ["MEGATRON_FLAGS", "attention_mask", "check_flags", "megatron_fields"]

# Megatron's switches for the sample dict, by its names, with its defaults: all off.
MEGATRON_FLAGS = ("reset_position_ids", "reset_attention_mask", "eod_mask_loss")


def attention_mask(document_ids: np.ndarray) -> np.ndarray:
    """Megatron's ``attention_mask`` of windows, ``(..., 1, S, S)`` booleans, True where
    a token may not attend (later tokens, other documents), from each token's document."""
    later = np.triu(np.ones((document_ids.shape[-1],) * 2, dtype=bool), 1)
    return (later | (document_ids[..., :, None] != document_ids[..., None, :]))[..., None, :, :]


def check_flags(flags: dict[str, Any], output: str, name: str) -> None:
    """Megatron's switches (``MEGATRON_FLAGS``): booleans, and only for the sample dict."""
    for flag, value in flags.items():
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"{name}: {flag} must be true or false, got {value!r}")
    on = [flag for flag, value in flags.items() if value]
    if on and output != "dict":
        raise ValueError(
            f'{name}: {", ".join(on)} shape Megatron\'s sample dict, and output = "{output}" '
            'gives token windows; give output = "dict"'
        )


def megatron_fields(
    tokens: np.ndarray, eod_token: int | None, *, reset_position_ids: bool = False,
    reset_attention_mask: bool = False, eod_mask_loss: bool = False,
) -> dict[str, np.ndarray]:  # fmt: skip
    """``loss_mask``, ``position_ids`` (and, with ``reset_attention_mask``,
    ``attention_mask``: ``(1, S, S)``, True where masked) of a window's input tokens,
    as Megatron's GPT dataset computes them from the EOD token."""
    s = tokens.size
    eod = np.flatnonzero(tokens == eod_token) if eod_token is not None else np.zeros(0, int)
    loss_mask = np.ones(s, dtype=np.float32)
    if eod_mask_loss:
        loss_mask[eod] = 0.0
    starts = np.zeros(s, dtype=np.int64)  # each token's document start within the window
    starts[eod[eod + 1 < s] + 1] = eod[eod + 1 < s] + 1
    starts = np.maximum.accumulate(starts)
    positions = np.arange(s, dtype=np.int64)
    out = {"loss_mask": loss_mask,
           "position_ids": positions - starts if reset_position_ids else positions}  # fmt: skip
    if reset_attention_mask:  # a document's start names it
        out["attention_mask"] = attention_mask(starts)
    return out
