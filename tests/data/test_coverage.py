"""The coverage table: positions each source gives the run against what it holds, and a cache's cost."""

import dataclasses

import pytest

from bitjax import cli
from bitjax.config import apply_overrides, load_recipe
from bitjax.data import build_pipeline, coverage
from tests.support import KD_TINY, ROOT


def test_drawn_held_and_epochs_of_the_tiny_recipe():
    cfg = apply_overrides(load_recipe(ROOT / "recipes" / "tiny.py"), ["steps=1000"])
    pipeline = build_pipeline(cfg.data, vocab_size=cfg.model.vocab_size)
    rows = {r.name: r for r in coverage.coverage(cfg, pipeline)}
    positions = 1000 * cfg.data.batch_size * cfg.data.seq_len
    assert sum(r.drawn for r in rows.values()) == positions
    for name, r in rows.items():
        assert r.drawn == round(pipeline.weights[name] * positions)
        assert r.held == pipeline.sources[name].train.n_tokens          # the training split's tokens
        assert r.epochs == r.drawn / r.held and r.cache_bytes == 0


def test_a_distilling_source_holds_its_planned_cache_and_the_2b4t_recipe_reads_it_once(capsys):
    """No tokenizer for the 2b4t recipe here: the table comes from the config, each KD source holding its share
    of distill.cache_examples sequences (split by weight, as `bitjax cache-teacher` writes them). The recipe
    reads each cache once and goes on with the text under CE; its text's size is unknown here."""
    assert cli.main(["plan", str(ROOT / "recipes" / "bitnet_2b4t.py"), "--teacher-tokens-per-s", "20000"]) == 0
    out = capsys.readouterr().out
    cfg = load_recipe(ROOT / "recipes" / "bitnet_2b4t.py")
    held = round(cfg.distill.cache_examples * 0.4) * cfg.data.seq_len      # the rephrased source's share
    drawn = cfg.steps * cfg.data.batch_size * cfg.data.seq_len * 0.4
    row = next(line for line in out.splitlines() if line.strip().startswith("rephrased") and "kd" in line)
    assert f"{held:,}" in row and row.split()[5] == "1.00"                    # the cache is read once
    plan = next(line for line in out.splitlines() if line.strip().startswith("rephrased") and " ce " in line)
    assert f"cache once, then {(drawn - held) / 1e9:.2f}B positions of its text under CE (rephrased.ce rows" in plan
    assert "read more than once" not in out
    k = cfg.distill.k        # int32 ids over 65,536 tokens, fp16 log-probs; a float32 tail; 5 int32 row fields
    assert coverage.cache_bytes_per_position(k, 128256) == k * (4 + 2) + 4 + 20
    assert coverage.cache_bytes_per_position(k, 49152) == k * (2 + 2) + 4 + 20


def _kd_tiny(choice: str, *extra):
    cfg = apply_overrides(load_recipe(KD_TINY), ["steps=2000", *extra])
    sources = tuple(dataclasses.replace(s, on_cache_exhausted=choice) for s in cfg.data.sources)
    return dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=sources))


@pytest.mark.parametrize("choice", ["repeat", "ce"])
def test_each_kd_source_states_what_the_run_does_past_its_cache(choice):
    """With the data readable: "repeat" reads the cache drawn / held times; "ce" reads it once, then
    (drawn - held) / text positions of the source's text under CE."""
    cfg = _kd_tiny(choice)
    pipeline = build_pipeline(cfg.data, vocab_size=cfg.model.vocab_size)
    rows = {r.name: r for r in coverage.coverage(cfg, pipeline)}
    text = "\n".join(coverage.render(list(rows.values()), cfg.steps, cfg.data.on_exhausted).splitlines())
    shares = coverage.cache_examples_per_source(cfg, cfg.distill.cache_examples)
    for name, r in rows.items():
        held = shares[name] * cfg.data.seq_len
        assert r.held == held and r.on_cache_exhausted == choice and not r.cache_written
        assert r.text_held == pipeline.sources[name].train.n_tokens
        line = next(x for x in text.splitlines() if x.split()[:2] == [name, choice])
        if choice == "repeat":
            assert f"cache read {r.drawn / held:,.2f} times" in line
        else:
            assert f"cache once, then {(r.drawn - held) / r.text_held:,.2f} epochs of its text under CE" in line
            assert r.epochs == 1.0
    # natural: 1.8M tokens of text, drawn 0.6 x 2000 x 8 x 128 = 1.2M positions: read less than once under "ce"
    assert ("natural" in text.splitlines()[-1]) == (choice == "repeat")


def test_the_plan_says_when_the_run_stops_instead():
    cfg = _kd_tiny("repeat", "data.on_exhausted=error")
    line = next(x for x in coverage.render(coverage.coverage(cfg), cfg.steps, "error").splitlines()
                if x.split()[:2] == ["natural", "repeat"])
    assert "cache once, then the run stops (data.on_exhausted=error)" in line
