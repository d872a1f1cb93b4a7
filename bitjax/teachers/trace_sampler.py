"""Teacher reasoning traces: sample completions of a task's problems, verify each final answer, label it.

    bitjax traces --out data/traces/train.jsonl --task gsm_symbolic --prompts 160 --samples 6
    bitjax traces --out traces.jsonl --task chain_sum:min_terms=4,max_terms=5 --teacher bitjax:runs/teacher

Problems come from any reasoning-gym task or a user's JSONL file (bitjax.tasks: split into training and
held-out problems that never share an item or a template); each is put to the teacher as one user message in
its own chat template (bitjax.tasks.prompts), and each completion is verified by the task's own `score_answer`,
or by math-verify for a problems file (bitjax.tasks.answers). Each sampled completion is one JSONL record:
  id, prompt_id, split, question, gold         the problem and its reference answer
  task, entry                                  the task spec and what its verifier reads
  prompt                                       the text the teacher was given: its own chat template
  completion, finish_reason, answer, label     the teacher's reply, the final answer stated in it, and
                                               "positive" if the task's verifier accepts it, else "negative"
  teacher, settings, sample                    provenance (the seed is a hash of (seed, prompt_id, sample))
A llama.cpp or transformers teacher answers one prompt per call; a bitjax run (`bitjax:RUN_DIR`) answers a
batch of prompts x samples per call with a key/value cache in JAX (bitjax.run.chat), sharded over the devices.
The output is appended one flushed line at a time, a batch at a time; rerunning the command resumes. Reading
a trace file, and turning it into training examples, is bitjax.data.teacher_files.traces.
"""

from __future__ import annotations

import dataclasses
import time
from pathlib import Path

from tqdm import tqdm

from bitjax.data.teacher_files.traces import check_record
from bitjax.errors import ConfigError
from bitjax.tasks import prompts as task_prompts
from bitjax.tasks.answers import final_answer, is_correct
from bitjax.tasks.problems import Problem, sample_seed
from bitjax.tasks.spec import TaskSpec
from bitjax.teachers import jsonl_output


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = 192
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0


# --------------------------------------------------------------------------- sampling

def sample_traces(model, task: TaskSpec, problems: list[Problem], out: str | Path, *, split: str, samples: int,
                  settings: SamplingSettings = SamplingSettings(), progress: bool = True) -> dict:
    """Sample `samples` completions per problem from a chat model, verify and append them to `out`."""
    out = Path(out)
    done, first = _read_done(out)
    settings_dict = dataclasses.asdict(settings)
    jsonl_output.check_settings(out, first, settings_dict)
    if first is not None and first.get("task", str(task)) != str(task):
        raise ConfigError(f"{out} holds traces of --task {first['task']}, not {task}; pass that task to resume it, "
                          "or a new --out for this one")
    todo = [(p, s) for p in problems for s in range(samples) if (p.prompt_id, s) not in done]
    summary = {"output": str(out), "already_done": len(done), "written": 0, "positive": 0, "tokens": 0,
               "seconds": 0.0}
    if not todo:
        return summary
    out.parent.mkdir(parents=True, exist_ok=True)
    batch = max(1, getattr(model, "batch_size", 1))
    rendered = {p.prompt_id: model.render([{"role": "user", "content": task_prompts.user_message(p)}])
                for p in problems}
    start = time.perf_counter()
    with out.open("a", encoding="utf-8") as f, tqdm(total=len(todo), disable=not progress, desc="traces",
                                                     dynamic_ncols=True) as bar:
        def on_batch(rows: int, tokens: int) -> None:
            summary["tokens"] += tokens
            bar.update(rows)
            bar.set_postfix(positive=summary["positive"],
                            tok_per_s=f"{summary['tokens'] / max(time.perf_counter() - start, 1e-9):.0f}")

        for lo in range(0, len(todo), batch):   # a batch is written before the next one is sampled
            chunk = todo[lo:lo + batch]
            completions = model.complete_many(
                [rendered[p.prompt_id] for p, _ in chunk], max_new_tokens=settings.max_new_tokens,
                temperature=settings.temperature, top_p=settings.top_p,
                seeds=[sample_seed(settings.seed, p.prompt_id, s) for p, s in chunk], on_batch=on_batch)
            for (problem, sample), completion in zip(chunk, completions):
                label = "positive" if is_correct(task, problem, completion.text) else "negative"
                jsonl_output.append(f, {
                    "id": f"{problem.prompt_id}#{sample}", "prompt_id": problem.prompt_id, "split": split,
                    "question": problem.question, "gold": problem.gold, "task": str(task), "entry": problem.entry,
                    "prompt": rendered[problem.prompt_id], "completion": completion.text,
                    "finish_reason": completion.finish_reason, "answer": final_answer(completion.text),
                    "label": label, "teacher": model.name, "settings": settings_dict, "sample": sample})
                summary["written"] += 1
                summary["positive"] += label == "positive"
    summary["seconds"] = round(time.perf_counter() - start, 2)
    summary["tokens_per_second"] = round(summary["tokens"] / max(summary["seconds"], 1e-9), 1)
    return summary


def _is_trace(record, where: str) -> bool:
    check_record(record, where)
    return "prompt_id" in record and "sample" in record


def check_output(out: Path) -> None:
    """Refuse an --out that is not a trace file, before any model loads and before anything is cut."""
    jsonl_output.read_own_records(out, _is_trace, "traces")


def _read_done(out: Path) -> tuple[set[tuple[str, int]], dict | None]:
    """(prompt_id, sample) pairs already in `out` and its first record; a torn last line is dropped."""
    records = jsonl_output.read_own_records(out, _is_trace, "traces")
    if not records:
        return set(), None
    return {(r["prompt_id"], int(r["sample"])) for r in records}, records[0]


