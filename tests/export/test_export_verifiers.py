"""The read-back verifiers on real corruption: one ternary code or one scale changed in an exported GGUF
or packed file (no stubbing) makes `verify_gguf` / `verify_packed` raise, naming the tensor; the file as
written passes."""

import shutil

import gguf
import numpy as np
import pytest
from safetensors.numpy import load_file, save_file

from bitjax.export import ExportError, export_run, gguf_writer, hf_packed
from bitjax.export.gguf_tokenizer import read_vocab
from bitjax.export.model_source import TernaryModel, load_run


@pytest.fixture(scope="module")
def model(trained_run):
    return TernaryModel.from_run(load_run(trained_run))


@pytest.fixture(scope="module")
def tq2_file(trained_run, tmp_path_factory):
    return export_run(trained_run, tmp_path_factory.mktemp("verify") / "tiny-tq2_0.gguf", format="gguf",
                      gguf_type="tq2_0")["path"]


def _flip_byte(path, offset, mask):
    with open(path, "r+b") as f:
        f.seek(offset)
        byte = f.read(1)[0]
        f.seek(offset)
        f.write(bytes([byte ^ mask]))


def _verify_gguf(path, model):
    gguf_writer.verify_gguf(path, model, "tq2_0", read_vocab(model.tokenizer_path, model.config.vocab_size))


def _tensor(path, name):
    return next(t for t in gguf.GGUFReader(path).tensors if t.name == name)


def test_gguf_as_written_passes_its_verifier(tq2_file, model):
    _verify_gguf(tq2_file, model)


def test_gguf_one_flipped_code_is_caught(tq2_file, model, tmp_path):
    """TQ2_0 stores code + 1 in two bits (blocks of 64 bytes of codes, then an fp16 d): XOR 1 on the low bits
    of the first byte of blk.0.attn_q changes exactly one code."""
    path = tmp_path / "one-code.gguf"
    shutil.copy(tq2_file, path)
    _flip_byte(path, _tensor(path, "blk.0.attn_q.weight").data_offset, 0x01)
    with pytest.raises(ExportError, match=r"1 codes of blk\.0\.attn_q .*differ"):
        _verify_gguf(path, model)


def test_gguf_one_changed_block_scale_is_caught(tq2_file, model, tmp_path):
    """The fp16 d of the first TQ2_0 block (bytes 64-65) scaled by 2: all codes of that block read back wrong."""
    path = tmp_path / "block-d.gguf"
    shutil.copy(tq2_file, path)
    _flip_byte(path, _tensor(path, "blk.0.ffn_down.weight").data_offset + 65, 0x04)   # fp16 exponent + 1
    with pytest.raises(ExportError, match=r"codes of blk\.0\.ffn_down .*differ"):
        _verify_gguf(path, model)


def test_gguf_one_flipped_tensor_scale_is_caught(tq2_file, model, tmp_path):
    """The low mantissa bit of blk.1.attn_v.scale (float32): the scale must read back bit-exact."""
    path = tmp_path / "scale.gguf"
    shutil.copy(tq2_file, path)
    _flip_byte(path, _tensor(path, "blk.1.attn_v.scale").data_offset, 0x01)
    with pytest.raises(ExportError, match=r"blk\.1\.attn_v\.scale reads back as"):
        _verify_gguf(path, model)


@pytest.fixture(scope="module")
def packed_dir(trained_run, tmp_path_factory):
    return export_run(trained_run, tmp_path_factory.mktemp("verify-packed") / "packed", format="packed")["path"]


def _corrupt_packed(packed_dir, tmp_path, change):
    out = tmp_path / "packed"
    shutil.copytree(packed_dir, out)
    tensors = load_file(str(out / hf_packed.WEIGHTS_FILE))
    change(tensors)
    save_file(tensors, str(out / hf_packed.WEIGHTS_FILE))
    return out


def test_packed_as_written_passes_its_verifier(packed_dir, model):
    hf_packed.verify_packed(packed_dir, model)


def test_packed_one_flipped_code_is_caught(packed_dir, model, tmp_path):
    """Four codes share a uint8 (2 bits each, code + 1); XOR 1 on one byte changes exactly one code."""
    name = "layers.0.self_attn.q_proj"

    def change(tensors):
        w = tensors[f"model.{name}.weight"].copy()
        w.reshape(-1)[0] ^= 1
        tensors[f"model.{name}.weight"] = w
    out = _corrupt_packed(packed_dir, tmp_path, change)
    with pytest.raises(ExportError, match=rf"1 codes of {name} read back differ"):
        hf_packed.verify_packed(out, model)


def test_packed_one_changed_scale_is_caught(packed_dir, model, tmp_path):
    name = "layers.1.mlp.down_proj"

    def change(tensors):
        s = tensors[f"model.{name}.weight_scale"].copy()
        s[0] = np.nextafter(s[0], np.float32(np.inf))
        tensors[f"model.{name}.weight_scale"] = s
    out = _corrupt_packed(packed_dir, tmp_path, change)
    with pytest.raises(ExportError, match=rf"weight_scale of {name} reads back as"):
        hf_packed.verify_packed(out, model)
