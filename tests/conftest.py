import os
import tempfile

os.environ.setdefault("JAX_PLATFORMS", "cpu")
# Derived artifacts (the trained BPE, token arrays) are cached once per test session.
os.environ.setdefault("BITJAX_CACHE", os.path.join(tempfile.gettempdir(), "bitjax-test-cache"))

import jax  # noqa: E402

jax.config.update("jax_numpy_rank_promotion", "raise")
