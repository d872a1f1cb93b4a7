"""`bitjax eval FILE.gguf --task`: an export answers a task's held-out problems in llama.cpp (its own chat
template and tokenizer) as the run does in bitjax, completion by completion."""

import json

from bitjax.cli import main
from bitjax.evaluation.gguf_chat import GGUFChatModel
from bitjax.evaluation.task_accuracy import task_accuracy
from bitjax.export import export_run
from bitjax.run import Run
from bitjax.run.chat import run_chat_model

TASK = "chain_sum:min_terms=2,max_terms=3"


def _answers(path):
    return [json.loads(line) for line in path.read_text().splitlines()]


def test_an_export_answers_held_out_problems_in_llama_cpp_as_the_run_does(trained_run, tmp_path, capsys):
    gguf = export_run(trained_run, tmp_path / "student.gguf", format="gguf", gguf_type="tq2_0")["path"]
    ours = task_accuracy(run_chat_model(Run(trained_run)), TASK, n_problems=10, max_new_tokens=8,
                         answers=tmp_path / "run_answers.jsonl")
    theirs = task_accuracy(GGUFChatModel(gguf), TASK, n_problems=10, max_new_tokens=8,
                           answers=tmp_path / "gguf_answers.jsonl")
    a, b = _answers(tmp_path / "run_answers.jsonl"), _answers(tmp_path / "gguf_answers.jsonl")
    assert [x["prompt_id"] for x in a] == [y["prompt_id"] for y in b]
    # greedy texts agree but where a near-tie argmax flips (TQ2_0 rounds the activations' scales differently)
    assert sum(x["completion"] == y["completion"] for x, y in zip(a, b)) >= 7
    assert abs(ours["correct"] - theirs["correct"]) <= 2
    # the command: a one-line report, and the answers written beside the GGUF
    assert main(["eval", str(gguf), "--task", TASK, "--problems", "3", "--max-new-tokens", "4"]) == 0
    assert "pass@1" in capsys.readouterr().out and (tmp_path / "student.answers.jsonl").is_file()
