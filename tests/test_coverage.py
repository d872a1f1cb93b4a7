"""The coverage table: positions each source gives the run against what it holds, and a cache's cost."""

from pathlib import Path

from bitjax import cli
from bitjax.config_io import apply_overrides, load_recipe
from bitjax.data import build_pipeline, coverage

ROOT = Path(__file__).resolve().parents[1]


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


def test_a_distilling_source_holds_its_planned_cache_and_the_2b4t_recipe_reads_it_many_times(capsys):
    """No tokenizer for the 2b4t recipe here: the table comes from the config, each KD source holding
    distill.cache_examples sequences, read many times over the run (the cost nobody saw before)."""
    assert cli.main(["plan", str(ROOT / "recipes" / "bitnet_2b4t.py"), "--teacher-tokens-per-s", "20000"]) == 0
    out = capsys.readouterr().out
    cfg = load_recipe(ROOT / "recipes" / "bitnet_2b4t.py")
    held = cfg.distill.cache_examples * cfg.data.seq_len
    drawn = cfg.steps * cfg.data.batch_size * cfg.data.seq_len * 0.4      # the rephrased source's weight
    row = next(line for line in out.splitlines() if line.strip().startswith("rephrased"))
    assert f"{held:,}" in row and f"{drawn / held:.2f}" in row
    k = cfg.distill.k        # int32 ids over 65,536 tokens, fp16 log-probs; a float32 tail; 5 int32 row fields
    assert coverage.cache_bytes_per_position(k, 128256) == k * (4 + 2) + 4 + 20
    assert coverage.cache_bytes_per_position(k, 49152) == k * (2 + 2) + 4 + 20
    assert "read more than once: " in out and "rephrased" in out.splitlines()[-1]
