import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Derived artifacts (the trained BPE, token arrays) are cached once per test session.
os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")   # tests compile for TPU topologies in several processes
os.environ.setdefault("BITJAX_CACHE", os.path.join(tempfile.gettempdir(), "bitjax-test-cache"))

# Shape annotations (jaxtyping) are checked at run time in tests: a wrong shape or dtype at a public
# signature of these modules fails the test that passed it. The hook must be installed before they load.
from jaxtyping import install_import_hook  # noqa: E402

with install_import_hook(["bitjax.nn.quant", "bitjax.nn.layers", "bitjax.nn.transformer", "bitjax.nn.rope",
                          "bitjax.losses"],
                         "beartype.beartype"):
    import bitjax.losses.reference  # noqa: E402, F401  (and, through it, every module of bitjax.losses)
    import bitjax.nn.transformer  # noqa: E402, F401

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")

import pytest  # noqa: E402

from tests.support import EXPORT_RUN_OVERRIDES, TINY  # noqa: E402


@pytest.fixture(scope="session")
def trained_run(tmp_path_factory):
    """Run directory of a briefly trained tiny SiLU model (about 30 s on 2 cores)."""

    from bitjax.config import apply_overrides, load_recipe
    from bitjax.training import train

    workdir = tmp_path_factory.mktemp("trained_run")
    recipe = TINY
    train(apply_overrides(load_recipe(recipe), EXPORT_RUN_OVERRIDES), workdir, progress=False)
    return workdir
