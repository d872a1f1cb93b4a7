"""Teacher-trace files (written by `bitjax traces`): read and check them, make training examples.

A record holds `prompt_id`, `prompt`, `completion`, `gold` and `label` ("positive" when the task's verifier
accepted the completion's final answer, else "negative"); see bitjax.teachers.trace_sampler for how they are
sampled and verified (bitjax.tasks.answers).
`read_traces` checks a file line by line; `sft_documents` and `redi_pairs` turn records into the documents
the data pipeline tokenizes.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterable

from bitjax.errors import TraceError, first_line

LABELS = ("positive", "negative")


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
            except (ValueError, RecursionError) as e:   # not UTF-8, not JSON, or JSON Python cannot hold
                raise TraceError(f"{where}: not a usable JSON line ({first_line(e)}); fix the line, or write the "
                                 "traces again with `bitjax traces`") from None
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
    if record["label"] not in LABELS:
        raise TraceError(f"{where}: label {record['label']!r} must be 'positive' or 'negative'")
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
