"""Where a source's documents come from, and how they become tokens.

  uris            source URIs: the SOURCE_KINDS table (tfds, parquet, jsonl, arrayrecord, tokens, traces)
  records         JSONL and ArrayRecord documents, checked record by record
  text_files      text files read a chunk at a time (Parquet row groups, JSONL byte ranges, records)
  streaming       streamed sources: files sharded, tokenized on the fly, window-shuffled, held out by hash
  corpora         the corpora shipped as PyPI packages; tfds_corpora builds them with TFDS
  token_shard     one tokenized source held as a shard (tokens, offsets, prompt lengths): writing, reading
  token_directory many token shards as one source (`tokens:DIR`): layout and reader
  pretokenize     `bitjax tokenize`: a recipe's text sources written as token directories, by many processes
"""
