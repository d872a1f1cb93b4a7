"""bitjax generate: stream a continuation from a GGUF file, a packed directory or a run directory."""

from __future__ import annotations

NAME = "generate"


def add_parser(sub) -> None:
    p = sub.add_parser("generate", help="stream a continuation from a GGUF file (llama.cpp), a packed directory "
                       "(transformers) or a run directory (bitjax)")
    p.add_argument("model", help="a .gguf file, a `bitjax export --format packed` directory or a run directory")
    p.add_argument("--prompt", required=True, help="text to continue (with --chat: the user's message)")
    p.add_argument("--max-new-tokens", type=int, default=64, help="most tokens to generate (default 64)")
    p.add_argument("--temperature", type=float, default=0.8, help="0 decodes greedily (default 0.8)")
    p.add_argument("--seed", type=int, default=0, help="sampling seed (default 0)")
    p.add_argument("--chat", action="store_true", help="wrap the prompt in the model's chat template")
    p.add_argument("--threads", type=int, default=None, help="CPU threads for llama.cpp / torch (default 2 / all)")


def run(args) -> int:
    from bitjax.evaluation.generation import Sampling, generate

    sampling = Sampling(max_new_tokens=args.max_new_tokens, temperature=args.temperature, seed=args.seed)
    for piece in generate(args.model, args.prompt, sampling, chat=args.chat, n_threads=args.threads):
        print(piece, end="", flush=True)
    print()
    return 0
