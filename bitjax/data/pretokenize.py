"""`bitjax tokenize`: a recipe's text sources pre-tokenized into token shards, by many processes, resumably.

Process p of P takes input files p, p + P, p + 2P, ... of every text source (its files in sorted order,
bitjax.data.sources.text_files) and writes one shard per input file into OUT/<source> (the layout of
bitjax.data.sources.token_directory). A shard depends on its input file and the tokenizer alone, so any process count
writes the same shards. A finished shard gets its `.done` file (with the SHA-256 of each of its files) after
everything else; a rerun skips shards that have one and rewrites the rest, so a killed job loses only the
shards it was writing. The process that finds every shard done writes the manifest, and `tokens:OUT/<source>`
then reads the directory.

Memory: a few chunks of the input and one input file's document offsets; tokens go to a local temporary file
as they are made and are then copied into `tokens.npy` (local or gs://, through etils.epath).
"""

from __future__ import annotations

import functools
import hashlib
import io
import json
import tempfile

import grain
import numpy as np
from etils import epath
from tqdm import tqdm

from bitjax import tokenizer as tokenizer_lib
from bitjax.data.pipeline import resolve_tokenizer
from bitjax.data.sources import token_directory, uris
from bitjax.data.sources.token_shard import tokenize_documents
from bitjax.errors import ConfigError, DataError
from bitjax.paths import write_atomic
from bitjax.sharding import initialize_distributed

_COPY_BYTES = 16 << 20


def process_slot(mesh_cfg, index: int | None, count: int | None) -> tuple[int, int]:
    """This process's index and the process count: as given, or JAX's after the recipe's multi-host start."""
    if (index is None) != (count is None):
        raise ConfigError("pass --process-index and --process-count together (or neither, to take JAX's)")
    if index is None:
        import jax

        initialize_distributed(mesh_cfg)
        index, count = jax.process_index(), jax.process_count()
    if count < 1 or not 0 <= index < count:
        raise ConfigError(f"--process-index {index} --process-count {count}: the index must lie in 0..count-1")
    return index, count


def tokenize_recipe(cfg, out: epath.Path, process_index: int = 0, process_count: int = 1, *,
                    progress: bool = True) -> dict[str, str]:
    """Tokenize this process's share of every text source of a TrainConfig into `out/<source>`; a summary
    line per source."""
    tok = tokenizer_lib.load(resolve_tokenizer(cfg.data))
    fingerprint = tokenizer_lib.fingerprint(tok)
    sources = [s for s in cfg.data.sources if uris.parse_uri(s.uri)[0] in uris.TEXT_KINDS]
    if not sources:
        raise ConfigError("the recipe has no text source to tokenize (tokens: and traces: sources are skipped)")
    summaries = {}
    for src in sources:
        files = uris.text_files(src.uri, uris.fields_of(src), src.data_dir)
        job = _SourceJob(src.uri, files, out / src.name, tok, fingerprint, cfg.data.read_threads)
        summaries[src.name] = job.run(process_index, process_count, progress)
    return summaries


class _SourceJob:
    def __init__(self, uri: str, files: list, directory: epath.Path, tok, fingerprint: str, threads: int):
        self.uri, self.files, self.directory = uri, files, directory
        self.tok, self.fingerprint, self.threads = tok, fingerprint, threads
        self.inputs = [str(f.path) for f in files]

    def run(self, process_index: int, process_count: int, progress: bool) -> str:
        self.directory.mkdir(parents=True, exist_ok=True)
        mine = [i for i in range(process_index, len(self.files), process_count) if self._done(i) is None]
        bar = tqdm(total=sum(self.files[i].num_chunks() for i in mine), unit="chunk", disable=None if progress
                   else True, desc=f"tokenize {self.directory.name} ({process_index + 1}/{process_count})")
        for i in mine:
            self._write_shard(i, bar)
        bar.close()
        entries = [self._done(i) for i in range(len(self.files))]
        missing = sum(e is None for e in entries)
        if missing:
            return (f"this process's shards are done; {missing} of {len(entries)} are still missing (other "
                    f"processes write them; the last to finish writes {self.directory / token_directory.MANIFEST})")
        data = token_directory.manifest(entries, self.fingerprint, self.uri, self.inputs)
        path = self.directory / token_directory.MANIFEST
        text = json.dumps(data, indent=2)
        if not path.exists() or path.read_text() != text:
            write_atomic(path, text.encode())
        return (f"{data['documents']:,} documents, {data['tokens']:,} tokens in {len(entries)} shard(s) in "
                f"{self.directory} (a source `tokens:{self.directory}`)")

    def _done(self, index: int) -> dict | None:
        """Shard `index`'s done record, checked against this job's input and tokenizer (None: not done)."""
        path = self.directory / token_directory.done_name(index)
        if not path.exists():
            return None
        try:
            entry = json.loads(path.read_text())
        except ValueError:
            return None   # torn by a kill while it was written (a local write is a rename, a bucket's atomic)
        if entry.get("input") != self.inputs[index] or entry.get("tokenizer_fingerprint") != self.fingerprint:
            raise DataError(f"{path}: shard {index} was tokenized from {entry.get('input')} with tokenizer "
                            f"{entry.get('tokenizer_fingerprint')}, this job reads {self.inputs[index]} with "
                            f"{self.fingerprint} (the inputs or the tokenizer changed); tokenize into a new --out")
        return entry

    def _chunks(self, file):
        """The input file's chunks tokenized in order, `threads` at a time (Grain threads; tokenizers in Rust)."""
        def encode(k):
            return tokenize_documents(file.read_chunk(k), self.tok, str(file.path), self.fingerprint)

        chunks = grain.MapDataset.range(file.num_chunks()).map(encode)
        return chunks.to_iter_dataset(grain.ReadOptions(num_threads=self.threads,
                                                        prefetch_buffer_size=self.threads))

    def _write_shard(self, index: int, bar) -> None:
        file, shard_dir = self.files[index], self.directory / token_directory.shard_name(index)
        shard_dir.mkdir(parents=True, exist_ok=True)
        lengths, prompt_lengths, n_tokens, max_id = [], [], 0, -1
        with tempfile.TemporaryFile() as raw:   # the tokens, before their count (the .npy header) is known
            for chunk in self._chunks(file):
                tokens = np.ascontiguousarray(chunk.tokens, np.int32)
                raw.write(tokens.tobytes())
                lengths.append(np.diff(chunk.offsets))
                prompt_lengths.append(chunk.prompt_lengths)
                n_tokens += len(tokens)
                max_id = max(max_id, int(tokens.max(initial=-1)))
                bar.update()
            raw.seek(0)
            files = {"tokens.npy": _write_npy(shard_dir / "tokens.npy", np.dtype(np.int32), n_tokens, raw)}
        lengths_all = np.concatenate(lengths) if lengths else np.zeros(0, np.int64)
        offsets = np.concatenate([[0], np.cumsum(lengths_all)]).astype(np.int64)
        prompts = np.concatenate(prompt_lengths).astype(np.int32) if prompt_lengths else np.zeros(0, np.int32)
        for name, array in (("offsets.npy", offsets), ("prompt_lengths.npy", prompts)):
            buffer = io.BytesIO()
            np.save(buffer, array, allow_pickle=False)
            files[name] = _write_bytes(shard_dir / name, buffer.getvalue())
        meta = {"tokenizer_fingerprint": self.fingerprint, "documents": len(lengths_all), "tokens": n_tokens,
                "source": str(file.path)}
        files["meta.json"] = _write_bytes(shard_dir / "meta.json", json.dumps(meta, indent=2).encode())
        entry = {"name": token_directory.shard_name(index), "input": self.inputs[index], "documents": len(lengths_all),
                 "tokens": n_tokens, "max_id": max_id, "tokenizer_fingerprint": self.fingerprint, "files": files}
        write_atomic(self.directory / token_directory.done_name(index), json.dumps(entry, indent=2).encode())


def _write_bytes(path: epath.Path, data: bytes) -> dict:
    path.write_bytes(data)
    return {"bytes": len(data), "sha256": hashlib.sha256(data).hexdigest()}


def _write_npy(path: epath.Path, dtype: np.dtype, n: int, raw) -> dict:
    """A 1-D .npy of `n` values whose bytes are in the open file `raw`, copied block by block and hashed."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": np.lib.format.dtype_to_descr(dtype),
                                                  "fortran_order": False, "shape": (n,)})
    digest, size = hashlib.sha256(header.getvalue()), len(header.getvalue())
    with path.open("wb") as out:
        out.write(header.getvalue())
        for block in iter(functools.partial(raw.read, _COPY_BYTES), b""):
            out.write(block)
            digest.update(block)
            size += len(block)
    return {"bytes": size, "sha256": digest.hexdigest()}
