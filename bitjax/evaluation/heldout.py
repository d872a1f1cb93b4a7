"""Evaluation of a trained run: held-out perplexity on text it never trained on, and answer accuracy on
held-out math problems (greedy decoding, final answer checked against the gold one)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from bitjax import data as data_lib
from bitjax.data.teacher_files import traces as traces_lib
from bitjax.errors import ConfigError
from bitjax.losses import chunked_head, terms
from bitjax.nn.decode import greedy_generate
from bitjax.run import Run
from bitjax.tokenizer import eos_id, fingerprint, load


def _pipeline(run: Run):
    pipeline = data_lib.build_pipeline(run.config.data, text_only=True)
    if fingerprint(load(run.tokenizer_path)) != pipeline.tokenizer_fingerprint:
        raise ConfigError(f"{run.tokenizer_path} differs from the tokenizer the data pipeline builds now; "
                          "evaluate with the tokenizer the run was trained with")
    return pipeline


def summed_loss(run: Run, batches) -> tuple[float, float]:
    """Summed next-token cross-entropy of the run's model (fully quantized) over batches, and the token count."""
    build = run.model_builder()

    @jax.jit
    def one(params, batch):
        logp_BL, _ = chunked_head.model_token_quantities(build(params), batch, loss_chunk=run.config.loss_chunk)
        return terms.summed_negative_logprob(logp_BL, batch["loss_mask"])

    total, count = 0.0, 0.0
    for batch in batches:
        s, n = one(run.params, {k: jnp.asarray(v) for k, v in batch.items()})
        total, count = total + float(s), count + float(n)
    return total, count


def heldout_perplexity(run: Run | str | Path, n_batches: int = 16) -> dict:
    """Token-weighted cross-entropy and perplexity of the run's model on its text sources' held-out tail."""
    run = run if isinstance(run, Run) else Run(run)
    if n_batches < 1:
        raise ConfigError(f"--batches {n_batches}: score at least one held-out batch")
    batches = _pipeline(run).heldout_batches(n_batches)
    total, count = summed_loss(run, batches)
    if count == 0:
        raise ConfigError(f"{run.dir}: the held-out batches hold no scored token; the run's text sources "
                          "have no held-out text")
    loss = total / count
    return {"run": str(run.dir), "step": run.step, "heldout_tokens": int(count), "heldout_batches": len(batches),
            "heldout_loss": loss, "heldout_perplexity": math.exp(loss), "bits_per_token": loss / math.log(2)}


def answer_accuracy(run: Run | str | Path, prompts_file: str | Path, *, limit: int | None = None,
                    max_new_tokens: int = 192, batch_size: int = 16) -> dict:
    """Greedy answers of the run's model to held-out problems (the prompts of a `bitjax traces` file, one per
    problem), scored against the gold answers. Every completion is written to RUN_DIR/answers.jsonl."""
    run = run if isinstance(run, Run) else Run(run)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: answer at least one problem (or leave --limit out for all)")
    room = _generation_room(run, max_new_tokens)
    tok = load(run.tokenizer_path)
    problems = {}
    for record in traces_lib.read_traces(prompts_file):
        problems.setdefault(record["prompt_id"], record)
    problems = list(problems.values())[:limit]
    eos = eos_id(tok)
    stop_ids = {i for i in (eos, tok.token_to_id("<|im_end|>")) if i is not None}
    prompts = [np.asarray([eos] + tok.encode(p["prompt"], add_special_tokens=False).ids, np.int32)[-room:]
               for p in problems]
    build = run.model_builder()
    completions = []
    for start in range(0, len(prompts), batch_size):
        completions += greedy_generate(build, run.params, prompts[start:start + batch_size],
                                       max_new_tokens=max_new_tokens, stop_ids=stop_ids)
    correct = 0
    with run.paths.answers.open("w", encoding="utf-8") as f:
        for problem, ids in zip(problems, completions):
            text = tok.decode([int(i) for i in ids if int(i) not in stop_ids])
            answer = traces_lib.extract_answer(text)
            ok = traces_lib.is_correct(answer, problem["gold"])
            correct += ok
            f.write(json.dumps({"prompt_id": problem["prompt_id"], "gold": problem["gold"], "answer": answer,
                                "correct": ok, "completion": text}, ensure_ascii=False) + "\n")
    return {"answer_file": str(prompts_file), "problems": len(problems), "correct": correct,
            "answer_accuracy": correct / max(len(problems), 1), "answers": str(run.paths.answers)}


def _generation_room(run: Run, max_new_tokens: int) -> int:
    """Context left for the prompt after `max_new_tokens`; at least one position or a one-line error."""
    room = run.config.model.max_seq_len - max_new_tokens
    if max_new_tokens < 1 or room < 1:
        raise ConfigError(f"--max-new-tokens {max_new_tokens}: must lie in 1..{run.config.model.max_seq_len - 1} "
                          f"(the model's context is model.max_seq_len={run.config.model.max_seq_len})")
    return room


def evaluate(run_dir: str | Path, *, n_batches: int = 16, prompts_file: str | None = None,
             limit: int | None = None, max_new_tokens: int | None = None) -> dict:
    """`bitjax eval`: perplexity, plus answer accuracy when the run (or the caller) names held-out problems."""
    run = Run(run_dir)   # parameters restored once for both measurements
    prompts_file = prompts_file or run.config.eval_prompts
    if prompts_file:   # a generation length beyond the context fails now, not after the perplexity pass
        _generation_room(run, max_new_tokens or run.config.eval_max_new_tokens)
    report = heldout_perplexity(run, n_batches)
    if prompts_file:
        report.update(answer_accuracy(run, prompts_file, limit=limit,
                                      max_new_tokens=max_new_tokens or run.config.eval_max_new_tokens))
    return report


def print_report(report: dict) -> None:
    width = max(len(k) for k in report)
    for key, value in report.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"  {key:<{width}}  {shown}")
