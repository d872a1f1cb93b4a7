"""Tasks: specs parsed once with one-line errors, training and held-out problems that never meet, answers judged
by the task's own verifier or math-verify, worked solutions that verify."""

import json

import pytest

from bitjax.errors import ConfigError
from bitjax.tasks import answers, problems, prompts, spec, worked


def _one_line(excinfo) -> str:
    message = str(excinfo.value)
    assert "\n" not in message
    return message


def test_a_task_with_keyword_arguments_is_parsed_and_checked():
    task = spec.parse("chain_sum:min_terms=4,max_terms=5")
    assert task.name == "chain_sum" and dict(task.kwargs) == {"min_terms": 4, "max_terms": 5}
    assert str(task) == "chain_sum:min_terms=4,max_terms=5"


@pytest.mark.parametrize("bad, says", [
    ("chain_summ", "did you mean chain_sum"),
    ("chain_sum:min_terms", "is not KEY=VALUE"),
    ("chain_sum:no_such_setting=3", "chain_sum takes"),
    ("jsonl:/no/such/file.jsonl", "no problems file"),
])
def test_bad_task_specs_are_one_line_errors(bad, says):
    with pytest.raises(ConfigError) as excinfo:
        spec.parse(bad)
    assert says in _one_line(excinfo)


def test_training_and_heldout_problems_never_share_a_question():
    task = spec.parse("chain_sum:min_terms=4,max_terms=5")
    train = problems.problems(task, "train", 400)
    heldout = problems.problems(task, "heldout", 100)
    assert len(train) == 400 and len(heldout) == 100
    assert not {p.question for p in train} & {p.question for p in heldout}
    assert all(problems.is_heldout(p.question, None) for p in heldout)
    # the same problems on every call: the split is a function of the question, not of how many are asked
    assert [p.question for p in problems.problems(task, "heldout", 20)] == [p.question for p in heldout[:20]]


def test_gsm_symbolic_holds_out_whole_templates():
    task = spec.parse("gsm_symbolic")
    ds = spec.dataset(task, size=600)
    train = problems.problems(task, "train", 120)
    heldout = problems.problems(task, "heldout", 30)
    template = {p.prompt_id: int(ds.task_indices[int(p.prompt_id.rsplit("/", 1)[1])]) for p in train + heldout}
    assert not {template[p.prompt_id] for p in train} & {template[p.prompt_id] for p in heldout}


def test_answers_are_judged_by_the_tasks_own_verifier():
    task = spec.parse("chain_sum")
    [problem] = problems.problems(task, "heldout", 1)
    assert answers.is_correct(task, problem, f"some steps. Answer: {problem.gold}")
    assert answers.is_correct(task, problem, f"Answer: {int(problem.gold) + 1}\nno, Answer: {problem.gold}.")
    assert not answers.is_correct(task, problem, f"Answer: {int(problem.gold) + 1}")
    assert not answers.is_correct(task, problem, f"the sum is {problem.gold}")   # no stated answer
    assert answers.final_answer("steps\nAnswer: 12.\nmore text") == "12"


def test_a_problems_file_is_judged_by_math_verify(tmp_path):
    path = tmp_path / "problems.jsonl"
    path.write_text(json.dumps({"question": "Half of one?", "answer": "\\frac{1}{2}"}) + "\n\n"
                    + json.dumps({"id": "q2", "question": "Two and two?", "answer": "4"}) + "\n")
    task = spec.parse(f"jsonl:{path}")
    first, second = problems.problems(task, "heldout", 10)
    assert second.prompt_id == "jsonl/q2"
    assert answers.is_correct(task, first, "Answer: 0.5")
    assert answers.is_correct(task, first, "Answer: $\\boxed{1/2}$")
    assert not answers.is_correct(task, first, "Answer: 0.25")
    assert answers.is_correct(task, second, "Answer: 4")


@pytest.mark.parametrize("line, says", [
    ('{"question": "no answer here"}', 'needs "question" and "answer"'),
    ("not json", "not JSON"),
])
def test_a_problems_file_without_answers_is_one_line(tmp_path, line, says):
    path = tmp_path / "problems.jsonl"
    path.write_text(line + "\n")
    with pytest.raises(ConfigError) as excinfo:
        problems.problems(spec.parse(f"jsonl:{path}"), "train", 5)
    message = _one_line(excinfo)
    assert says in message and f"{path}:1" in message


def test_worked_solutions_verify_and_an_answer_alone_is_the_direct_target():
    task = spec.parse("chain_sum:min_terms=4,max_terms=5")
    for problem in problems.problems(task, "train", 50):
        text = worked.solution(task, problem)
        assert text.count("=") == len(problem.entry["metadata"]["expression"].split()) // 2
        assert answers.is_correct(task, problem, text)
        assert answers.is_correct(task, problem, worked.direct(problem))
    with pytest.raises(ConfigError) as excinfo:
        worked.solution(spec.parse("leg_counting"), problems.problems(spec.parse("leg_counting"), "train", 1)[0])
    assert "bitjax traces" in _one_line(excinfo)


@pytest.mark.parametrize("text, stated", [
    ("0 - 4 = -4. Answer: -4", "-4"),
    ("Answer: 3\nno wait.\nAnswer: 4.", "4"),                        # the last one stated
    ("so $\\boxed{42}$ and then 13", "42"),                           # failing `Answer:`, a box
    ("The answer is 963.\n\nSo the answer is **964**.", "964"),       # then "the answer is"
    ("first 12, then 15.", None),                                     # never a bare last number
    ("Answer:   ", None),
])
def test_the_stated_answer_is_read_as_flexible_extractors_do(text, stated):
    assert answers.final_answer(text) == stated


def test_problems_command_writes_verified_solutions_in_bitjaxs_chat_template(tmp_path, capsys):
    from bitjax.cli import main

    spec_text = "chain_sum:min_terms=4,max_terms=5,min_digits=1,max_digits=1"
    worked_file, direct_file = tmp_path / "worked.jsonl", tmp_path / "direct.jsonl"
    assert main(["problems", "--task", spec_text, "--count", "5", "--out", str(worked_file)]) == 0
    assert main(["problems", "--task", spec_text, "--count", "5", "--solutions", "direct", "--out",
                 str(direct_file)]) == 0
    task = spec.parse(spec_text)
    heldout = {p.question for p in problems.problems(task, "heldout", 50)}
    rows = [json.loads(line) for line in worked_file.read_text().splitlines()]
    direct = [json.loads(line) for line in direct_file.read_text().splitlines()]
    assert len(rows) == 5 and [r["prompt_id"] for r in rows] == [r["prompt_id"] for r in direct]
    for r, d in zip(rows, direct):
        assert r["prompt"] == f"user: {r['question']}\n{prompts.INSTRUCTION}\nassistant: "
        assert r["question"] not in heldout
        assert r["completion"].count("=") >= 3 and r["completion"].endswith(f"Answer: {r['gold']}")
        assert d["completion"] == f"Answer: {r['gold']}"
    # an existing file is never overwritten
    assert main(["problems", "--task", spec_text, "--count", "5", "--out", str(worked_file)]) == 2
    assert "exists" in capsys.readouterr().err
