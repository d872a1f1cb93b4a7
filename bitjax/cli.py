"""`bitjax` command line: thin entry points over the library."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="bitjax", description="Train and ship native 1.58-bit LMs.")
    sub = parser.add_subparsers(dest="command", required=True)

    train = sub.add_parser("train", help="train a recipe; resumes from --workdir if it holds a checkpoint")
    train.add_argument("recipe", help="a recipe file with get_config(), e.g. recipes/tiny.py")
    train.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config field, e.g. --set optim.peak_lr=3e-4 (repeatable)")
    train.add_argument("--workdir", default=None, help="run directory (default: runs/<recipe name>)")
    train.add_argument("--no-progress", action="store_true", help="no progress bar or summary")
    train.add_argument("--preset", default=None, help="a launch preset of the recipe (mesh and batch for a "
                       "machine), e.g. v5p-64 or h100x8")

    cache = sub.add_parser("cache-teacher", help="write a teacher's top-k log-probabilities for the sequences "
                           "of a recipe's distillation ('kd') sources")
    cache.add_argument("recipe", help="the recipe whose data (and tokenizer) the cache is for")
    cache.add_argument("--teacher", default=None,
                       help="gguf:PATH, gguf:smollm2, hf:DIR or bitjax:RUN_DIR (default: the recipe's distill.teacher)")
    cache.add_argument("--out", default=None, help="cache directory, one sub-cache per source (default: the "
                       "recipe's distill.cache; resumable: finished shards are kept)")
    cache.add_argument("--k", type=int, default=None, help="top-k entries per position (default: distill.k)")
    cache.add_argument("--examples", type=int, default=None,
                       help="sequences to cache, split over the kd sources (default: distill.cache_examples)")
    cache.add_argument("--shards", type=int, default=4, help="ArrayRecord shards per source (default 4)")
    cache.add_argument("--backend", default=None, choices=["native", "jax"],
                       help="native: llama.cpp / CPU torch, one document at a time; jax: the teacher imported into "
                       "bitjax, jitted and sharded over the recipe's mesh, data.batch_size rows per forward "
                       "(default: distill.cache_backend)")
    cache.add_argument("--preset", default=None, help="a launch preset of the recipe (its mesh and batch)")
    cache.add_argument("--logprob-dtype", default="float16", choices=["float16", "float32"],
                       help="storage of the top-k log-probabilities (default float16)")
    cache.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    tok = sub.add_parser("tokenize", help="pre-tokenize a recipe's text sources into token shards, one per input "
                         "file (distributed over processes, resumable); read them back with tokens:DIR")
    tok.add_argument("recipe", help="the recipe whose text sources and tokenizer to use")
    tok.add_argument("--out", default=None, help="output directory, one sub-directory per source (default: "
                     "tokens/<recipe name>); a local path or gs://")
    tok.add_argument("--process-index", type=int, default=None, help="this process's index (default: "
                     "jax.process_index() after the recipe's multi-host start)")
    tok.add_argument("--process-count", type=int, default=None, help="how many processes share the inputs")
    tok.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")

    evaluate = sub.add_parser("eval", help="held-out perplexity of a trained run")
    evaluate.add_argument("run_dir", help="a run directory written by `bitjax train`")
    evaluate.add_argument("--batches", type=int, default=16, help="held-out batches to score (default 16)")
    evaluate.add_argument("--prompts", default=None, help="held-out problems with gold answers (a `bitjax traces` "
                          "file) to answer greedily (default: the run's eval_prompts)")
    evaluate.add_argument("--limit", type=int, default=None, help="answer only the first N problems")
    evaluate.add_argument("--max-new-tokens", type=int, default=None, help="default: the run's eval_max_new_tokens")

    fit = sub.add_parser("fit-check", help="compile a recipe's train step for a TPU slice on this CPU: memory, "
                         "FLOPs, step time, MFU, and whether it fits (exit 1 if not)")
    fit.add_argument("recipe", help="a recipe file, e.g. recipes/bitnet_700m.py")
    fit.add_argument("--topology", required=True, help="TPU slice: v4-8, v5e-16, v5p-64, v6e-8, ...")
    fit.add_argument("--preset", default=None, help="launch preset to check (default: the one named like "
                     "--topology, if the recipe has it)")
    fit.add_argument("--teacher-k", type=int, default=None, help="top-k of the distillation cache "
                     "(default: the recipe's distill.k)")
    fit.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    fit.add_argument("--hlo", default=None, metavar="DIR", help="also write the compiled HLO, the buffer assignment "
                     "and XLA's memory-usage report into DIR")
    fit.add_argument("--sweep", default=None, metavar="KEY=V1,V2,...", help="compile once per value of one setting "
                     "(e.g. model.n_layers=2,4,8) and print a memory table")

    plan = sub.add_parser("plan", help="how many times the run reads each source's data, and what its teacher "
                          "caches cost, before anything is trained")
    plan.add_argument("recipe", help="a recipe file")
    plan.add_argument("--preset", default=None, help="a launch preset of the recipe")
    plan.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    plan.add_argument("--teacher-tokens-per-s", type=float, default=None,
                      help="the teacher's throughput, to price its caches in hours")

    export = sub.add_parser("export", help="export a run's latest checkpoint to GGUF (llama.cpp), packed safetensors "
                            "or a static web folder (llama.cpp in WebAssembly)")
    export.add_argument("run_dir", help="a directory written by `bitjax train`")
    export.add_argument("out", help="output: a .gguf file, or a directory for --format packed and --format web")
    export.add_argument("--format", required=True, choices=["gguf", "packed", "web"])
    export.add_argument("--split-mb", type=float, default=None, help="--format web: split the GGUF into files of at "
                        "most this many MB (default 512; a browser reads each file whole)")
    export.add_argument("--type", dest="gguf_type", default=None, choices=["tq2_0", "tq1_0", "f16", "f32"],
                        help="GGUF tensor type of the ternary weights (default tq2_0)")
    export.add_argument("--embedding-type", default=None, choices=["f32", "f16", "q8_0", "q6_k", "q5_k", "q4_k"],
                        help="GGUF type of the token embedding, which is also the tied LM head (default q6_k "
                        "beside tq2_0/tq1_0, else the --type)")
    export.add_argument("--force", action="store_true", help="replace an existing output")
    export.add_argument("--allow-runtime-mismatch", action="store_true",
                        help="write even if the target runtime is known to compute the model differently")

    gen = sub.add_parser("generate", help="stream a continuation from a GGUF file (llama.cpp), a packed directory "
                         "(transformers) or a run directory (bitjax)")
    gen.add_argument("model", help="a .gguf file, a `bitjax export --format packed` directory or a run directory")
    gen.add_argument("--prompt", required=True, help="text to continue (with --chat: the user's message)")
    gen.add_argument("--max-new-tokens", type=int, default=64, help="most tokens to generate (default 64)")
    gen.add_argument("--temperature", type=float, default=0.8, help="0 decodes greedily (default 0.8)")
    gen.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    gen.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    gen.add_argument("--threads", type=int, default=None, help="CPU threads for llama.cpp / torch (default 2 / all)")

    serve = sub.add_parser("serve", help="serve a `--format web` folder on 127.0.0.1 with the headers that give the "
                           "page threads (COOP/COEP)")
    serve.add_argument("out_dir", help="a folder written by `bitjax export --format web`")
    serve.add_argument("--port", type=int, default=8000, help="default 8000; 0 picks a free port")

    reph = sub.add_parser("rephrase", help="rewrite natural documents into denser formats with a generator model")
    reph.add_argument("--source", default="tfds:shakespeare",
                      help="documents to rephrase: tfds:shakespeare, tfds:kjv, jsonl:PATH, arrayrecord:PATH")
    reph.add_argument("--out", required=True, help="JSONL output; rerunning appends what is missing")
    reph.add_argument("--formats", default="qa,textbook,summary",
                      help="comma-separated prompt names from --prompts (default: qa,textbook,summary)")
    reph.add_argument("--generator", default="smollm2",
                      help="'smollm2' (the embedded GGUF), a .gguf file (llama.cpp) or a transformers model dir")
    reph.add_argument("--limit", type=int, default=None, help="rephrase only the first N documents")
    reph.add_argument("--max-new-tokens", type=int, default=128)
    reph.add_argument("--temperature", type=float, default=0.7)
    reph.add_argument("--top-p", type=float, default=0.9)
    reph.add_argument("--seed", type=int, default=0)
    reph.add_argument("--max-chars", type=int, default=800, help="passage length given to the generator")
    reph.add_argument("--threads", type=int, default=1,
                      help="llama.cpp threads (1 is fastest on a busy machine: threads spin-wait on each other)")
    reph.add_argument("--prompts", default=None, help="directory of <format>.txt prompts (default: data/rephrase)")
    _add_gate_options(reph)
    reph.add_argument("--no-progress", action="store_true")

    traces = sub.add_parser("traces", help="sample teacher reasoning traces for math problems, label them by "
                            "their verified final answer (positive / negative)")
    traces.add_argument("--out", required=True, help="JSONL output; rerunning appends what is missing")
    traces.add_argument("--teacher", default="smollm2",
                        help="'smollm2' (the embedded GGUF), a .gguf chat model or a transformers model dir")
    traces.add_argument("--task", default="gsm_symbolic", choices=["gsm_symbolic", "chain_sum"],
                        help="reasoning-gym task (default gsm_symbolic)")
    traces.add_argument("--split", default="train", choices=["train", "heldout"],
                        help="problems to train on, or the held-out ones (disjoint seeds; for gsm_symbolic "
                        "also disjoint templates)")
    traces.add_argument("--prompts", type=int, default=64, help="problems to sample (default 64)")
    traces.add_argument("--samples", type=int, default=4, help="completions per problem (default 4)")
    traces.add_argument("--max-new-tokens", type=int, default=192)
    traces.add_argument("--temperature", type=float, default=0.7, help="0 decodes greedily")
    traces.add_argument("--top-p", type=float, default=0.9)
    traces.add_argument("--seed", type=int, default=0)
    traces.add_argument("--threads", type=int, default=1, help="llama.cpp / torch threads")
    traces.add_argument("--no-progress", action="store_true")

    args = parser.parse_args(argv)
    _quiet_libraries()
    from bitjax.errors import BitjaxError
    try:
        if args.command == "train":
            return _train(args)
        if args.command == "eval":
            return _eval(args)
        if args.command == "cache-teacher":
            return _cache_teacher(args)
        if args.command == "tokenize":
            return _tokenize(args)
        if args.command == "fit-check":
            return _fit_check(args)
        if args.command == "plan":
            return _plan(args)
        if args.command == "export":
            return _export(args)
        if args.command == "generate":
            return _generate(args)
        if args.command == "serve":
            from bitjax.export.web_serve import serve
            return serve(args.out_dir, port=args.port)
        if args.command == "rephrase":
            return _rephrase(args)
        if args.command == "traces":
            return _traces(args)
    except BitjaxError as e:   # anything else is a bug in bitjax and keeps its traceback
        print(f"bitjax: error: {' '.join(str(e).split())}", file=sys.stderr)
        return 2
    return 0


def _quiet_libraries() -> None:
    """Keep stderr for bitjax's own one-line errors: absl (Orbax), JAX and TensorFlow log warnings there."""
    import logging
    import os

    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    for name in ("absl", "jax", "jax._src", "orbax", "tensorflow", "grain", "array_record"):
        logging.getLogger(name).setLevel(logging.ERROR)


def _at_least(value: int | None, least: int, flag: str, what: str) -> None:
    """A count given on the command line that must be at least `least` (None: the default applies)."""
    from bitjax.errors import ConfigError

    if value is not None and value < least:
        raise ConfigError(f"{flag} {value}: {what} must be at least {least}")


def _train(args) -> int:
    from bitjax.config_io import apply_overrides, load_recipe
    from bitjax.errors import ConfigError
    from bitjax.paths import cache_location, check_checkpoint_store, user_path

    # a location that cannot be opened is refused here, before anything is read or written
    workdir = user_path(args.workdir or f"runs/{Path(args.recipe).stem}", "--workdir")
    check_checkpoint_store(workdir, "--workdir")
    if workdir.exists() and not workdir.is_dir():
        raise ConfigError(f"--workdir {workdir} is a file, not a directory; pass a new or existing run directory")
    cfg = apply_overrides(load_recipe(args.recipe, args.preset), args.overrides)
    from bitjax.data.sources import check_location
    for source in cfg.data.sources:   # a bucket without credentials fails here, in one line
        check_location(source)
    if cfg.distill.cache and not cfg.distill.online:
        cache_location(cfg.distill.cache, "distill.cache")
    from bitjax.train import train  # imported after the config is checked: a bad value fails in a second

    summary = train(cfg, workdir, progress=not args.no_progress)
    # SIGTERM (preemption) saved a checkpoint: success; Ctrl-C saved one too, but the run is not done: 130
    return 130 if summary.get("stopped_by") == "SIGINT" else 0


def _cache_teacher(args) -> int:
    from bitjax.config import ConfigError
    from bitjax.config_io import apply_overrides, load_recipe
    from bitjax.paths import cache_location
    from bitjax.teachers.cache_writer import cache_teacher

    _at_least(args.examples, 1, "--examples", "the number of cached sequences")
    _at_least(args.shards, 1, "--shards", "the number of shards")
    _at_least(args.k, 1, "--k", "the top-k")
    cfg = apply_overrides(load_recipe(args.recipe, args.preset), args.overrides)
    teacher, out = args.teacher or cfg.distill.teacher, args.out or cfg.distill.cache
    if not teacher or not out:
        raise ConfigError(f"recipe {args.recipe} names no distill.teacher / distill.cache; pass --teacher and --out")
    out = cache_location(out, "--out")   # an unknown scheme or bucket fails here, before anything is read
    manifests = cache_teacher(cfg, teacher, out, k=args.k if args.k is not None else cfg.distill.k,
                              n_examples=args.examples if args.examples is not None else cfg.distill.cache_examples,
                              num_shards=args.shards, logprob_dtype=args.logprob_dtype, backend=args.backend)
    for name, m in manifests.items():
        print(f"{name}: {m['records']} sequences x {m['seq_len']} positions in {out / name}, "
              f"{m['bytes_per_token']} bytes/token of teacher data "
              f"(full vocabulary in fp16: {2 * m['vocab_size']} bytes/token)")
    return 0


def _tokenize(args) -> int:
    from bitjax.config_io import apply_overrides, load_recipe
    from bitjax.data.pretokenize import process_slot, tokenize_recipe
    from bitjax.paths import user_path

    cfg = apply_overrides(load_recipe(args.recipe), args.overrides)
    out = user_path(args.out or f"tokens/{Path(args.recipe).stem}", "--out")
    index, count = process_slot(cfg.mesh, args.process_index, args.process_count)
    for name, summary in tokenize_recipe(cfg, out, index, count).items():
        print(f"{name}: {summary}")
    return 0


def _fit_check(args) -> int:
    from bitjax import fit_check
    from bitjax.config_io import apply_overrides, load_recipe, recipe_presets
    from bitjax.errors import ConfigError

    fit_check.pin_cpu_platform()
    fit_check.topology(args.topology)  # an unknown name fails here, before anything is compiled
    preset = args.preset or (args.topology if args.topology in recipe_presets(args.recipe) else None)
    cfg = apply_overrides(load_recipe(args.recipe, preset), args.overrides)
    label = f"{Path(args.recipe).stem}" + (f" (preset {preset})" if preset else "")
    if args.sweep:
        key, _, values = args.sweep.partition("=")
        if not key or not values:
            raise ConfigError(f"--sweep {args.sweep!r}; write KEY=V1,V2,... e.g. --sweep model.n_layers=2,4,8")
        rows = fit_check.sweep(cfg, args.topology, key, values.split(","), label, args.teacher_k)
        print(f"fit-check {label} on {args.topology}, sweeping {key}")
        print(fit_check.render_sweep(key, rows))
        return 0 if all(r.fits for _, r in rows) else 1
    report = fit_check.fit_check(cfg, args.topology, label, teacher_k=args.teacher_k, hlo_dir=args.hlo)
    print(report.render())
    return 0 if report.fits else 1


def _plan(args) -> int:
    from bitjax.config_io import apply_overrides, load_recipe
    from bitjax.data import build_pipeline, coverage
    from bitjax.errors import BitjaxError
    from bitjax.paths import cache_location

    cfg = apply_overrides(load_recipe(args.recipe, args.preset), args.overrides)
    cache = cfg.distill.cache if cfg.distill.cache and cache_location(cfg.distill.cache, "distill.cache").is_dir() \
        else ""
    try:
        pipeline = build_pipeline(cfg.data, teacher_cache=cache, vocab_size=cfg.model.vocab_size)
    except BitjaxError as e:   # the recipe's tokenizer or data are not on this machine: plan from the config
        print(f"bitjax: the data cannot be read here ({e}); sizes come from the recipe alone", file=sys.stderr)
        pipeline = None
    print(coverage.render(coverage.coverage(cfg, pipeline), cfg.steps, cfg.data.on_exhausted,
                          args.teacher_tokens_per_s))
    return 0


def _eval(args) -> int:
    from bitjax.evaluate import evaluate, print_report
    from bitjax.paths import user_path

    user_path(args.run_dir, "RUN_DIR")
    # cheap checks first: these values are wrong whatever the run holds, so say so before restoring it
    _at_least(args.batches, 1, "--batches", "the number of held-out batches")
    _at_least(args.limit, 1, "--limit", "the number of problems (leave --limit out for all)")
    _at_least(args.max_new_tokens, 1, "--max-new-tokens", "the number of generated tokens")
    if args.prompts is not None and not Path(args.prompts).is_file():
        from bitjax.errors import ConfigError
        raise ConfigError(f"--prompts {args.prompts}: no such file; pass a `bitjax traces --split heldout` file")

    print_report(evaluate(args.run_dir, n_batches=args.batches, prompts_file=args.prompts, limit=args.limit,
                          max_new_tokens=args.max_new_tokens))
    return 0


def _export(args) -> int:
    from bitjax.export import export_run
    from bitjax.paths import user_path

    user_path(args.run_dir, "RUN_DIR")
    user_path(args.out, "OUT")

    result = export_run(args.run_dir, args.out, format=args.format, gguf_type=args.gguf_type,
                        embedding_type=args.embedding_type, force=args.force,
                        allow_runtime_mismatch=args.allow_runtime_mismatch, progress=True, split_mb=args.split_mb)
    kind = result["format"] + (f" {result['type']}, embedding {result['embedding_type']}" if result["type"] else "")
    print(f"wrote {result['path']} ({kind}, {result['bytes'] / 1e6:.2f} MB, step {result['step']}); "
          "every ternary code read back equals the training quantizer's")
    if result["format"] == "web":
        print(f"serve it with `bitjax serve {result['path']}` (threads) or any static server (one thread)")
    return 0


def _generate(args) -> int:
    from bitjax.text_generation import Sampling, generate

    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    for piece in generate(args.model, args.prompt, sampling, chat=args.chat, n_threads=args.threads):
        print(piece, end="", flush=True)
    print()
    return 0


def _add_gate_options(parser) -> None:
    """`bitjax rephrase`'s quality-gate thresholds; unset ones take the defaults of
    `bitjax.teachers.rephrase_gates.Thresholds` (not imported here: that would load JAX for every --help)."""
    g = parser.add_argument_group("quality gates: a line failing one goes to OUT's .rejected.jsonl side file "
                                  "(defaults and how they were chosen: data/rephrased/README.md)")
    g.add_argument("--no-gates", action="store_true", help="keep every non-empty line (scores are still recorded)")
    for option, kind, what in (
            ("--min-faithfulness", float, "share of the output's content words found in the passage (0.5)"),
            ("--min-entities", float, "share of the output's capitalised names found in the passage (0.5)"),
            ("--min-novelty", float, "share of the output's word 4-grams not in the passage; 0 = a copy (0.5)"),
            ("--min-length-ratio", float, "output / passage characters, lowest (0.25)"),
            ("--max-length-ratio", float, "output / passage characters, highest (2.5)"),
            ("--max-repetition", float, "share of repeated word 4-grams (0.1)"),
            ("--max-boilerplate", int, "chat or refusal phrases allowed (0)"),
            ("--min-language", float, "share of English function words (0.2)")):
        g.add_argument(option, type=kind, default=None, help=what)


def _rephrase(args) -> int:
    import dataclasses
    import json

    from bitjax.teachers import rephrase
    from bitjax.teachers.rephrase_gates import Thresholds

    _at_least(args.limit, 1, "--limit", "the number of documents (leave --limit out for all)")
    _at_least(args.max_new_tokens, 1, "--max-new-tokens", "the number of generated tokens")
    _at_least(args.max_chars, 1, "--max-chars", "the passage length")
    settings = rephrase.Settings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                 top_p=args.top_p, seed=args.seed, max_chars=args.max_chars)
    given = {f.name: getattr(args, f.name) for f in dataclasses.fields(Thresholds)}
    thresholds = Thresholds(**{k: v for k, v in given.items() if v is not None})
    summary = rephrase.rephrase(
        args.source, args.out, formats=[f for f in args.formats.split(",") if f], generator=args.generator,
        limit=args.limit, settings=settings, n_threads=args.threads,
        prompts_dir=Path(args.prompts) if args.prompts else rephrase.PROMPTS_DIR,
        thresholds=None if args.no_gates else thresholds, progress=not args.no_progress)
    print(json.dumps(summary, indent=2))
    return 0


def _traces(args) -> int:
    import json

    from bitjax.data import traces_file
    from bitjax.teachers import traces
    from bitjax.teachers.chat_models import open_chat_model

    _at_least(args.prompts, 1, "--prompts", "the number of problems")
    _at_least(args.samples, 1, "--samples", "the number of completions per problem")
    _at_least(args.max_new_tokens, 1, "--max-new-tokens", "the number of generated tokens")
    # what the output file is, before the model loads and before a torn last line is cut
    traces.check_output(Path(args.out))
    settings = traces.SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                       top_p=args.top_p, seed=args.seed)
    prompts = traces.task_prompts(args.task, args.split, args.prompts)
    model = open_chat_model(args.teacher, n_threads=args.threads, seed=args.seed)
    summary = traces.sample_traces(model, prompts, args.out, split=args.split, samples=args.samples,
                                   settings=settings, progress=not args.no_progress)
    print(json.dumps({**summary, **traces_file.summarize(traces_file.read_traces(args.out))}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
