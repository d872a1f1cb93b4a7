"""bitjax rephrase: rewrite natural documents into denser formats with a generator model."""

from __future__ import annotations

from pathlib import Path

from bitjax.cli.arguments import at_least

NAME = "rephrase"


def add_parser(sub) -> None:
    p = sub.add_parser("rephrase", help="rewrite natural documents into denser formats with a generator model")
    p.add_argument("--source", default="tfds:shakespeare",
                   help="documents to rephrase: tfds:shakespeare, tfds:kjv, jsonl:PATH, arrayrecord:PATH")
    p.add_argument("--out", required=True, help="JSONL output; rerunning appends what is missing")
    p.add_argument("--formats", default="qa,textbook,summary",
                   help="comma-separated prompt names from --prompts (default: qa,textbook,summary)")
    p.add_argument("--generator", default="smollm2",
                   help="'smollm2' (the embedded GGUF), a .gguf file (llama.cpp) or a transformers model dir, or "
                   "from the Hugging Face Hub hf:ORG/NAME[@REVISION] / gguf:ORG/NAME/FILE.gguf")
    p.add_argument("--limit", type=int, default=None, help="rephrase only the first N documents")
    p.add_argument("--max-new-tokens", type=int, default=128)
    p.add_argument("--temperature", type=float, default=0.7)
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--max-chars", type=int, default=800, help="passage length given to the generator")
    p.add_argument("--threads", type=int, default=1,
                   help="llama.cpp threads (1 is fastest on a busy machine: threads spin-wait on each other)")
    p.add_argument("--prompts", default=None, help="directory of <format>.txt prompts (default: data/rephrase)")
    _add_gate_options(p)
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    import dataclasses
    import json

    from bitjax.teachers import rephrase
    from bitjax.teachers.rephrase_gates import Thresholds

    at_least(args.limit, 1, "--limit", "the number of documents (leave --limit out for all)")
    at_least(args.max_new_tokens, 1, "--max-new-tokens", "the number of generated tokens")
    at_least(args.max_chars, 1, "--max-chars", "the passage length")
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
