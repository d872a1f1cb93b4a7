"""Decode tokens/s of a student in the browser (wllama's WebAssembly llama.cpp) against native llama.cpp.

    python -m benchmarks.web [--rounds 7] [--decode-tokens 64] [--threads 1,2]
    python -m benchmarks.web --smoke      # the tiny shape, one round, 8 tokens: checks the script end to end

For the tiny student's shape (recipes/tiny.py: 4 layers, width 256, vocabulary 2048) and the 125m SiLU shape
(recipes/bitnet_125m_silu.py: 12 layers, width 768, vocabulary 49,152), random ternary weights are written as
a `--format web` folder (TQ2_0 with the Q6_K embedding, the export's defaults, or --type with its default
embedding). The same GGUF is then decoded:
- in headless Chromium (Debian's, through Playwright), the page served cross-origin isolated by `bitjax serve`'s
  server and opened with ?threads=N, a fresh tab per measurement (one warm-up continuation first), tokens/s
  as llama.cpp's own timings report them (`predicted_per_second`);
- in llama-cpp-python with n_threads=N, tokens/s over N single-token decodes after the same 8-token prompt.
Every round measures each (runtime, threads) once in turn; the tables give medians and the median of the
per-round browser / native ratios. Random weights make arbitrary tokens: the page never samples those that
are not UTF-8 text on their own (bitjax/export/web_vocab.py), and end of text is ignored here, so each
continuation is exactly --decode-tokens long. The machine is shared: read the rounds, not one number.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from benchmarks.export import make_tokenizer, random_model
from bitjax.config import ModelConfig
from bitjax.export import web_driver, web_runtime
from bitjax.export.embedding_quant import default_embedding_type
from bitjax.export.web import write_web_folder

SHAPES = {"tiny": ModelConfig.tiny(vocab_size=2048, ffn_activation="silu"),
          "bitnet_125m_silu": ModelConfig.bitnet_125m(ffn_activation="silu")}
PROMPT_IDS = list(range(100, 108))


def browser_speed(chromium, url: str, threads: int, n_decode: int, prompt: str) -> float:
    page = web_driver.open_page(chromium, f"{url}?threads={threads}")
    try:
        info = web_driver.page_info(page)
        if info["threads"] != threads:
            raise RuntimeError(f"the page runs {info['threads']} threads, not {threads}")
        options = dict(prompt=prompt, temperature=0, extra={"ignore_eos": True})
        web_driver.generate(page, maxTokens=8, **options)   # warm-up: the wasm tiers up, the weights are touched
        result = web_driver.generate(page, maxTokens=n_decode, **options)
        if result["timings"]["predicted_n"] != n_decode:
            raise RuntimeError(f"the page decoded {result['timings']['predicted_n']} tokens, not {n_decode}")
        return float(result["decodePerSecond"])
    finally:
        page.close()


def native_speed(llm, n_decode: int) -> float:
    llm.reset()
    llm.eval(PROMPT_IDS)
    start = time.perf_counter()
    for i in range(n_decode):
        llm.eval([300 + i])
    return n_decode / (time.perf_counter() - start)


def measure(label: str, folder: Path, threads: list[int], rounds: int, n_decode: int) -> None:
    from llama_cpp import Llama

    manifest_files = sorted(folder.glob("model*.gguf"))
    natives = {t: Llama(model_path=str(manifest_files[0]), n_ctx=256, n_threads=t, n_threads_batch=t,
                        verbose=False) for t in threads}
    prompt = natives[threads[0]].detokenize(PROMPT_IDS).decode("utf-8", errors="ignore") or "The"
    speeds = {(runtime, t): [] for runtime in ("browser", "llama.cpp") for t in threads}
    try:
        for llm in natives.values():   # warm-up: page the weights in
            native_speed(llm, 4)
        with web_driver.browser() as chromium, web_driver.served(folder) as url:
            for r in range(rounds):
                for t in threads:
                    speeds[("browser", t)].append(browser_speed(chromium, url, t, n_decode, prompt))
                    speeds[("llama.cpp", t)].append(native_speed(natives[t], n_decode))
                print(f"{label}, round {r + 1}/{rounds}: " + ", ".join(
                    f"{k[0]} {k[1]}t {v[-1]:.1f}" for k, v in speeds.items()), file=sys.stderr, flush=True)
    finally:
        for llm in natives.values():
            llm.close()
    size = sum(f.stat().st_size for f in manifest_files) / 1e6
    print(f"\n{label} (random weights, {size:.1f} MB): decode tokens/s, {n_decode} tokens after an 8-token prompt, "
          f"median of {rounds} alternating rounds")
    print("| runtime | threads | decode tokens/s (median) | browser / llama.cpp (median of per-round ratios) | rounds |"
          "\n|---|---|---|---|---|")
    for (runtime, t), values in speeds.items():
        ratio = ""
        if runtime == "browser":
            ratios = [b / n for b, n in zip(values, speeds[("llama.cpp", t)])]
            ratio = f"{statistics.median(ratios):.2f}x"
        print(f"| {runtime} | {t} | {statistics.median(values):.1f} | {ratio} | "
              f"{', '.join(f'{v:.1f}' for v in values)} |")


def chromium_version() -> str:
    try:
        out = subprocess.run([web_driver.chromium_path(), "--version"], capture_output=True, text=True, timeout=30)
        return out.stdout.strip()
    except OSError as e:
        return f"unknown ({e})"


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--decode-tokens", type=int, default=64)
    parser.add_argument("--threads", default="1,2", help="comma-separated thread counts (default 1,2)")
    parser.add_argument("--shapes", default=",".join(SHAPES), help=f"comma-separated, of {', '.join(SHAPES)}")
    parser.add_argument("--type", dest="gguf_type", default="tq2_0", help="--type of the export (default tq2_0)")
    parser.add_argument("--smoke", action="store_true", help="tiny shape, one round, 8 tokens (checks the script)")
    args = parser.parse_args(argv)
    problem = web_driver.browser_problem()
    if problem:
        sys.exit(f"benchmarks.web: {problem}")
    package = web_runtime.find_runtime()
    threads = [int(t) for t in args.threads.split(",")]
    shapes = ["tiny"] if args.smoke else args.shapes.split(",")
    rounds, n_decode = (1, 8) if args.smoke else (args.rounds, args.decode_tokens)
    print(f"{chromium_version()}, {web_runtime.PACKAGE} {web_runtime.VERSION}, llama-cpp-python "
          f"{__import__('llama_cpp').__version__}, {os.cpu_count()} CPUs, load average "
          f"{os.getloadavg()[0]:.2f} before the run")
    with tempfile.TemporaryDirectory(prefix="bitjax-web-bench-") as tmp:
        scratch = Path(tmp)
        tokenizer = make_tokenizer(scratch)
        for name in shapes:
            model = random_model(SHAPES[name], tokenizer, materialize=True, seed=1)
            folder = scratch / name
            embedding = default_embedding_type(args.gguf_type)
            write_web_folder(model, folder, package, gguf_type=args.gguf_type, embedding_type=embedding)
            del model
            measure(f"{name}, {args.gguf_type.upper()} + {embedding.upper()} embedding", folder, threads, rounds,
                    n_decode)


if __name__ == "__main__":
    main()
