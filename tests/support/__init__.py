"""What many tests share: the repository's paths, random models, the mesh-loss runner, test recipes."""

from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RECIPES = ROOT / "recipes"
TINY = str(RECIPES / "tiny.py")          # a string: it goes into argv lists as often as into load_recipe
KD_TINY = str(Path(__file__).resolve().parent / "recipes" / "kd_tiny.py")

# A small variant of recipes/tiny.py (see tests/training/test_train.py FAST), trained once per session for the
# export tests (conftest's `trained_run`).
EXPORT_RUN_OVERRIDES = ["model.n_layers=2", "data.seq_len=64", "data.batch_size=8", "log_every=10",
                        "eval_every=1000", "eval_batches=1", "optim.warmup_steps=5", "steps=60"]

# A one-layer tiny run saving every step synchronously: the checkpoint tests' run of `steps` steps.
SAVE_EVERY_STEP_OVERRIDES = ["model.n_layers=1", "data.seq_len=32", "data.batch_size=2", "checkpoint.every=1",
                             "checkpoint.async_save=false", "log_every=100", "eval_batches=1", "eval_every=1000"]
