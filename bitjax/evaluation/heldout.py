"""Evaluation of a trained run: held-out perplexity on text it never trained on, and answer accuracy on
held-out problems (a task's, bitjax.evaluation.task_accuracy, or a traces file's), each final answer judged
by its task's verifier."""

from __future__ import annotations

import functools
import math
from pathlib import Path

import jax
import jax.numpy as jnp

from bitjax import data as data_lib
from bitjax.data.teacher_files import traces as traces_lib
from bitjax.errors import ConfigError
from bitjax.evaluation.task_accuracy import problems_accuracy, task_accuracy
from bitjax.losses import chunked_head, terms
from bitjax.run import Run
from bitjax.run.chat import run_chat_model
from bitjax.tasks import spec as task_spec
from bitjax.tasks.problems import Problem
from bitjax.tasks.spec import TaskSpec
from bitjax.tokenizer import fingerprint, load


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


def heldout_perplexity(run: Run | str | Path, n_batches: int = 16, *, required: bool = True) -> dict:
    """Token-weighted cross-entropy and perplexity of the run's model on its text sources' held-out tail
    (`required=False`: a run whose sources hold no held-out text, e.g. traces alone, reports 0 tokens)."""
    run = run if isinstance(run, Run) else Run(run)
    if n_batches < 1:
        raise ConfigError(f"--batches {n_batches}: score at least one held-out batch")
    batches = _pipeline(run).heldout_batches(n_batches)
    total, count = summed_loss(run, batches)
    if count == 0 and not required:
        return {"run": str(run.dir), "step": run.step, "heldout_tokens": 0}
    if count == 0:
        raise ConfigError(f"{run.dir}: the held-out batches hold no scored token; the run's text sources "
                          "have no held-out text")
    loss = total / count
    return {"run": str(run.dir), "step": run.step, "heldout_tokens": int(count), "heldout_batches": len(batches),
            "heldout_loss": loss, "heldout_perplexity": math.exp(loss), "bits_per_token": loss / math.log(2)}


def answer_accuracy(run: Run | str | Path, prompts_file: str | Path, *, limit: int | None = None,
                    max_new_tokens: int = 192, batch_size: int = 16) -> dict:
    """Greedy answers of the run's model to held-out problems (one per problem of a `bitjax traces` file,
    prompted exactly as the teacher was), each judged by the verifier of the task its record names. Every
    completion is written to RUN_DIR/answers.jsonl."""
    run = run if isinstance(run, Run) else Run(run)
    if limit is not None and limit < 1:
        raise ConfigError(f"--limit {limit}: answer at least one problem (or leave --limit out for all)")
    _generation_room(run, max_new_tokens)
    records = {}
    for record in traces_lib.read_traces(prompts_file):
        records.setdefault(record["prompt_id"], record)
    records = list(records.values())[:limit]
    items = [_task_problem(r, prompts_file) for r in records]
    report = problems_accuracy(run_chat_model(run, batch_size=batch_size), items,
                               prompts=[r["prompt"] for r in records], max_new_tokens=max_new_tokens,
                               answers=Path(run.paths.answers), name=str(prompts_file))
    return {"answer_file": str(prompts_file), "problems": report["problems"], "correct": report["correct"],
            "answer_accuracy": report["pass@1"], "answers": report["answers"]}


def _task_problem(record: dict, where) -> tuple[TaskSpec, Problem]:
    if "task" not in record or "entry" not in record:
        raise ConfigError(f"{where}: record {record['prompt_id']} names no task to verify its answer with; sample "
                          "the held-out problems again with `bitjax traces --split heldout --task ...`")
    task = _parsed_task(record["task"])
    return task, Problem(record["prompt_id"], record["question"], str(record["gold"]), record["entry"])


@functools.lru_cache(maxsize=16)
def _parsed_task(text: str) -> TaskSpec:
    name = text.partition(":")[0]
    if name == "jsonl":   # verified by math-verify against the record's gold answer: the file is not read
        return TaskSpec("jsonl", (), text.partition(":")[2], text)
    return task_spec.parse(text)


def _generation_room(run: Run, max_new_tokens: int) -> int:
    """Context left for the prompt after `max_new_tokens`; at least one position or a one-line error."""
    room = run.config.model.max_seq_len - max_new_tokens
    if max_new_tokens < 1 or room < 1:
        raise ConfigError(f"--max-new-tokens {max_new_tokens}: must lie in 1..{run.config.model.max_seq_len - 1} "
                          f"(the model's context is model.max_seq_len={run.config.model.max_seq_len})")
    return room


def evaluate(run_dir: str | Path, *, n_batches: int = 16, prompts_file: str | None = None,
             limit: int | None = None, max_new_tokens: int | None = None, task: str | None = None,
             n_problems: int | None = None, samples: int = 1, temperature: float = 0.7, top_p: float = 0.95,
             seed: int = 0) -> dict:
    """`bitjax eval`: perplexity, plus accuracy on the held-out problems of a task and of a traces file, when
    the run (or the caller) names them."""
    run = Run(run_dir)   # parameters restored once for every measurement
    prompts_file = prompts_file or run.config.eval_prompts
    task = task or run.config.eval_task
    max_new_tokens = max_new_tokens or run.config.eval_max_new_tokens
    if prompts_file or task:   # a generation length beyond the context fails now, not after the perplexity pass
        _generation_room(run, max_new_tokens)
    report = heldout_perplexity(run, n_batches, required=not (prompts_file or task))
    if prompts_file:
        report.update(answer_accuracy(run, prompts_file, limit=limit, max_new_tokens=max_new_tokens))
    if task:
        solved = task_accuracy(run_chat_model(run), task, n_problems=n_problems or run.config.eval_problems,
                               max_new_tokens=max_new_tokens, answers=Path(run.paths.answers), samples=samples,
                               temperature=temperature, top_p=top_p, seed=seed)
        report.update(solved)
    return report


def print_report(report: dict) -> None:
    width = max(len(k) for k in report)
    for key, value in report.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"  {key:<{width}}  {shown}")
