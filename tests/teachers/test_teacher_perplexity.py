"""`teacher_perplexity`, the teacher row of the distillation results table, on a fake teacher whose answer is
known in closed form: it puts probability 1/2 on repeating the current token and spreads the rest evenly."""

import math

import numpy as np
import pytest

from bitjax.config import DataConfig, SourceConfig
from bitjax.data import build_pipeline
from bitjax.teachers.backends import teacher_perplexity

V = 512


class CopyTeacher:
    """p(next = current token) = 1/2, every other token (1/2) / (V - 1); records what it was shown."""
    name = "test:copy"
    vocab_size = V

    def __init__(self):
        self.calls = []

    def logits(self, tokens_BL):
        self.calls.append(np.asarray(tokens_BL[0]).copy())
        out = np.full(tokens_BL.shape + (V,), math.log(0.5 / (V - 1)), np.float32)
        np.put_along_axis(out, np.asarray(tokens_BL)[..., None], math.log(0.5), axis=-1)
        return out


def test_teacher_perplexity_equals_the_closed_form_and_reads_each_document_alone(tmp_path):
    """Short documents, so rows pack several: the loss is the closed form over the scored tokens, and the
    teacher is shown each document alone, never its neighbours in the row."""
    import json
    words = "the king and queen walk to the old castle by the sea at night".split()
    with (tmp_path / "short.jsonl").open("w") as f:
        for i in range(400):
            f.write(json.dumps({"id": f"d{i}", "text": " ".join(words[j % len(words)] for j in range(i % 7 + 2))})
                    + "\n")
    cfg = DataConfig(sources=(SourceConfig("short", f"jsonl:{tmp_path / 'short.jsonl'}", 1.0),), vocab_size=V,
                     seq_len=32, batch_size=4)
    pipeline = build_pipeline(cfg)
    teacher = CopyTeacher()
    report = teacher_perplexity(teacher, pipeline, n_batches=2)

    batches = pipeline.heldout_batches(2)
    repeats = others = 0
    documents = []
    for batch in batches:
        for row in range(len(batch["inputs"])):
            seg = batch["segment_ids"][row]
            for s in np.unique(seg[seg > 0]):
                where = np.flatnonzero(seg == s)
                documents.append(batch["inputs"][row][where])
                scored = batch["loss_mask"][row][where] > 0
                same = batch["targets"][row][where] == batch["inputs"][row][where]
                repeats += int(np.sum(scored & same))
                others += int(np.sum(scored & ~same))
    want_loss = (repeats * math.log(2) + others * math.log(2 * (V - 1))) / (repeats + others)
    assert report["heldout_tokens"] == repeats + others > 0
    assert report["heldout_loss"] == pytest.approx(want_loss, rel=1e-6)
    assert report["heldout_perplexity"] == pytest.approx(math.exp(want_loss), rel=1e-6)
    # one teacher call per packed document, each the document's own tokens from its first position on
    assert len(teacher.calls) == len(documents) > len(batches) * 4
    for call, doc in zip(teacher.calls, documents):
        np.testing.assert_array_equal(call, doc)
