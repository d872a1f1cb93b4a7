"""Agreement reports: an exported file run in its CPU runtime against bitjax's forward on held-out text."""

from __future__ import annotations

from pathlib import Path

from bitjax import tokenizer as tokenizer_lib
from bitjax.export import hf_check, llama_check
from bitjax.export import reference as ref
from bitjax.run import Run

TOKENIZER_PROBES = (
    "To be, or not to be, that is the question:",
    "  Leading spaces,\ttabs\tand\n\nnew lines  ",
    "Numbers 1234567 and 3.14159; punctuation!? (yes) [no] {maybe}",
    "Accents: café, naïve, Ærøskøbing; CJK: 中文字符; emoji: 🙂",
    "ALL CAPS, MiXeD cAsE, o'clock, don't, y'all'd've",
)


def llama_cpp_report(run: Run | str | Path, gguf_path: str | Path, *, n_tokens: int = 256,
                     n_greedy: int = 32, allow_runtime_mismatch: bool = False, n_threads: int = 2) -> dict:
    """Tokenizer ids, logits against both reference forwards, and greedy tokens, llama.cpp against bitjax."""
    run = run if isinstance(run, Run) else Run(run)
    problems = llama_check.require_compatible(gguf_path, allow_runtime_mismatch)
    tokens = ref.heldout_tokens(run, n_tokens)
    llm = llama_check.open_model(gguf_path, n_ctx=max(n_tokens, 16 + n_greedy) + 8, n_threads=n_threads)
    try:
        tok = tokenizer_lib.load(run.tokenizer_path)
        probes = [(text, tok.encode(text).ids, llama_check.llama_tokenize(llm, text)) for text in TOKENIZER_PROBES]
        runtime = llama_check.llama_logits(llm, tokens)
        prompt = tokens[:16].tolist()
        greedy_llama = llama_check.llama_greedy(llm, prompt, n_greedy)
    finally:
        llm.close()
    report = {"runtime": f"llama-cpp-python {llama_check.llama_cpp_version()}", "file": str(gguf_path),
              "problems": problems,
              "tokenizer_identical": sum(a == b for _, a, b in probes), "tokenizer_probes": len(probes),
              "tokenizer_mismatches": [(t, a, b) for t, a, b in probes if a != b]}
    for label, qa in (("vs_a8", True), ("vs_a16", False)):
        report[label] = ref.agreement(ref.bitjax_logits(run, tokens, quantize_activations=qa), runtime, tokens)
    report["greedy_llama"] = greedy_llama
    report["greedy_bitjax_a16"] = ref.bitjax_greedy(run, prompt, n_greedy, quantize_activations=False)
    report["greedy_bitjax_a8"] = ref.bitjax_greedy(run, prompt, n_greedy, quantize_activations=True)
    report["greedy_prompt"] = tok.decode(prompt)
    report["greedy_text"] = tok.decode(greedy_llama)
    return report


def transformers_report(run: Run | str | Path, packed_dir: str | Path, *, n_tokens: int = 256) -> dict:
    """Logits of transformers on the packed directory (its architecture's class) against bitjax's training forward
    (int8 activations)."""
    run = run if isinstance(run, Run) else Run(run)
    tokens = ref.heldout_tokens(run, n_tokens)
    model = hf_check.load_model(packed_dir)
    runtime = hf_check.hf_logits(model, tokens)
    tok = tokenizer_lib.load(run.tokenizer_path)
    probes = [(t, tok.encode(t).ids, hf_check.hf_tokenize(packed_dir, t)) for t in TOKENIZER_PROBES]
    import transformers

    return {"runtime": f"transformers {transformers.__version__}", "file": str(packed_dir),
            "vs_a8": ref.agreement(ref.bitjax_logits(run, tokens, quantize_activations=True), runtime, tokens),
            "tokenizer_identical": sum(a == b for _, a, b in probes), "tokenizer_probes": len(probes)}


def format_agreement(label: str, figures: dict) -> str:
    return (f"{label}: argmax agreement {figures['argmax_agreement']:.2%} over {figures['tokens']} tokens "
            f"({figures['argmax_agreement_clear']:.2%} of the {figures['clear_positions']} without a near-tie), "
            f"max |dlogit| {figures['max_abs_logit_diff']:.2e}, mean |dlogit| {figures['mean_abs_logit_diff']:.2e}, "
            f"perplexity {figures['ppl_runtime']:.3f} vs {figures['ppl_reference']:.3f} "
            f"({figures['ppl_rel_diff']:.3%} apart)")
