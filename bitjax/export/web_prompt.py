"""Which prompt format the web page offers: the chat format the run was trained on, or plain text.

A bitjax student learns a chat format only from its trace sources (objectives `sft` and `redi`): every trace's
`prompt` is the question wrapped in the teacher's chat template, rendered by `bitjax traces` (for the
embedded SmolLM2 teacher: ChatML with its default system message). The exact text around the question is
what the student saw, so the page wraps a user's message in the same text, recovered from the trace
file itself: the part of every prompt before its question and the part after it, when all records agree.
A run without trace sources, or whose traces do not agree on one wrapping, gets a plain prompt.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from bitjax.config import TrainConfig
from bitjax.data.teacher_files import traces as trace_files
from bitjax.errors import BitjaxError

TRACE_OBJECTIVES = ("sft", "redi")


@dataclasses.dataclass(frozen=True)
class ChatFormat:
    prefix: str   # text before the user's message, e.g. "<|im_start|>system\n...<|im_end|>\n<|im_start|>user\n"
    suffix: str   # text after it, up to where the answer starts, e.g. "<|im_end|>\n<|im_start|>assistant\n"
    source: str   # the trace file it was read from

    def wrap(self, message: str) -> str:
        return self.prefix + message + self.suffix


def wrapping(records: list[dict]) -> tuple[str, str] | None:
    """The (prefix, suffix) every record's prompt puts around its question, or None if they do not agree."""
    found = set()
    for record in records:
        prompt, question = record.get("prompt"), record.get("question")
        if not isinstance(prompt, str) or not question or prompt.count(question) != 1:
            return None
        start = prompt.index(question)
        found.add((prompt[:start], prompt[start + len(question):]))
        if len(found) > 1:
            return None
    return found.pop() if found else None


def chat_format(cfg: TrainConfig) -> tuple[ChatFormat | None, str | None]:
    """The run's chat format (None for plain text) and, where a trace source could not be used, why."""
    formats, notes = set(), []
    for source in cfg.data.sources:
        if source.objective not in TRACE_OBJECTIVES or not source.uri.startswith("traces:"):
            continue
        path = source.uri.removeprefix("traces:")
        try:
            found = wrapping(trace_files.read_traces(Path(path)))
        except BitjaxError as e:   # moved or remote since training: the page still works with plain prompts
            notes.append(f"source {source.name}: {e}")
            continue
        if found is None:
            notes.append(f"source {source.name}: the prompts of {path} do not wrap their questions in one text")
            continue
        formats.add((*found, path))
    if len({f[:2] for f in formats}) == 1:
        prefix, suffix, path = sorted(formats)[0]
        return ChatFormat(prefix, suffix, path), None
    if len(formats) > 1:
        notes.append("the trace sources use different prompt formats")
    return None, "; ".join(notes) or None
