"""Everything that runs a teacher or a generator model, on the teacher's side of the data.

  backends      teacher models behind one interface (GGUF via llama.cpp, transformers, a bitjax run)
  jax_teacher   any of them imported into bitjax, jitted and sharded over a mesh (cache-teacher --backend jax)
  cache_writer  `bitjax cache-teacher`: a teacher's top-k over a recipe's distilled sources
  traces        `bitjax traces`: sample reasoning traces and label them by their verified answer
  rephrase      `bitjax rephrase`: BeyondWeb-style rewriting of natural documents
  rephrase_gates  the quality gates every rephrased line is scored on (faithfulness, length, ...)
  chat_models   chat models (llama.cpp, transformers) for the trace sampler and the rephraser
  llama_cpp     loading llama.cpp models safely on CPUs
  jsonl_output  append-only JSONL outputs that survive being killed

The data package reads what these write (caches, trace files, rephrased JSONL) and never imports them.
"""
