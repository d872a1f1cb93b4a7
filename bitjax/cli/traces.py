"""bitjax traces: sample a teacher's reasoning traces and label them by their verified answer."""

from __future__ import annotations

from pathlib import Path

from bitjax.cli.arguments import at_least

NAME = "traces"


def add_parser(sub) -> None:
    p = sub.add_parser("traces", help="sample a teacher's reasoning traces for a task's problems, label them "
                       "by the task's verdict on their final answer (positive / negative)")
    p.add_argument("--out", required=True, help="JSONL output; rerunning appends what is missing")
    p.add_argument("--teacher", default="smollm2",
                   help="'smollm2' (the embedded GGUF), a .gguf chat model or a transformers model dir, or from "
                   "the Hugging Face Hub hf:ORG/NAME[@REVISION] / gguf:ORG/NAME/FILE.gguf, or a bitjax run "
                   "bitjax:RUN_DIR (decoded in batches in JAX)")
    p.add_argument("--task", default="gsm_symbolic",
                   help="a reasoning-gym task with its settings, e.g. chain_sum:min_terms=4,max_terms=5, or "
                   "jsonl:PATH (question/answer lines, checked by math-verify); default gsm_symbolic")
    p.add_argument("--split", default="train", choices=["train", "heldout"],
                   help="problems to train on, or the held-out ones (never the same item; for tasks with "
                   "templates, never the same template)")
    p.add_argument("--prompts", type=int, default=64, help="problems to sample (default 64)")
    p.add_argument("--samples", type=int, default=4, help="completions per problem (default 4)")
    p.add_argument("--max-new-tokens", type=int, default=192)
    p.add_argument("--temperature", type=float, default=0.7, help="0 decodes greedily")
    p.add_argument("--top-p", type=float, default=0.9)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=1, help="llama.cpp / torch threads")
    p.add_argument("--batch", type=int, default=64, help="prompts x samples decoded together by a bitjax "
                   "teacher (default 64; llama.cpp and transformers answer one at a time)")
    p.add_argument("--no-progress", action="store_true")


def run(args) -> int:
    import json

    from bitjax.data.teacher_files import traces as trace_files
    from bitjax.tasks import problems, spec
    from bitjax.teachers import trace_sampler
    from bitjax.teachers.chat_models import open_chat_model

    at_least(args.prompts, 1, "--prompts", "the number of problems")
    at_least(args.samples, 1, "--samples", "the number of completions per problem")
    at_least(args.max_new_tokens, 1, "--max-new-tokens", "the number of generated tokens")
    at_least(args.batch, 1, "--batch", "the number of rows decoded together")
    task = spec.parse(args.task)
    # what the output file is, before the model loads and before a torn last line is cut
    trace_sampler.check_output(Path(args.out))
    settings = trace_sampler.SamplingSettings(max_new_tokens=args.max_new_tokens, temperature=args.temperature,
                                       top_p=args.top_p, seed=args.seed)
    todo = problems.problems(task, args.split, args.prompts)
    model = open_chat_model(args.teacher, n_threads=args.threads, seed=args.seed, batch_size=args.batch)
    summary = trace_sampler.sample_traces(model, task, todo, args.out, split=args.split, samples=args.samples,
                                          settings=settings, progress=not args.no_progress)
    print(json.dumps({**summary, **trace_files.summarize(trace_files.read_traces(args.out))}, indent=2))
    return 0
