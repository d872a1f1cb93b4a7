"""Run an exported GGUF in llama.cpp (llama-cpp-python) and print its agreement with bitjax.

    python export/check_llama_cpp.py RUN_DIR OUT.gguf [--tokens 256] [--greedy 32]

Compares logits on the run's held-out text against two bitjax forwards: "A8", the training forward
(int8 per-token activations), and "A16", ternary weights with full-precision activations, which is what
llama.cpp's F32/F16 path computes (its TQ types quantize activations to 8 bits per 256-value block).
"""

import argparse
import sys

from bitjax.export.common import ExportError
from bitjax.export.runtime_report import format_agreement, llama_cpp_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("gguf")
    parser.add_argument("--tokens", type=int, default=256, help="held-out tokens to compare on")
    parser.add_argument("--greedy", type=int, default=32, help="greedy tokens to compare")
    parser.add_argument("--allow-runtime-mismatch", action="store_true")
    args = parser.parse_args()
    try:
        r = llama_cpp_report(args.run_dir, args.gguf, n_tokens=args.tokens, n_greedy=args.greedy,
                             allow_runtime_mismatch=args.allow_runtime_mismatch)
    except ExportError as e:
        print(f"check_llama_cpp: error: {e}", file=sys.stderr)
        return 2
    print(f"{r['file']} in {r['runtime']}")
    for problem in r["problems"]:
        print(f"WARNING: {problem}")
    print(f"tokenizer: {r['tokenizer_identical']}/{r['tokenizer_probes']} test strings give identical ids")
    print(format_agreement("vs bitjax A8 (training forward)", r["vs_a8"]))
    print(format_agreement("vs bitjax A16 (W1.58A16 forward)", r["vs_a16"]))
    same = sum(a == b for a, b in zip(r["greedy_llama"], r["greedy_bitjax_a16"]))
    same8 = sum(a == b for a, b in zip(r["greedy_llama"], r["greedy_bitjax_a8"]))
    n = len(r["greedy_llama"])
    print(f"greedy: {same}/{n} tokens identical to bitjax A16, {same8}/{n} to bitjax A8")
    print(f"prompt: {r['greedy_prompt']!r}\nllama.cpp continues: {r['greedy_text']!r}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
