"""Evaluation of a trained run: held-out perplexity on text it never trained on, and answer accuracy on
held-out math problems (greedy decoding, final answer checked against the gold one)."""

from __future__ import annotations

import json
import math
from pathlib import Path

import jax
import numpy as np

from bitjax import data as data_lib
from bitjax import traces as traces_lib
from bitjax.checkpoint import Checkpointer
from bitjax.config import ConfigError, load_run_config
from bitjax.generate import trainer_generate
from bitjax.teacher import log_softmax
from bitjax.tokenizer import fingerprint, load
from bitjax.train import Trainer


def load_trained(run_dir: str | Path, step: int | None = None):
    """(TrainConfig, Trainer, TrainState, step) of a run directory's latest (or given) checkpoint."""
    cfg = load_run_config(run_dir)
    trainer = Trainer.create(cfg)
    ckpt = Checkpointer(Path(run_dir) / "checkpoints", cfg)
    step = ckpt.latest_step() if step is None else step
    if step is None:
        raise ConfigError(f"{run_dir}/checkpoints holds no checkpoint; train first: bitjax train RECIPE "
                          f"--workdir {run_dir}")
    state = ckpt.restore_state(step, trainer.abstract_state())
    ckpt.close()
    return cfg, trainer, state, step


def _pipeline(run_dir: Path, cfg):
    pipeline = data_lib.build_pipeline(cfg.data, text_only=True)
    run_tokenizer = run_dir / "tokenizer.json"
    if run_tokenizer.exists() and fingerprint(load(run_tokenizer)) != pipeline.tokenizer_fingerprint:
        raise ConfigError(f"{run_tokenizer} differs from the tokenizer the data pipeline builds now; "
                          "evaluate with the tokenizer the run was trained with")
    return pipeline


def heldout_perplexity(run_dir: str | Path, n_batches: int = 16, trained=None) -> dict:
    """Token-weighted cross-entropy and perplexity of the run's model on its text sources' held-out tail.

    `trained`: the run's `load_trained(run_dir)`, when the caller already restored it.
    """
    cfg, trainer, state, step = trained or load_trained(run_dir)
    pipeline = _pipeline(Path(run_dir), cfg)
    eval_fn = jax.jit(trainer.eval_loss)
    total, count = 0.0, 0.0
    batches = pipeline.heldout_batches(n_batches)
    for batch in batches:
        s, n = eval_fn(state.params, batch)
        total, count = total + float(s), count + float(n)
    loss = total / max(count, 1.0)
    return {"run": str(run_dir), "step": step, "heldout_tokens": int(count), "heldout_batches": len(batches),
            "heldout_loss": loss, "heldout_perplexity": math.exp(loss), "bits_per_token": loss / math.log(2)}


def teacher_perplexity(teacher, pipeline, n_batches: int = 16) -> dict:
    """The same held-out perplexity for a teacher (bitjax.teacher), each packed document read on its own."""
    total, count = 0.0, 0.0
    for batch in pipeline.heldout_batches(n_batches):
        for row in range(len(batch["inputs"])):
            segments = batch["segment_ids"][row]
            for segment in np.unique(segments[segments > 0]):
                where = np.flatnonzero(segments == segment)
                logp = log_softmax(teacher.logits(batch["inputs"][row][where][None])[0])
                picked = logp[np.arange(len(where)), batch["targets"][row][where]]
                mask = batch["loss_mask"][row][where]
                total, count = total - float(np.sum(picked * mask)), count + float(mask.sum())
    loss = total / max(count, 1.0)
    return {"teacher": teacher.name, "heldout_tokens": int(count), "heldout_loss": loss,
            "heldout_perplexity": math.exp(loss)}


def answer_accuracy(run_dir: str | Path, prompts_file: str | Path, *, limit: int | None = None,
                    max_new_tokens: int = 192, batch_size: int = 16, trained=None) -> dict:
    """Greedy answers of the run's model to held-out problems (the prompts of a `bitjax traces` file, one per
    problem), scored against the gold answers. Every completion is written to RUN_DIR/answers.jsonl."""
    run_dir = Path(run_dir)
    cfg, trainer, state, step = trained or load_trained(run_dir)
    tok = load(run_dir / "tokenizer.json")
    problems = {}
    for record in traces_lib.read_traces(prompts_file):
        problems.setdefault(record["prompt_id"], record)
    problems = list(problems.values())[:limit]
    eos = tok.token_to_id("<|endoftext|>")
    stop_ids = {i for i in (eos, tok.token_to_id("<|im_end|>")) if i is not None}
    room = cfg.model.max_seq_len - max_new_tokens
    prompts = [np.asarray([eos] + tok.encode(p["prompt"], add_special_tokens=False).ids, np.int32)[-room:]
               for p in problems]
    completions = []
    for start in range(0, len(prompts), batch_size):
        completions += trainer_generate(trainer, state.params, prompts[start:start + batch_size],
                                        max_new_tokens=max_new_tokens, stop_ids=stop_ids)
    correct = 0
    with (run_dir / "answers.jsonl").open("w", encoding="utf-8") as f:
        for problem, ids in zip(problems, completions):
            text = tok.decode([int(i) for i in ids if int(i) not in stop_ids])
            answer = traces_lib.extract_answer(text)
            ok = traces_lib.is_correct(answer, problem["gold"])
            correct += ok
            f.write(json.dumps({"prompt_id": problem["prompt_id"], "gold": problem["gold"], "answer": answer,
                                "correct": ok, "completion": text}, ensure_ascii=False) + "\n")
    return {"answer_file": str(prompts_file), "problems": len(problems), "correct": correct,
            "answer_accuracy": correct / max(len(problems), 1), "answers": str(run_dir / "answers.jsonl")}


def evaluate(run_dir: str | Path, *, n_batches: int = 16, prompts_file: str | None = None,
             limit: int | None = None, max_new_tokens: int | None = None) -> dict:
    """`bitjax eval`: perplexity, plus answer accuracy when the run (or the caller) names held-out problems."""
    trained = load_trained(run_dir)   # restored once for both measurements
    cfg = trained[0]
    report = heldout_perplexity(run_dir, n_batches, trained)
    prompts_file = prompts_file or cfg.eval_prompts
    if prompts_file:
        report.update(answer_accuracy(run_dir, prompts_file, limit=limit,
                                      max_new_tokens=max_new_tokens or cfg.eval_max_new_tokens, trained=trained))
    return report


def print_report(report: dict) -> None:
    width = max(len(k) for k in report)
    for key, value in report.items():
        shown = f"{value:.4f}" if isinstance(value, float) else value
        print(f"  {key:<{width}}  {shown}")
