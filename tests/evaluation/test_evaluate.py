import json

import numpy as np
import pytest

from bitjax.cli import main
from bitjax.config import apply_overrides, load_recipe
from bitjax.errors import ConfigError
from bitjax.evaluation import heldout as evaluate_lib
from bitjax.evaluation import task_accuracy as task_accuracy_lib
from bitjax.evaluation.heldout import heldout_perplexity
from bitjax.run import Run
from bitjax.run.chat import Completion
from bitjax.tasks import problems, spec
from bitjax.tasks import prompts as task_prompts
from bitjax.tasks.answers import is_correct
from bitjax.training import train
from tests.support import TINY


@pytest.fixture(scope="module")
def run(tmp_path_factory):
    workdir = tmp_path_factory.mktemp("eval_run")
    cfg = apply_overrides(load_recipe(TINY), ["model.n_layers=1", "data.seq_len=32", "data.batch_size=4",
                                              "steps=6", "eval_every=6", "eval_batches=3"])
    return workdir, train(cfg, workdir, progress=False)


def test_eval_reports_the_trainers_heldout_loss(run, capsys):
    workdir, summary = run
    report = heldout_perplexity(workdir, n_batches=3)
    assert report["step"] == 6 and report["heldout_batches"] == 3
    np.testing.assert_allclose(report["heldout_loss"], summary["heldout_loss"], rtol=1e-5)
    np.testing.assert_allclose(report["heldout_perplexity"], np.exp(report["heldout_loss"]), rtol=1e-6)
    assert main(["eval", str(workdir), "--batches", "2"]) == 0
    assert "heldout_perplexity" in capsys.readouterr().out


def test_heldout_loss_equals_a_numpy_cross_entropy_of_the_models_logits(run):
    """An independent reference: log-softmax and the token-weighted mean written in numpy (float64) over the
    same held-out batches and the model's logits; the trainer's and eval's loss functions are not used."""
    workdir, _ = run
    r = Run(workdir)
    model = r.model_builder()(r.params)
    total, count = 0.0, 0
    for batch in evaluate_lib._pipeline(r).heldout_batches(3):
        z = np.asarray(model(batch["inputs"], batch["segment_ids"], batch["positions"]), np.float64)
        m = z.max(-1, keepdims=True)
        logp = z - m - np.log(np.exp(z - m).sum(-1, keepdims=True))
        tgt = np.take_along_axis(logp, np.asarray(batch["targets"])[..., None], -1)[..., 0]
        mask = np.asarray(batch["loss_mask"]) > 0
        total, count = total - tgt[mask].sum(), count + int(mask.sum())
    report = heldout_perplexity(workdir, n_batches=3)
    assert report["heldout_tokens"] == count > 0
    np.testing.assert_allclose(report["heldout_loss"], total / count, rtol=1e-5)


CHAIN = "chain_sum:min_terms=2,max_terms=3"


class ScriptedModel:
    """Stands in for run_chat_model: greedy answers right on even problems; sampled answers from a script."""

    def __init__(self, *args, **kwargs):
        self.prompts = []

    def render(self, messages):
        return messages[0]["content"]

    def complete_many(self, prompts, *, max_new_tokens, temperature, top_p, seeds, on_batch=None):
        self.prompts += prompts
        golds = [int(_sum_of(p)) for p in prompts]
        if temperature == 0:
            return [Completion(f"steps. Answer: {g if i % 2 == 0 else g + 1}", "stop", 5)
                    for i, g in enumerate(golds)]
        # 3 samples per problem: problem 0 right twice, 1 right once (a wrong majority), 2 never, 3 no answer
        plan = {0: [0, 0, 1], 1: [0, 5, 5], 2: [1, 2, 3], 3: [None] * 3}
        return [Completion("no idea" if (d := plan[i // 3][i % 3]) is None else f"Answer: {g + d}", "stop", 3)
                for i, g in enumerate(golds)]


def _sum_of(prompt: str) -> int:
    expression = prompt.split("\n")[0].rpartition(":")[2].strip().rstrip("=").strip()
    tokens = expression.split()
    total = int(tokens[0])
    for op, x in zip(tokens[1::2], tokens[2::2]):
        total += int(x) if op == "+" else -int(x)
    return total


def test_task_accuracy_reports_pass_at_1_pass_at_k_and_majority(run):
    workdir, _ = run
    report = task_accuracy_lib.task_accuracy(ScriptedModel(), CHAIN, n_problems=4, max_new_tokens=8, samples=3,
                                             answers=workdir / "answers.jsonl")
    assert report["problems"] == 4 and report["correct"] == 2 and report["pass@1"] == 0.5
    assert report["pass@3"] == 0.5 and report["maj@3"] == 0.25
    answers = [json.loads(line) for line in (workdir / "answers.jsonl").read_text().splitlines()]
    assert [a["correct"] for a in answers] == [True, False, True, False] and len(answers[0]["samples"]) == 3


def test_answer_accuracy_of_a_traces_file_uses_each_records_task_and_prompt(run, tmp_path, monkeypatch):
    workdir, _ = run
    heldout = problems.problems(spec.parse(CHAIN), "heldout", 4)
    rows = [{"prompt_id": p.prompt_id, "question": p.question, "prompt": task_prompts.user_message(p),
             "completion": "x", "gold": p.gold, "task": CHAIN, "entry": p.entry, "label": "negative"}
            for p in heldout]
    path = tmp_path / "heldout.jsonl"
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    monkeypatch.setattr(evaluate_lib, "run_chat_model", ScriptedModel)
    report = evaluate_lib.answer_accuracy(workdir, path)
    assert report["problems"] == 4 and report["correct"] == 2 and report["answer_accuracy"] == 0.5
    rows[0].pop("task")
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(ConfigError, match="names no task to verify its answer with"):
        evaluate_lib.answer_accuracy(workdir, path)


def test_task_accuracy_of_the_real_model_scores_what_it_wrote(run, capsys):
    workdir, _ = run
    assert main(["eval", str(workdir), "--batches", "1", "--task", CHAIN, "--problems", "3", "--samples", "2",
                 "--max-new-tokens", "4"]) == 0
    out = capsys.readouterr().out
    assert "pass@1" in out and "pass@2" in out and "maj@2" in out
    answers = [json.loads(line) for line in (workdir / "answers.jsonl").read_text().splitlines()]
    task = spec.parse(CHAIN)
    heldout = problems.problems(task, "heldout", 3)
    assert [a["prompt_id"] for a in answers] == [p.prompt_id for p in heldout]
    assert all(len(a["samples"]) == 2 for a in answers)
    # the verdict recorded is the task's verifier on the very completion the model wrote
    assert [a["correct"] for a in answers] == [is_correct(task, p, a["completion"]) for p, a in zip(heldout, answers)]


def test_eval_of_a_directory_without_a_run(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a bitjax run directory" in err and len(err.splitlines()) == 1


def test_training_measures_heldout_accuracy_and_plots_it_beside_labelled_losses(tmp_path):
    cfg = apply_overrides(load_recipe(TINY), ["model.n_layers=1", "data.seq_len=32", "data.batch_size=4", "steps=2",
                                              "eval_every=1", "eval_batches=1", f"eval_task={CHAIN}",
                                              "eval_problems=3", "eval_max_new_tokens=4"])
    summary = train(cfg, tmp_path, progress=False)
    records = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    accuracies = [(r["step"], r["eval/accuracy"]) for r in records if "eval/accuracy" in r]
    assert [s for s, _ in accuracies] == [1, 2] and all(0 <= a <= 1 for _, a in accuracies)
    assert summary["heldout_accuracy"] == accuracies[-1][1]
    answers = [json.loads(line) for line in (tmp_path / "answers.jsonl").read_text().splitlines()]
    assert len(answers) == 3 and sum(a["correct"] for a in answers) / 3 == accuracies[-1][1]
    assert (tmp_path / "loss_curve.png").stat().st_size > 0
