"""The Hugging Face BitNet 2-bit layout: four ternary rows per uint8 row, in four row blocks.

For codes `q` of shape (O, I) and R = ceil(O / 4) packed rows, packed[r, c] holds, in bits 2i..2i+1
(least significant first), the value `q[i * R + r, c] + 1` in {0, 1, 2}. This is what
`transformers.integrations.bitnet.pack_weights` writes and `unpack_weights` reads.
"""

from __future__ import annotations

import numpy as np

VALUES_PER_BYTE = 4


def packed_rows(out_features: int) -> int:
    return -(-out_features // VALUES_PER_BYTE)


def pack_ternary(codes_OI: np.ndarray) -> np.ndarray:
    """int8 codes in {-1, 0, 1}, (O, I) -> uint8 (ceil(O/4), I). Rows past O (when O % 4 != 0) are zero bits."""
    codes_OI = np.asarray(codes_OI)
    if codes_OI.ndim != 2:
        raise ValueError(f"pack_ternary expects a 2-D (out, in) array, got shape {codes_OI.shape}")
    if codes_OI.size and (codes_OI.min() < -1 or codes_OI.max() > 1):
        raise ValueError("pack_ternary expects codes in {-1, 0, 1}")
    out_features, in_features = codes_OI.shape
    rows = packed_rows(out_features)
    stored_OI = (codes_OI.astype(np.int16) + 1).astype(np.uint8)
    packed_QI = np.zeros((rows, in_features), np.uint8)
    for i in range(VALUES_PER_BYTE):
        block = stored_OI[i * rows:(i + 1) * rows]
        packed_QI[:block.shape[0]] |= block << np.uint8(2 * i)
    return packed_QI


def unpack_ternary(packed_QI: np.ndarray, out_features: int) -> np.ndarray:
    """uint8 (R, I) -> int8 codes (out_features, I); raises on the unused 2-bit value 3."""
    packed_QI = np.asarray(packed_QI, np.uint8)
    rows = packed_QI.shape[0]
    if rows != packed_rows(out_features):
        raise ValueError(f"{rows} packed rows cannot hold {out_features} output rows "
                         f"(need {packed_rows(out_features)})")
    blocks = [(packed_QI >> np.uint8(2 * i)) & np.uint8(3) for i in range(VALUES_PER_BYTE)]
    stored_OI = np.concatenate(blocks, axis=0)[:out_features]
    if np.any(stored_OI == 3):
        raise ValueError("packed tensor holds the 2-bit value 3, which is not a ternary code")
    return stored_OI.astype(np.int8) - np.int8(1)
