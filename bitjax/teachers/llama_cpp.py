"""Loading models in llama.cpp (llama-cpp-python) the way bitjax needs on CPUs."""

from __future__ import annotations

import contextlib


@contextlib.contextmanager
def plain_cpu_buffers():
    """Load llama.cpp models without its extra CPU buffer types (AMX tiles, repacked weights).

    With llama-cpp-python 0.3.36 on AMX-capable Xeons, decoding a Q4_1 model with those buffers segfaults;
    the plain CPU buffers work and, for models this small, cost little. The Python API has no switch for
    `use_extra_bufts`, so the default model parameters are patched while a model loads.
    """
    import llama_cpp.llama_cpp as low

    original = low.llama_model_default_params

    def params():
        p = original()
        p.use_extra_bufts = False
        return p

    low.llama_model_default_params = params
    try:
        yield
    finally:
        low.llama_model_default_params = original
