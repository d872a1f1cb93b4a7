"""Load an exported packed directory in transformers (BitNetForCausalLM, CPU) and print its agreement with bitjax.

    python export/check_transformers.py RUN_DIR OUT_DIR [--tokens 256]

transformers' autobitlinear quantizes activations to int8 per token like bitjax's training forward,
so that forward ("A8") is the reference.
"""

import argparse
import sys

from bitjax.export.runtime_report import format_agreement, transformers_report


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("run_dir")
    parser.add_argument("packed_dir")
    parser.add_argument("--tokens", type=int, default=256)
    args = parser.parse_args()
    r = transformers_report(args.run_dir, args.packed_dir, n_tokens=args.tokens)
    print(f"{r['file']} in {r['runtime']}")
    print(f"tokenizer: {r['tokenizer_identical']}/{r['tokenizer_probes']} test strings give identical ids")
    print(format_agreement("vs bitjax A8 (training forward)", r["vs_a8"]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
