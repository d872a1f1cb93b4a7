import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Derived artifacts (the trained BPE, token arrays) are cached once per test session.
os.environ.setdefault("BITJAX_CACHE", os.path.join(tempfile.gettempdir(), "bitjax-test-cache"))

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

import pytest  # noqa: E402

# A small variant of recipes/tiny.py (see tests/test_train.py FAST), trained once per session for the export tests.
EXPORT_RUN_OVERRIDES = ["model.n_layers=2", "data.seq_len=64", "data.batch_size=8", "log_every=10",
                        "eval_every=1000", "eval_batches=1", "optim.warmup_steps=5", "steps=60"]


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """Run directory of a briefly trained tiny SiLU model (about 30 s on 2 cores)."""
    from pathlib import Path

    from bitjax.config import apply_overrides, load_recipe
    from bitjax.train import train

    workdir = tmp_path_factory.mktemp("trained_run")
    recipe = Path(__file__).resolve().parents[1] / "recipes" / "tiny.py"
    train(apply_overrides(load_recipe(recipe), EXPORT_RUN_OVERRIDES), workdir, progress=False)
    return workdir
