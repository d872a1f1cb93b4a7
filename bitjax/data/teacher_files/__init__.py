"""What the teachers write and the pipeline reads: top-k caches and reasoning traces.

  topk_cache          the teacher-cache format (layout, records, markers) and its checked reader
  topk_cache_writer   writing a cache: resumable, one process per shard set, local or gs://
  cache_stream        a kd source past its cache: its text after the cached sequences (on_cache_exhausted)
  traces              trace files: reading, checking, answers, SFT documents and REDI pairs

The teachers (bitjax.teachers) write these files; nothing here imports them.
"""
