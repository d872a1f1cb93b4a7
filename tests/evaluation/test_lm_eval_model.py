"""The `bitjax` model of lm-evaluation-harness on a trained run, over two local tasks the test writes (a
multiple-choice task and a generation task: task YAMLs over JSON files, HF_DATASETS_OFFLINE=1).

lm-eval's log-likelihoods equal bitjax's own forward for the same strings (full logits, one sequence at a
time), its greedy generations equal `bitjax generate` on the run directory, and the same tasks scored
through lm-eval's `hf` model on the run's packed export agree with the run's scores.
"""

import json
import os
import re

import numpy as np
import pytest

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")   # before lm-eval imports `datasets`, which reads it then
lm_eval = pytest.importorskip("lm_eval")

from bitjax import tokenizer as tokenizer_lib  # noqa: E402
from bitjax.cli import main  # noqa: E402
from bitjax.errors import ConfigError  # noqa: E402
from bitjax.evaluation.lm_eval_model import BitjaxLM  # noqa: E402  (and registers "bitjax" with lm-eval)
from bitjax.run import Run  # noqa: E402

MC_DOCS = [  # question, four choices, the index of the right one
    ("ROMEO: But soft, what light through yonder", [" window breaks", " door opens", " sky falls", " cat sleeps"], 0),
    ("First Citizen: Before we proceed any further, hear me", [" speak", " run", " sing", " vanish"], 0),
    ("HAMLET: To be, or not to", [" be", " go", " eat", " see"], 0),
    ("KING LEAR: Blow, winds, and crack your", [" cheeks", " teeth", " books", " doors"], 0),
    ("JULIET: O Romeo, Romeo, wherefore art", [" thou Romeo", " the sea", " my lord", " no more"], 0),
    ("MACBETH: Is this a dagger which I see before", [" me", " you", " him", " them"], 0),
]
# After its 60 steps the test run continues most prompts with newlines; these three give a continuation that runs
# to the token limit, one cut at the stop string, and an empty one.
GEN_DOCS = [("What", ", this is"), ("ROMEO: What li", "ght"), ("My lord, I", " pray")]
MAX_GEN = 12
STOP = "\n\n"

MC_TASK = """task: bitjax_local_mc
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: multiple_choice
doc_to_text: "{{{{question}}}}"
doc_to_choice: "{{{{choices}}}}"
doc_to_target: "{{{{answer}}}}"
target_delimiter: ""
metric_list:
  - metric: acc
"""
GEN_TASK = """task: bitjax_local_gen
dataset_path: json
dataset_kwargs:
  data_files:
    test: {data}
test_split: test
output_type: generate_until
doc_to_text: "{{{{prompt}}}}"
doc_to_target: "{{{{target}}}}"
target_delimiter: ""
generation_kwargs:
  until: ["{stop}"]
  max_gen_toks: {max_gen}
  do_sample: false
metric_list:
  - metric: exact_match
"""
TASKS = ["bitjax_local_mc", "bitjax_local_gen"]


@pytest.fixture(scope="module")
def task_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("lm_eval_tasks")
    (out / "mc.jsonl").write_text("".join(json.dumps({"question": q, "choices": c, "answer": a}) + "\n"
                                          for q, c, a in MC_DOCS))
    (out / "gen.jsonl").write_text("".join(json.dumps({"prompt": p, "target": t}) + "\n" for p, t in GEN_DOCS))
    (out / "mc.yaml").write_text(MC_TASK.format(data=out / "mc.jsonl"))
    (out / "gen.yaml").write_text(GEN_TASK.format(data=out / "gen.jsonl", stop=STOP.encode("unicode_escape")
                                                  .decode(), max_gen=MAX_GEN))
    return out


def _evaluate(model: str, model_args: dict, task_dir) -> dict:
    """lm-eval's Python API over the local tasks, every request's response kept."""
    from lm_eval.tasks import TaskManager

    # the local tasks alone: indexing lm-eval's ~15,000 built-in task files takes half a minute on a busy CPU
    manager = TaskManager(include_path=str(task_dir), include_defaults=False)
    return lm_eval.simple_evaluate(model=model, model_args=model_args, tasks=TASKS, task_manager=manager,
                                   batch_size=4, log_samples=True, bootstrap_iters=0)


@pytest.fixture(scope="module")
def run_results(trained_run, task_dir):
    return _evaluate("bitjax", {"run": str(trained_run)}, task_dir)


def _loglikelihoods(results) -> list[tuple[str, str, float]]:
    """(context, continuation, log-likelihood) of every multiple-choice request, in document order."""
    out = []
    for sample in sorted(results["samples"]["bitjax_local_mc"], key=lambda s: s["doc_id"]):
        for args, resp in zip(sample["arguments"], sample["resps"]):
            out.append((args[0], args[1], float(resp[0][0])))
    return out


def _generations(results) -> list[tuple[str, str]]:
    return [(s["arguments"][0][0], s["resps"][0][0])
            for s in sorted(results["samples"]["bitjax_local_gen"], key=lambda s: s["doc_id"])]


@pytest.fixture(scope="module")
def own_forward(trained_run):
    """ids -> (len(ids), V) float32 log-probabilities of each next token, from the model's own call: the full
    logits of one sequence, right-padded to one length so that it compiles once (causal attention: the padding
    after a position does not reach it)."""
    import jax

    run = Run(trained_run)
    build = run.model_builder()
    forward = jax.jit(lambda params, tokens_1L: jax.nn.log_softmax(build(params)(tokens_1L), axis=-1))

    def logprobs(ids: list[int]) -> np.ndarray:
        tokens_1L = np.zeros((1, 64), np.int32)
        tokens_1L[0, :len(ids)] = ids
        return np.asarray(forward(run.params, tokens_1L)[0, :len(ids)], np.float32)

    return logprobs


def test_loglikelihoods_equal_bitjax_forward_and_generations_equal_bitjax_generate(trained_run, run_results,
                                                                                  own_forward, capsys):
    tok = tokenizer_lib.load(trained_run / "tokenizer.json")
    scored = _loglikelihoods(run_results)
    assert len(scored) == 4 * len(MC_DOCS)
    for context, continuation, got in scored:
        context_ids = tok.encode(context).ids
        ids = tok.encode(context + continuation).ids
        assert ids[:len(context_ids)] == context_ids    # the strings split where lm-eval splits them
        logp_LV = own_forward(ids)
        want = sum(float(logp_LV[i - 1, ids[i]]) for i in range(len(context_ids), len(ids)))
        assert got == pytest.approx(want, abs=1e-5), (context, continuation)
    acc = run_results["results"]["bitjax_local_mc"]["acc,none"]
    assert 0.0 <= acc <= 1.0

    generations = _generations(run_results)
    assert len(generations) == len(GEN_DOCS)
    for prompt, got in generations:
        assert main(["generate", str(trained_run), "--prompt", prompt, "--max-new-tokens", str(MAX_GEN),
                     "--temperature", "0"]) == 0
        generated = capsys.readouterr().out[:-1]   # `bitjax generate` ends its output with a newline
        assert got == generated.split(STOP)[0], prompt
    assert any(got for _, got in generations)      # not only empty continuations


def test_a_documents_rolling_loglikelihood_is_its_log_likelihood_after_end_of_text(trained_run, own_forward):
    """lm-eval's perplexity tasks (`loglikelihood_rolling`): a document that fits the context is one window,
    conditioned on <|endoftext|>."""
    from types import SimpleNamespace

    text = "To be, or not to be, that is the question: whether 'tis nobler in the mind to suffer"
    tok = tokenizer_lib.load(trained_run / "tokenizer.json")
    ids = [tokenizer_lib.eos_id(tok)] + tok.encode(text).ids
    logp_LV = own_forward(ids)
    want = sum(float(logp_LV[i - 1, ids[i]]) for i in range(1, len(ids)))
    model = BitjaxLM(run=str(trained_run), batch_size=2)
    assert model.loglikelihood_rolling([SimpleNamespace(args=(text,))], disable_tqdm=True)[0] == \
        pytest.approx(want, abs=1e-5)


def _choices(scored) -> list[int]:
    """The choice with the highest log-likelihood, per multiple-choice document."""
    return [int(np.argmax([ll for _, _, ll in scored[i:i + 4]])) for i in range(0, len(scored), 4)]


def _differences(ours, theirs) -> np.ndarray:
    assert [(c, x) for c, x, _ in ours] == [(c, x) for c, x, _ in theirs]
    return np.abs([a - b for (_, _, a), (_, _, b) in zip(ours, theirs)])


@pytest.mark.slow
def test_the_exports_scored_through_lm_eval_agree_with_the_run(trained_run, run_results, task_dir, tmp_path):
    """The packed export through lm-eval's own `hf` model (transformers' BitNetForCausalLM) and the TQ2_0 GGUF
    through the `bitjax` model in llama.cpp (gguf=FILE) score the local tasks as the run directory does: the
    same choices; log-likelihoods equal to float rounding for transformers (int8 activations per token, as
    bitjax), within llama.cpp's agreement for the GGUF, whose activations are 8-bit per block of 256 values
    (Q8_K) rather than per token (docs/export.md). Greedy generations: transformers' equal the run's; llama.cpp's
    are printed, not compared (its activation rounding moves near-tied tokens)."""
    torch = pytest.importorskip("torch")
    pytest.importorskip("llama_cpp")
    from bitjax.export import export_run

    export_run(trained_run, tmp_path / "packed", format="packed")
    export_run(trained_run, tmp_path / "m.gguf", format="gguf", gguf_type="tq2_0")
    torch.compiler.set_stance("force_eager")   # as bitjax.export.hf_check: no minute of C++ compilation on a CPU
    packed = _evaluate("hf", {"pretrained": str(tmp_path / "packed"), "dtype": "float32", "device": "cpu"},
                       task_dir)
    gguf = _evaluate("bitjax", {"gguf": str(tmp_path / "m.gguf"), "n_threads": 2}, task_dir)
    ours = _loglikelihoods(run_results)
    for name, results, worst, mean in (("packed (transformers)", packed, 1e-3, 1e-4),
                                       ("TQ2_0 GGUF (llama.cpp)", gguf, 0.15, 0.05)):
        theirs = _loglikelihoods(results)
        differences = _differences(ours, theirs)
        print(f"\n{name} vs run directory (bitjax), {len(ours)} log-likelihoods: max |difference| "
              f"{differences.max():.2e}, mean {differences.mean():.2e}; choices {_choices(theirs)} vs "
              f"{_choices(ours)}; generations {_generations(results)}")
        assert differences.max() < worst and differences.mean() < mean
        assert _choices(theirs) == _choices(ours)
        accuracy = results["results"]["bitjax_local_mc"]["acc,none"]
        assert accuracy == run_results["results"]["bitjax_local_mc"]["acc,none"]
    assert _generations(packed) == _generations(run_results)


def test_bitjax_lm_eval_is_lm_evals_command_line_with_the_bitjax_model(trained_run, task_dir, tmp_path, capsys):
    args = ["lm-eval", "--model", "bitjax", "--model_args", f"run={trained_run}", "--tasks", "bitjax_local_mc",
            "--include_path", str(task_dir), "--limit", "2", "--batch_size", "2"]
    assert main(args) == 0
    out = capsys.readouterr().out
    assert "|bitjax_local_mc|" in out and "|acc   |" in out and str(trained_run) in out

    # what the command prints as `bitjax: error: ...` and exit 2 (bitjax.cli.main catches every ConfigError)
    with pytest.raises(ConfigError, match="^" + re.escape(f"run directory {tmp_path / 'no_run'} does not exist; pass "
                                                          "a directory written by `bitjax train`") + "$"):
        BitjaxLM(run=str(tmp_path / "no_run"))
    with pytest.raises(ConfigError, match="pass --model_args run=RUN_DIR .* or gguf=FILE.gguf .*, one of the two"):
        BitjaxLM(run=str(trained_run), gguf="m.gguf")
