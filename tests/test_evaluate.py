from pathlib import Path

import numpy as np
import pytest

from bitjax.cli import main
from bitjax.config import apply_overrides, load_recipe
from bitjax.evaluate import heldout_perplexity
from bitjax.train import train

TINY = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny.py")


def test_eval_reports_the_trainers_heldout_loss(tmp_path, capsys):
    cfg = apply_overrides(load_recipe(TINY), ["model.n_layers=1", "data.seq_len=32", "data.batch_size=4",
                                              "steps=6", "eval_every=6", "eval_batches=3"])
    summary = train(cfg, tmp_path, progress=False)
    report = heldout_perplexity(tmp_path, n_batches=3)
    assert report["step"] == 6 and report["heldout_batches"] == 3
    np.testing.assert_allclose(report["heldout_loss"], summary["heldout_loss"], rtol=1e-5)
    np.testing.assert_allclose(report["heldout_perplexity"], np.exp(report["heldout_loss"]), rtol=1e-6)
    assert main(["eval", str(tmp_path), "--batches", "2"]) == 0
    assert "heldout_perplexity" in capsys.readouterr().out


def test_eval_of_a_directory_without_a_run(tmp_path, capsys):
    assert main(["eval", str(tmp_path)]) == 2
    err = capsys.readouterr().err.strip()
    assert "not a bitjax run directory" in err and len(err.splitlines()) == 1
