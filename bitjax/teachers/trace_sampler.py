"""Teacher reasoning traces: sample completions of math word problems, verify each final answer, label it.

    bitjax traces --out data/traces/train.jsonl --task gsm_symbolic --prompts 160 --samples 6

Prompts come from reasoning-gym's `gsm_symbolic` (procedurally generated GSM8K-style problems with exact
answers), split by problem template so held-out prompts never share a template with training prompts,
or from `chain_sum` (short sums; see TASKS).
Each sampled completion is one JSONL record:
  id, prompt_id, split, question, gold         the problem and its exact answer
  prompt                                       the text the teacher was given: its own chat template
  completion, finish_reason, answer, label     the teacher's reply, the final answer parsed from it, and
                                               "positive" if that answer equals the gold one, else "negative"
  teacher, settings, sample                    provenance (the sample index seeds the sampler)
The output is appended one flushed line at a time; rerunning the command resumes. Reading and checking a
trace file, and turning it into training examples, is bitjax.data.teacher_files.traces.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from tqdm import tqdm

from bitjax.data.teacher_files.traces import check_record, extract_answer, is_correct
from bitjax.errors import ConfigError
from bitjax.teachers import jsonl_output

HELDOUT_TEMPLATE_EVERY = 5      # gsm_symbolic templates with index % 5 == 0 are held out (20%)
SPLIT_SEED = {"train": 0, "heldout": 1_000_000}   # disjoint item seeds: reasoning-gym seeds item i with seed + i
# reasoning-gym tasks with numeric answers. gsm_symbolic: GSM8K-style word problems (split by template);
# chain_sum: short sums of 2-3 one- or two-digit numbers, easy enough for a small teacher to get some right.
TASKS = {"gsm_symbolic": {}, "chain_sum": dict(min_terms=2, max_terms=3, min_digits=1, max_digits=2)}


@dataclasses.dataclass(frozen=True)
class SamplingSettings:
    max_new_tokens: int = 192
    temperature: float = 0.7
    top_p: float = 0.9
    seed: int = 0


# --------------------------------------------------------------------------- prompts and answers

def task_prompts(task: str, split: str, n: int) -> list[dict]:
    """The first `n` problems of a task's split: {"prompt_id", "question", "gold", "template"}.

    Splits draw disjoint item seeds; gsm_symbolic's held-out split also uses only its own templates, so a
    held-out problem never shares its wording with a training one.
    """
    if split not in SPLIT_SEED:
        raise ConfigError(f"split {split!r}: use 'train' or 'heldout'")
    if task not in TASKS:
        raise ConfigError(f"task {task!r}: known tasks are {', '.join(TASKS)}")
    try:
        import reasoning_gym
    except ImportError:
        raise ConfigError("reasoning-gym is missing; install it with `pip install -e '.[traces]'`") from None
    size = max(64, 8 * n)   # enough items that n of them fall in the split's templates
    dataset = reasoning_gym.create_dataset(task, size=size, seed=SPLIT_SEED[split], **TASKS[task])
    templates = getattr(dataset, "task_indices", None)
    out = []
    for idx in range(size):
        template = int(templates[idx]) if templates is not None else -1
        if templates is not None and (template % HELDOUT_TEMPLATE_EVERY == 0) != (split == "heldout"):
            continue
        item = dataset[idx]
        out.append({"prompt_id": f"{task}/{split}/{idx}", "question": item["question"],
                    "gold": str(item["answer"]), "template": template})
        if len(out) == n:
            break
    return out


# --------------------------------------------------------------------------- sampling

def sample_seed(seed: int, prompt_id: str, sample: int) -> int:
    return jsonl_output.stable_seed(seed, prompt_id, sample)


def sample_traces(model, prompts: list[dict], out: str | Path, *, split: str, samples: int,
                  settings: SamplingSettings = SamplingSettings(), progress: bool = True) -> dict:
    """Sample `samples` completions per prompt from a chat model, verify and append them to `out`."""
    out = Path(out)
    done, first = _read_done(out)
    settings_dict = dataclasses.asdict(settings)
    jsonl_output.check_settings(out, first, settings_dict)
    todo = [(p, s) for p in prompts for s in range(samples) if (p["prompt_id"], s) not in done]
    summary = {"output": str(out), "already_done": len(done), "written": 0, "positive": 0}
    if not todo:
        return summary
    out.parent.mkdir(parents=True, exist_ok=True)
    with out.open("a", encoding="utf-8") as f, tqdm(total=len(todo), disable=not progress, desc="traces",
                                                     dynamic_ncols=True) as bar:
        for prompt, sample in todo:
            text = model.render([{"role": "user", "content": prompt["question"]}])
            completion = model.complete(text, max_new_tokens=settings.max_new_tokens,
                                        temperature=settings.temperature, top_p=settings.top_p,
                                        seed=sample_seed(settings.seed, prompt["prompt_id"], sample))
            answer = extract_answer(completion.text)
            label = "positive" if is_correct(answer, prompt["gold"]) else "negative"
            record = {"id": f"{prompt['prompt_id']}#{sample}", "prompt_id": prompt["prompt_id"], "split": split,
                      "question": prompt["question"], "gold": prompt["gold"], "prompt": text,
                      "completion": completion.text, "finish_reason": completion.finish_reason,
                      "answer": answer, "label": label, "teacher": model.name, "settings": settings_dict,
                      "sample": sample}
            jsonl_output.append(f, record)
            summary["written"] += 1
            summary["positive"] += label == "positive"
            bar.update(1)
            bar.set_postfix(positive=summary["positive"])
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


