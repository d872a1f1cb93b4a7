"""Text files read one chunk at a time: the unit a streamed source reads, tokenizes and checkpoints.

A file is cut into chunks that can each be read without reading the ones before it, so a data position is
(file, chunk, document in the chunk) and resuming re-reads one chunk, never a file from its start:
  parquet      rows of one row group holding about PARQUET_CHUNK_BYTES of text (a smaller group is one chunk),
               read as record batches of only its text (prompt, id) columns (pyarrow)
  jsonl        CHUNK_BYTES of the file; a line belongs to the chunk it starts in
  arrayrecord  RECORDS_PER_CHUNK records of UTF-8 JSON (array_record, which reads gs:// itself)
  tfds         RECORDS_PER_CHUNK records of one array_record file of a TFDS dataset's split
Parquet and JSONL are opened through etils.epath: a local path and a gs:// object are read the same way.
A host holds a few chunks per open file, so its memory follows the chunk sizes, not the corpus size nor the row
groups a Parquet writer chose.

`size()` is a file's size in its format's unit (uncompressed text-column bytes, bytes, records) and
`chunk_size(k)` chunk k's: tokens per unit of one tokenized chunk times the summed sizes estimates a source's
tokens without reading it (`bitjax plan`).
"""

from __future__ import annotations

import functools
import threading

from etils import epath

from bitjax.data.sources.records import Fields, json_to_document, record_to_document
from bitjax.errors import DataError, first_line

CHUNK_BYTES = 8 << 20        # a JSONL chunk
PARQUET_CHUNK_BYTES = 1 << 20   # the text of a Parquet chunk: row groups larger than this are read in pieces
RECORDS_PER_CHUNK = 4096     # an ArrayRecord / TFDS chunk


class ParquetText:
    """A Parquet file with a string column of text (FineWeb-Edu's layout: `text`, `id`, and metadata).

    A chunk is a run of rows inside one row group holding about PARQUET_CHUNK_BYTES of text, found from the footer
    alone (a row group's text bytes and row count), so memory follows that size whatever row groups the
    writer chose (`pq.write_table` puts up to a million rows in one). A chunk is read as Arrow record batches
    (`iter_batches`) through a buffered stream, never a whole row group; a chunk after the first of its group
    continues the reader the previous chunk left (kept per file), or skips the rows before it (on resume).
    """

    READ_BUFFER = 1 << 20   # bytes of a column chunk read at a time (0 would read a row group's column whole)
    OPEN_READERS = 2        # readers kept open per file, each where the last chunk it read ended

    def __init__(self, path: epath.Path, fields: Fields):
        self.path, self.fields = path, fields
        meta = self._metadata
        names = meta.schema.names
        missing = [c for c in filter(None, (fields.text, fields.prompt)) if c not in names]
        if missing:
            raise DataError(f"{path}: no column {missing[0]!r} (columns: {', '.join(names)}); name the text "
                            "column with the source's text_field (prompt_field for prompts)")
        self._columns = [c for c in dict.fromkeys((fields.text, fields.prompt, fields.id)) if c and c in names]
        self._lock = threading.Lock()
        self._readers: dict[tuple[int, int], _RowGroupReader] = {}   # (row group, next row) -> its reader

    @functools.cached_property
    def _metadata(self):
        import pyarrow.parquet as pq

        try:
            with self.path.open("rb") as f:
                return pq.ParquetFile(f).metadata
        except Exception as e:   # noqa: BLE001 - pyarrow raises ArrowInvalid, OSError... for a damaged file
            raise DataError(f"{self.path}: not a readable Parquet file ({first_line(e)}); re-download or "
                            "rewrite it") from None

    def _group_text_bytes(self, g: int) -> int:
        group = self._metadata.row_group(g)
        text = {self.fields.text, self.fields.prompt}
        return sum(group.column(i).total_uncompressed_size for i in range(group.num_columns)
                   if group.column(i).path_in_schema in text)

    @functools.cached_property
    def _chunks(self) -> list[tuple[int, int, int]]:
        """(row group, first row, rows) of every chunk: each group in pieces of about PARQUET_CHUNK_BYTES of text
        (read when used: tests set it to cut small files into several chunks)."""
        chunks = []
        for g in range(self._metadata.num_row_groups):
            rows = self._metadata.row_group(g).num_rows
            parts = max(1, min(rows, -(-self._group_text_bytes(g) // PARQUET_CHUNK_BYTES)))
            per = -(-rows // parts) if rows else 0
            chunks += [(g, start, min(per, rows - start)) for start in range(0, rows, per)] if rows else [(g, 0, 0)]
        return chunks

    def num_chunks(self) -> int:
        return len(self._chunks)

    def size(self) -> int:
        return sum(self._group_text_bytes(g) for g in range(self._metadata.num_row_groups))

    def chunk_size(self, k: int) -> int:
        g, _, rows = self._chunks[k]
        return self._group_text_bytes(g) * rows // max(self._metadata.row_group(g).num_rows, 1)

    def read_chunk(self, k: int) -> list[dict]:
        g, start, rows = self._chunks[k]
        where = f"{self.path}: row group {g}"
        if rows == 0:
            return []
        try:
            with self._lock:   # one file's chunks are read one at a time; tokenizing them is not
                table = self._take(g, start, rows)
        except Exception as e:   # noqa: BLE001
            raise DataError(f"{where} cannot be read ({first_line(e)}); the file is damaged, re-download or "
                            "rewrite it") from None
        columns = {name: table.column(name).to_pylist() for name in self._columns}
        docs = []
        for i in range(table.num_rows):
            record = {name: values[i] for name, values in columns.items()}
            docs.append(record_to_document(record, self.fields, f"{where}, row {start + i}"))
        return docs

    def _take(self, g: int, start: int, rows: int):
        reader = self._readers.pop((g, start), None)
        group_ends = start + rows >= self._metadata.row_group(g).num_rows
        # readers behind this chunk (another group, or rows before it) are not asked for again in this pass
        for key in [key for key in self._readers if key[0] != g or key[1] < start or group_ends]:
            self._readers.pop(key).close()
        reader = reader or _RowGroupReader(self, g, start)
        table = reader.take(rows)
        if group_ends:
            reader.close()
        else:
            self._readers[(g, start + rows)] = reader
            while len(self._readers) > self.OPEN_READERS:
                self._readers.pop(next(iter(self._readers))).close()
        return table


class _RowGroupReader:
    """The rows of one row group from `start` on, as record batches through a buffered stream."""

    BATCH_ROWS = 1024

    def __init__(self, file: ParquetText, group: int, start: int):
        import pyarrow.parquet as pq

        self._handle = file.path.open("rb")
        # a buffered stream reads a column chunk READ_BUFFER bytes at a time, never a row group's column whole
        parquet = pq.ParquetFile(self._handle, metadata=file._metadata, buffer_size=file.READ_BUFFER)
        self._batches = parquet.iter_batches(batch_size=self.BATCH_ROWS, row_groups=[group], columns=file._columns)
        self._pending = None   # rows of the last batch read that the last chunk did not take
        self.take(start)       # resuming mid-group: the rows before the chunk are decoded, not kept

    def take(self, rows: int):
        """The next `rows` rows as one pyarrow Table."""
        import pyarrow as pa

        parts, wanted = [], rows
        while wanted > 0:
            batch = self._pending if self._pending is not None else next(self._batches)
            self._pending = batch.slice(wanted) if batch.num_rows > wanted else None
            parts.append(batch.slice(0, wanted))
            wanted -= min(wanted, batch.num_rows)
        return pa.Table.from_batches(parts) if parts else pa.table({})

    def close(self) -> None:
        self._handle.close()


class _EqualChunks:
    """A file whose chunks are `_per_chunk` units (bytes, records) of its `_total`, the last one shorter."""

    _total: int
    _per_chunk: int   # units per chunk (a property of each kind)

    def num_chunks(self) -> int:
        return -(-self._total // self._per_chunk)

    def size(self) -> int:
        return self._total

    def chunk_size(self, k: int) -> int:
        return min(self._per_chunk, self._total - k * self._per_chunk)


class JsonlText(_EqualChunks):
    """A JSON-lines file, read CHUNK_BYTES at a time from a seek (no line index is needed)."""

    @property
    def _per_chunk(self) -> int:
        return CHUNK_BYTES   # read when used: tests cut files into small chunks by setting it

    def __init__(self, path: epath.Path, fields: Fields):
        self.path, self.fields = path, fields
        self._total = path.stat().length
        if self._total == 0:
            raise DataError(f"{path}: the file is empty; remove it or fill it with JSON lines")

    def read_chunk(self, k: int) -> list[dict]:
        start, end = k * CHUNK_BYTES, (k + 1) * CHUNK_BYTES
        docs = []
        with self.path.open("rb") as f:
            if start:   # the line that starts at or after `start` is this chunk's first
                f.seek(start - 1)
                f.readline(self.fields.max_line_bytes + 1)
            position = f.tell()
            while position < end:
                raw = f.readline(self.fields.max_line_bytes + 1)
                if not raw:
                    break
                where = f"{self.path}: line at byte {position}"
                position += len(raw)
                if len(raw) > self.fields.max_line_bytes:
                    raise DataError(f"{where} is longer than {self.fields.max_line_bytes} bytes; split the "
                                    "document or raise the source's max_line_bytes")
                if raw.strip():
                    docs.append(json_to_document(raw, self.fields, where))
        return docs


class ArrayRecordText(_EqualChunks):
    """An ArrayRecord file of UTF-8 JSON records."""

    @property
    def _per_chunk(self) -> int:
        return RECORDS_PER_CHUNK

    def __init__(self, path: epath.Path, fields: Fields):
        import grain

        self.path, self.fields = path, fields
        try:   # array_record raises bare RuntimeErrors on damaged files
            self._source = grain.sources.ArrayRecordDataSource([str(path)])
            self._total = len(self._source)
        except Exception as e:   # noqa: BLE001
            raise DataError(f"{path}: not a readable ArrayRecord file ({first_line(e)}); rewrite it with "
                            "bitjax.data.sources.records.write_arrayrecord") from None
        if self._total == 0:
            raise DataError(f"{path}: the file holds no records")

    def read_chunk(self, k: int) -> list[dict]:
        docs = []
        for index in range(k * RECORDS_PER_CHUNK, k * RECORDS_PER_CHUNK + self.chunk_size(k)):
            where = f"{self.path}: record {index}"
            try:
                blob = self._source[index]
            except Exception as e:   # noqa: BLE001
                raise DataError(f"{where} cannot be read ({first_line(e)}); the file is truncated or damaged, "
                                "rewrite it") from None
            docs.append(json_to_document(blob, self.fields, where))
        return docs


class TfdsText(_EqualChunks):
    """One array_record file of a TFDS split, read through `tfds.data_source` (records decoded by TFDS)."""

    @property
    def _per_chunk(self) -> int:
        return RECORDS_PER_CHUNK

    def __init__(self, source, path: str, start: int, count: int, fields: Fields):
        self.path, self.fields = path, fields
        self._source, self._start, self._total = source, start, count

    def read_chunk(self, k: int) -> list[dict]:
        first = self._start + k * RECORDS_PER_CHUNK
        docs = []
        for index in range(first, first + self.chunk_size(k)):
            record = {name: value.decode("utf-8") if isinstance(value, bytes) else value
                      for name, value in self._source[index].items()}
            docs.append(record_to_document(record, self.fields, f"{self.path}: record {index - self._start}"))
        return docs


def tfds_files(name: str, data_dir: str, fields: Fields, split: str = "train") -> list[TfdsText]:
    """The array_record files of a built TFDS dataset's split, each with its records."""
    import tensorflow_datasets as tfds

    try:
        source = tfds.data_source(name, data_dir=data_dir, split=split, download=False)
    except Exception as e:   # noqa: BLE001 - TFDS raises its own errors for a missing or unbuilt dataset
        raise DataError(f"tfds:{name}: no {split} split built under data_dir {data_dir} ({first_line(e)}); "
                        "build it there (tfds build, or the dataset's builder with file_format=array_record)"
                        ) from None
    files, start = [], 0
    for instruction in source.dataset_info.splits[split].file_instructions:
        files.append(TfdsText(source, instruction.filename, start, instruction.take, fields))
        start += instruction.take
    if not files:
        raise DataError(f"tfds:{name} in {data_dir} has no {split} records")
    return files


FILE_READERS = {"parquet": ParquetText, "jsonl": JsonlText, "arrayrecord": ArrayRecordText}
