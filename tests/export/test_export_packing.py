import numpy as np
import pytest

from bitjax.export.packing import pack_ternary, packed_rows, unpack_ternary


def test_hf_layout_by_hand():
    # 8 output rows, R = 2 packed rows: packed row r, bits 2i..2i+1 hold row i*R + r, stored as code + 1.
    codes = np.array([[0], [1], [-1], [1], [1], [0], [-1], [-1]], np.int8)
    packed = pack_ternary(codes)
    assert packed.shape == (2, 1)
    # row 0 gets rows 0, 2, 4, 6 -> stored 1, 0, 2, 0 -> 0b00_10_00_01
    assert packed[0, 0] == 0b00100001
    # row 1 gets rows 1, 3, 5, 7 -> stored 2, 2, 1, 0 -> 0b00_01_10_10
    assert packed[1, 0] == 0b00011010


@pytest.mark.parametrize("out_features", [4, 7, 12, 257])
def test_round_trip(out_features):
    rng = np.random.default_rng(out_features)
    codes = rng.integers(-1, 2, size=(out_features, 9)).astype(np.int8)
    packed = pack_ternary(codes)
    assert packed.shape == (packed_rows(out_features), 9) and packed.dtype == np.uint8
    np.testing.assert_array_equal(unpack_ternary(packed, out_features), codes)


def test_rejects_non_ternary_input_and_value_three():
    with pytest.raises(ValueError, match="codes in"):
        pack_ternary(np.array([[2]], np.int8))
    with pytest.raises(ValueError, match="value 3"):
        unpack_ternary(np.array([[0b11]], np.uint8), 4)


def test_matches_transformers_pack_and_unpack():
    torch = pytest.importorskip("torch")
    bitnet = pytest.importorskip("transformers.integrations.bitnet")
    torch.compiler.set_stance("force_eager")
    rng = np.random.default_rng(0)
    codes = rng.integers(-1, 2, size=(64, 48)).astype(np.int8)
    theirs = bitnet.pack_weights(torch.tensor(codes, dtype=torch.int8).clone()).numpy()
    np.testing.assert_array_equal(pack_ternary(codes), theirs)
    unpacked = bitnet.unpack_weights(torch.tensor(pack_ternary(codes)), dtype=torch.float32).numpy()
    np.testing.assert_array_equal(unpacked, codes.astype(np.float32))
