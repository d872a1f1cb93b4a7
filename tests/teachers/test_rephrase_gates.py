"""The rephrasing quality gates: each catches its failure case and passes a good rephrasing."""

import dataclasses

import pytest

from bitjax.errors import ConfigError
from bitjax.teachers import rephrase_gates as g

PASSAGE = ("DROMIO OF SYRACUSE. Master, shall I fetch your stuff from the Centaur? The merchant Angelo has the "
           "chain you ordered, and he waits for you at the Porpentine, where your wife and her sister dine.")
GOOD = ("Dromio asks his master whether he should fetch his things from the Centaur inn. He says that Angelo, "
        "the merchant, has the chain his master ordered and is waiting for him at the Porpentine, where the "
        "wife and her sister are having dinner.")


def failed(output, passage=PASSAGE, **thresholds):
    return g.apply_gates(output, passage, g.Thresholds(**thresholds))["failed"]


def test_a_faithful_rephrasing_passes_every_gate():
    verdict = g.apply_gates(GOOD, PASSAGE)
    assert verdict["failed"] == [], verdict
    assert set(verdict["scores"]) == set(g.GATES)


def test_faithfulness_rejects_text_about_something_else():
    invented = ("The story is a classic fantasy novel about a brave young knight who travels across distant "
                "mountains to find a magical sword hidden beneath an ancient castle.")
    assert g.faithfulness(invented, PASSAGE) < 0.2
    assert failed(invented) == ["faithfulness"]


def test_entities_rejects_invented_names():
    renamed = ("Hagan asks his master Sydrism whether he should fetch the things from the inn, says the merchant "
               "has the chain, and that the wife and her sister are at dinner.")
    assert g.entities(renamed, PASSAGE) == 0.0
    assert "entities" in failed(renamed)
    assert g.entities(GOOD, PASSAGE) == 1.0          # Dromio, Centaur, Angelo, Porpentine are all in the passage


def test_novelty_rejects_a_verbatim_copy():
    assert g.novelty(PASSAGE, PASSAGE) == 0.0
    assert failed(PASSAGE) == ["novelty"]
    assert g.novelty(GOOD, PASSAGE) > 0.8


def test_length_ratio_rejects_a_stub_and_a_ramble():
    assert failed("Dromio speaks of a chain.") == ["length_ratio"]
    assert "length_ratio" in failed(GOOD * 4)


def test_repetition_rejects_an_ngram_loop():
    loop = "Dromio asks his master about the chain. " * 6
    assert g.repetition(loop) > 0.7
    assert "repetition" in failed(loop)
    assert g.repetition(GOOD) == 0.0


@pytest.mark.parametrize("opening", ["I'm happy to help with that! ", "As an AI, I can explain it. ",
                                     "Sure! Here's a summary of the passage: "])
def test_boilerplate_rejects_chat_phrases(opening):
    assert g.boilerplate(opening + GOOD) >= 1
    assert failed(opening + GOOD) == ["boilerplate"]


def test_language_rejects_text_that_is_not_english():
    french = ("Dromio demande à son maître s'il doit aller chercher ses affaires au Centaur. Angelo attend avec la "
              "chaîne au Porpentine, où la femme et sa sœur dînent.")
    assert g.language(french) < 0.1
    assert "language" in failed(french)
    assert g.language("Дромио спрашивает хозяина") == 0.0


def test_archaic_and_modern_forms_of_a_word_match():
    assert g.stem("loveth") == g.stem("loved") == g.stem("loves")
    assert g.faithfulness("He fetches the chains.", "I fetched the chain.") == 1.0


@pytest.mark.parametrize("bad", [{"min_faithfulness": 1.5}, {"max_repetition": -0.1}, {"min_language": 2},
                                 {"min_length_ratio": 3.0, "max_length_ratio": 2.0}, {"max_boilerplate": -1}])
def test_out_of_range_thresholds_are_config_errors(bad):
    option = "--" + next(iter(bad)).replace("_", "-")
    with pytest.raises(ConfigError, match=option):
        g.Thresholds(**bad)


def test_cli_help_quotes_the_real_defaults():
    """The CLI states the defaults in its help without importing this module; they must agree."""
    import io
    from contextlib import redirect_stdout

    from bitjax import cli

    buf = io.StringIO()
    with redirect_stdout(buf), pytest.raises(SystemExit):
        cli.main(["rephrase", "--help"])
    text = " ".join(buf.getvalue().split())
    for field in dataclasses.fields(g.Thresholds):
        option = "--" + field.name.replace("_", "-")
        assert option in text
        after = text.split(option, 2)[-1]
        assert f"({field.default})" in after.split("--")[0], (option, after[:120])


def test_gates_against_the_hand_labels():
    """The shipped labels (benchmarks/gate_precision.py prints the full table): every line a reader called a
    faithful rephrasing passes, and most copies and unfaithful lines are rejected."""
    from benchmarks import gate_precision

    rows = gate_precision.read_labels()
    assert len(rows) >= 60 and all(r["reason"] and r["passage"] for r in rows)
    m = gate_precision.measure(rows)
    assert m["faithful"]["kept"] == m["faithful"]["n"] > 0
    assert m["copy"]["n"] - m["copy"]["kept"] >= 0.9 * m["copy"]["n"]
    assert m["unfaithful"]["n"] - m["unfaithful"]["kept"] >= 0.75 * m["unfaithful"]["n"]
