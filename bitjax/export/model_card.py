"""The model card (README.md) of a packed export, so the directory is ready to publish as a Hugging Face
model repository: architecture, training recipe, tokens seen, held-out perplexity, teacher, how to load it.

Training facts come from the run directory (its config and metrics.jsonl); a model exported without a
run (tests, benchmarks) gets a card that says so.
"""

from __future__ import annotations

import dataclasses

from bitjax.export import architectures
from bitjax.export.model_source import TernaryModel
from bitjax.nn.transformer import count_params
from bitjax.run import Run
from bitjax.run.metrics import read_history


@dataclasses.dataclass(frozen=True)
class TrainingFacts:
    recipe: str
    step: int
    tokens_seen: int
    sources: list[str]                 # "name (uri, weight w, objective o)"
    teacher: str                       # "" when no source learns from a teacher
    heldout_perplexity: float | None   # at `perplexity_step`, the last evaluation at or before `step`
    perplexity_step: int | None


def training_facts(run: Run) -> TrainingFacts:
    """What the run directory records about how its latest checkpoint was trained."""
    cfg = run.config
    evals = [r for r in read_history(run.dir / "metrics.jsonl")
             if "eval/perplexity" in r and r["step"] <= run.step]
    last = max(evals, key=lambda r: r["step"]) if evals else None
    objectives = {s.name: s.objective or ("sft" if s.uri.startswith("traces:") else "ce") for s in cfg.data.sources}
    teacher = cfg.distill.teacher if set(objectives.values()) & {"kd", "sft", "redi"} else ""
    return TrainingFacts(
        recipe=cfg.name, step=run.step, tokens_seen=run.step * cfg.data.batch_size * cfg.data.seq_len,
        sources=[f"{s.name} ({_public_uri(s.uri)}, weight {s.weight:g}, {objectives[s.name]})"
                 for s in cfg.data.sources],
        teacher=teacher, heldout_perplexity=last["eval/perplexity"] if last else None,
        perplexity_step=last["step"] if last else None)


def _public_uri(uri: str) -> str:
    """`jsonl:/home/me/data/x.jsonl` -> `jsonl:x.jsonl`: a published card should not carry local paths."""
    kind, _, rest = uri.partition(":")
    return f"{kind}:{rest.rstrip('/').rsplit('/', 1)[-1]}" if "/" in rest else uri


def render(model: TernaryModel, facts: TrainingFacts | None) -> str:
    """The README.md text: YAML front matter for the Hub, then the card."""
    cfg, arch = model.config, architectures.architecture(model.config)
    counts = count_params(cfg)
    head = "tied embedding and LM head" if cfg.tie_embeddings else "separate full-precision LM head"
    extras = [what for present, what in ((cfg.sub_norms, "SubLN before every ternary projection"),
                                         (cfg.qk_norm, "RMSNorm on each query and key head"),
                                         (cfg.attention_bias, "full-precision q/k/v biases")) if present]
    rope = "" if cfg.rope_scaling.kind == "none" else f", {cfg.rope_scaling.kind} scaling x{cfg.rope_scaling.factor:g}"
    lines = ["---", "library_name: transformers", "pipeline_tag: text-generation",
             "tags: [bitnet, ternary, 1.58-bit, bitjax]", "---", "",
             f"# {model.name}", "",
             "A native 1.58-bit (ternary) BitNet b1.58 language model trained with bitjax (JAX/Flax NNX), "
             f"packed for transformers' `{arch.hf_class}`.", ""]
    lines += [f"**Warning:** {w}." for w in model.warnings] + ([""] if model.warnings else [])
    lines += [
             "## Architecture", "", "| | |", "|---|---|",
             f"| class | `{arch.hf_class}` (`model_type: {arch.name}`), decoder-only, {head} |",
             f"| parameters | {counts['total']:,} ({counts['non_embedding']:,} non-embedding) |",
             f"| layers, width, FFN width | {cfg.n_layers}, {cfg.d_model}, {cfg.d_ff} |",
             f"| attention heads (query / key-value), head size | {cfg.n_heads} / {cfg.n_kv_heads}, {cfg.head_dim} |",
             f"| FFN | {'ReLU²' if cfg.ffn_activation == 'relu2' else 'SiLU'}-gated (`hidden_act: "
             f"{cfg.ffn_activation}`){''.join(', ' + e for e in extras)} |",
             f"| vocabulary, context | {cfg.vocab_size}, {cfg.max_seq_len} tokens (RoPE theta {cfg.rope_theta:g}"
             f"{rope}) |",
             "| weights | ternary {-1, 0, 1}, 2 bits each, one absmean scale per tensor (`autobitlinear`, "
             "offline); embedding and norms in float32 |",
             "| activations | int8 per token (absmax), as in training |"]
    if cfg.full_precision_layers:
        lines += [f"| full-precision blocks | {', '.join(map(str, sorted(cfg.full_precision_layers)))}: float32 "
                  "weights and activations (`modules_to_not_convert`) |"]
    lines += [""]
    lines += ["## Training", ""]
    if facts is None:
        lines += ["Not recorded: this directory was exported without its run directory.", ""]
    else:
        ppl = (f"{facts.heldout_perplexity:.2f} (evaluated during training at step {facts.perplexity_step}, on "
               "the recipe's held-out split)" if facts.heldout_perplexity is not None
               else "not measured during training")
        teacher = (f"`{facts.teacher}` (cached top-k logits and/or reasoning traces)" if facts.teacher
                   else "none: next-token cross-entropy only")
        lines += ["| | |", "|---|---|", f"| recipe | `{facts.recipe}` |",
                  f"| steps | {facts.step:,} |", f"| tokens seen | {facts.tokens_seen:,} |",
                  f"| held-out perplexity | {ppl} |", f"| teacher | {teacher} |",
                  "| data | " + "; ".join(facts.sources) + " |", ""]
    lines += ["## How to load", "", "```python", "import torch",
              f"from transformers import AutoTokenizer, {arch.hf_class}", "",
              'tokenizer = AutoTokenizer.from_pretrained("PATH")',
              f'model = {arch.hf_class}.from_pretrained("PATH", dtype=torch.float32)',
              'ids = tokenizer("Once upon a time", return_tensors="pt").input_ids',
              "print(tokenizer.decode(model.generate(ids, max_new_tokens=32)[0]))", "```", "",
              "transformers' BitNet path needs `accelerate`; on CPU it unpacks the 2-bit weights on the fly. "
              "With bitjax installed: `bitjax generate PATH --prompt \"Once upon a time\"`.", ""]
    if cfg.ffn_activation == "silu":
        lines += ["The same checkpoint exports to GGUF for llama.cpp (`bitjax export RUN_DIR student.gguf "
                  f"--format gguf`: the `{arch.name}` architecture, TQ2_0 ternary weights, Q6_K embedding).", ""]
    else:
        lines += ["The released llama.cpp runs the `bitnet` FFN SiLU-gated only, so this relu2 model is "
                  "published for transformers; bitjax's SiLU recipes export to GGUF.", ""]
    return "\n".join(lines)
