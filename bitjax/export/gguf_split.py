"""Split a GGUF file into llama.cpp's split files (`NAME-00001-of-0000N.gguf`), byte for byte the same tensors.

llama.cpp (and wllama in the browser) loads a split model from its first file and finds the others by name:
every file is a GGUF of its own holding whole tensors, the first one all the metadata, and each one
`split.no`, `split.count` and `split.tensors.count`. gguf-py's writer lays them out (its `split_max_size`);
this module only copies an existing file's metadata and tensor bytes into it, so a split file holds exactly
what the checked single file held.
"""

from __future__ import annotations

from pathlib import Path

import gguf

from bitjax.errors import ExportError


def split_gguf(path: Path, max_bytes: int) -> list[Path]:
    """Write `path` as split files of at most `max_bytes` of tensor data each (a tensor is never cut) next to it.

    Returns the files in order; the original is left in place (the caller removes it). A file whose tensor
    data fits `max_bytes` is not split: the result is `[path]`.
    """
    reader = gguf.GGUFReader(path)
    tensor_bytes = [int(t.n_bytes) for t in reader.tensors]
    if sum(tensor_bytes) <= max_bytes:
        return [path]
    if max(tensor_bytes) > max_bytes:
        biggest = reader.tensors[tensor_bytes.index(max(tensor_bytes))]
        raise ExportError(f"tensor {biggest.name} holds {biggest.n_bytes / 1e6:.2f} MB, more than one split file of "
                          f"{max_bytes / 1e6:.2f} MB may hold (a tensor is never cut); raise --split-mb")
    arch = reader.get_field(gguf.Keys.General.ARCHITECTURE).contents()
    writer = gguf.GGUFWriter(path, arch, split_max_size=max_bytes)   # names the files after `path`
    alignment = reader.get_field(gguf.Keys.General.ALIGNMENT)
    if alignment is not None:
        writer.data_alignment = int(alignment.contents())
    for field in reader.fields.values():
        if field.name == gguf.Keys.General.ARCHITECTURE or field.name.startswith("GGUF."):
            continue   # written by GGUFWriter itself
        kind = field.types[0]
        sub_type = field.types[-1] if kind == gguf.GGUFValueType.ARRAY else None
        writer.add_key_value(field.name, field.contents(), kind, sub_type=sub_type)
    for tensor in reader.tensors:
        writer.add_tensor_info(tensor.name, tensor.data.shape, tensor.data.dtype, tensor.data.nbytes,
                               tensor.tensor_type)
    names = writer.format_shard_names(path)   # NAME-00001-of-0000N.gguf beside the input
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_ti_data_to_file()
    for tensor in reader.tensors:
        writer.write_tensor_data(tensor.data, tensor_endianess=reader.endianess)
    writer.close()
    check_split(reader, names)
    return names


def check_split(reader: gguf.GGUFReader, names: list[Path]) -> None:
    """Every tensor of the original is in exactly one split file, with the same type, shape and bytes."""
    original = {t.name: t for t in reader.tensors}
    seen = set()
    for i, name in enumerate(names):
        part = gguf.GGUFReader(name)
        split_no = part.get_field(gguf.Keys.Split.LLM_KV_SPLIT_NO)
        if split_no is None or int(split_no.contents()) != i:
            raise ExportError(f"{name}: split.no is not {i} on read-back")
        for t in part.tensors:
            want = original.get(t.name)
            if want is None or t.name in seen or t.tensor_type != want.tensor_type \
                    or t.data.tobytes() != want.data.tobytes():
                raise ExportError(f"{name}: tensor {t.name} differs from the unsplit file on read-back")
            seen.add(t.name)
    if seen != set(original):
        raise ExportError(f"{names[0]}: {len(set(original) - seen)} tensors missing from the split files")
