import json

import numpy as np
import pytest

from bitjax.cli import main
from bitjax.config import apply_overrides, load_recipe
from bitjax.evaluation import heldout as evaluate_lib
from bitjax.evaluation.heldout import heldout_perplexity
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
    from bitjax.run import Run
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


def test_answer_accuracy_scores_final_answers_against_gold(run, tmp_path, monkeypatch):
    workdir, _ = run
    problems = tmp_path / "heldout.jsonl"
    rows = [{"prompt_id": f"p{i}", "prompt": f"What is {i} + {i}? ", "completion": "#### 0", "gold": str(2 * i),
             "label": "positive" if i == 0 else "negative"} for i in range(4)]
    problems.write_text("".join(json.dumps(r) + "\n" for r in rows))
    from bitjax.tokenizer import load
    tok = load(workdir / "tokenizer.json")

    def fake_generate(build_model, params, prompts, *, max_new_tokens, stop_ids):
        # "answers" 2i for the first two problems and 7 for the others
        texts = [f" so #### {2 * i}" if i < 2 else " #### 7" for i in range(len(prompts))]
        return [np.asarray(tok.encode(t).ids, np.int32) for t in texts]

    monkeypatch.setattr(evaluate_lib, "greedy_generate", fake_generate)
    report = evaluate_lib.answer_accuracy(workdir, problems)
    assert report["problems"] == 4 and report["correct"] == 2 and report["answer_accuracy"] == 0.5
    answers = [json.loads(line) for line in (workdir / "answers.jsonl").read_text().splitlines()]
    assert [a["correct"] for a in answers] == [True, True, False, False]


def test_answer_accuracy_of_the_real_model_runs_end_to_end(run, tmp_path):
    workdir, _ = run
    problems = tmp_path / "heldout.jsonl"
    problems.write_text(json.dumps({"prompt_id": "p", "prompt": "1 + 1 = ", "completion": "#### 2", "gold": "2",
                                    "label": "positive"}) + "\n")
    report = evaluate_lib.answer_accuracy(workdir, problems, max_new_tokens=4)
    assert report["problems"] == 1
    completion = json.loads((workdir / "answers.jsonl").read_text())["completion"]
    assert len(completion) > 0
    # the exact score of that completion: an untrained model writes no "#### 2" (1 if it did, by the rule)
    from bitjax.data.teacher_files import traces as traces_file
    expected = traces_file.is_correct(traces_file.extract_answer(completion), "2")
    assert report["answer_accuracy"] == float(expected) and report["correct"] == int(expected)
    # a gold answer equal to what the model wrote scores 1: the scoring reads the real completion
    answer = traces_file.extract_answer(completion)
    if answer is not None:
        problems.write_text(json.dumps({"prompt_id": "p", "prompt": "1 + 1 = ", "completion": "#### 2",
                                        "gold": answer, "label": "positive"}) + "\n")
        assert evaluate_lib.answer_accuracy(workdir, problems, max_new_tokens=4)["answer_accuracy"] == 1.0


def test_eval_of_a_directory_without_a_run(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a bitjax run directory" in err and len(err.splitlines()) == 1
