"""Generate a few tokens from an exported GGUF with llama.cpp (llama-cpp-python), greedy.

    python export/generate_llama_cpp.py OUT.gguf [--prompt "ROMEO:"] [--tokens 24]
"""

import argparse

from llama_cpp import Llama


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("gguf")
    parser.add_argument("--prompt", default="ROMEO:\n")
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    llm = Llama(model_path=args.gguf, n_ctx=256, n_threads=args.threads, verbose=False)
    out = llm(args.prompt, max_tokens=args.tokens, temperature=0.0, top_k=1, repeat_penalty=1.0)
    print(f"{args.prompt}{out['choices'][0]['text']}")
    llm.close()


if __name__ == "__main__":
    main()
