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
The output is appended one flushed line at a time; rerunning the command resumes. `read_traces` checks a
file line by line, and `sft_documents` / `redi_pairs` turn it into training examples (bitjax.data).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
from pathlib import Path
from typing import Iterable

from tqdm import tqdm

from bitjax import jsonl_output
from bitjax.config import ConfigError

LABELS = ("positive", "negative")
HELDOUT_TEMPLATE_EVERY = 5      # gsm_symbolic templates with index % 5 == 0 are held out (20%)
SPLIT_SEED = {"train": 0, "heldout": 1_000_000}   # disjoint item seeds: reasoning-gym seeds item i with seed + i
# reasoning-gym tasks with numeric answers. gsm_symbolic: GSM8K-style word problems (split by template);
# chain_sum: short sums of 2-3 one- or two-digit numbers, easy enough for a small teacher to get some right.
TASKS = {"gsm_symbolic": {}, "chain_sum": dict(min_terms=2, max_terms=3, min_digits=1, max_digits=2)}


class TraceError(ConfigError):
    """A trace file that cannot be used; the message names the file, the line and the fix."""


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


_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?"


def extract_answer(text: str) -> str | None:
    """The final answer in a completion, as a plain number string, or None if it states none.

    Preference: `#### N`, then `\\boxed{N}`, then "answer is N", then the last number in the text
    (the usual "flexible" GSM8K extraction). Thousands separators and a leading `$` are dropped.
    """
    for pattern in (rf"####\s*({_NUMBER})", rf"\\boxed\{{\s*({_NUMBER})\s*\}}",
                    rf"answer\s*(?:is|:)\s*\**\s*({_NUMBER})"):
        found = re.findall(pattern, text, flags=re.IGNORECASE)
        if found:
            return _canonical(found[-1])
    numbers = re.findall(_NUMBER, text)
    return _canonical(numbers[-1]) if numbers else None


def _canonical(number: str) -> str:
    number = number.replace(",", "").replace("$", "").rstrip(".")
    value = float(number)
    return str(int(value)) if value.is_integer() and abs(value) < 1e15 else repr(value)


def parse_number(text: str) -> float | None:
    try:
        value = float(str(text).replace(",", "").strip())
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def is_correct(answer: str | None, gold: str) -> bool:
    if answer is None:
        return False
    a, g = parse_number(answer), parse_number(gold)
    return a is not None and g is not None and abs(a - g) <= 1e-6 * max(1.0, abs(g))


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


def _read_done(out: Path) -> tuple[set[tuple[str, int]], dict | None]:
    """(prompt_id, sample) pairs already in `out` and its first record; a torn last line is dropped."""
    jsonl_output.drop_torn_line(out)
    if not out.exists() or not out.stat().st_size:
        return set(), None
    records = read_traces(out)
    return {(r["prompt_id"], int(r["sample"])) for r in records}, records[0]


# --------------------------------------------------------------------------- reading

REQUIRED = ("prompt_id", "prompt", "completion", "gold", "label")


def read_traces(path: str | Path) -> list[dict]:
    """Every record of a trace file, checked: fields present, a numeric gold answer, a label that agrees
    with the completion's final answer. Any problem is a TraceError naming the file, the line and the fix."""
    path = Path(path)
    if not path.is_file():
        raise TraceError(f"{path}: no such trace file; write one with `bitjax traces --out {path}`")
    records = []
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, start=1):
            where = f"{path}:{lineno}"
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8"))
            except (UnicodeDecodeError, json.JSONDecodeError) as e:
                raise TraceError(f"{where}: not a JSON line ({e}); fix or delete the line") from None
            records.append(check_record(record, where))
    if not records:
        raise TraceError(f"{path}: the file holds no traces; run `bitjax traces --out {path}`")
    return records


def check_record(record, where: str) -> dict:
    if not isinstance(record, dict):
        raise TraceError(f"{where}: expected a JSON object")
    missing = [k for k in REQUIRED if k not in record]
    if missing:
        raise TraceError(f"{where}: missing field(s) {', '.join(missing)}; a trace needs {', '.join(REQUIRED)}")
    if parse_number(record["gold"]) is None:
        raise TraceError(f"{where}: the gold answer {record['gold']!r} is not a number, so the trace cannot be "
                         "verified; fix the record's `gold` or regenerate the file with `bitjax traces`")
    if record["label"] not in LABELS:
        raise TraceError(f"{where}: label {record['label']!r} must be 'positive' or 'negative'")
    answer = extract_answer(str(record["completion"]))
    if (record["label"] == "positive") != is_correct(answer, record["gold"]):
        raise TraceError(f"{where}: labelled {record['label']} but the completion's final answer is {answer!r} "
                         f"against gold {record['gold']!r}; relabel the record or regenerate the file")
    return record


# --------------------------------------------------------------------------- training examples

def sft_documents(records: Iterable[dict]) -> list[dict]:
    """Positive traces as prompt/completion documents: the prompt is input only, the completion is trained."""
    return [{"id": r.get("id", r["prompt_id"]), "prompt": r["prompt"], "text": r["completion"]}
            for r in records if r["label"] == "positive"]


def redi_pairs(records: Iterable[dict]) -> tuple[list[dict], list[dict]]:
    """REDI pairs: every positive trace with a negative of the same prompt (negatives taken in turn).

    Returns two aligned document lists (positive i pairs with negative i); prompts that have no
    positive or no negative give no pair.
    """
    by_prompt: dict[str, dict[str, list[dict]]] = {}
    for r in records:
        by_prompt.setdefault(r["prompt_id"], {"positive": [], "negative": []})[r["label"]].append(r)
    positives, negatives = [], []
    for prompt_id in sorted(by_prompt):
        pos, neg = by_prompt[prompt_id]["positive"], by_prompt[prompt_id]["negative"]
        if not pos or not neg:
            continue
        for i, p in enumerate(pos):
            n = neg[i % len(neg)]
            positives.append({"id": p.get("id", prompt_id), "prompt": p["prompt"], "text": p["completion"]})
            negatives.append({"id": n.get("id", prompt_id), "prompt": n["prompt"], "text": n["completion"]})
    return positives, negatives


def summarize(records: list[dict]) -> dict:
    """Counts a reader wants first: traces, positives, prompts with at least one positive, REDI pairs."""
    prompts = {r["prompt_id"] for r in records}
    solved = {r["prompt_id"] for r in records if r["label"] == "positive"}
    return {"traces": len(records), "positive": sum(r["label"] == "positive" for r in records),
            "prompts": len(prompts), "prompts_solved": len(solved), "redi_pairs": len(redi_pairs(records)[0])}
