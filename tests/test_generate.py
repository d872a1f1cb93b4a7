"""Greedy decoding with the key/value cache equals decoding by re-running the whole sequence."""

from pathlib import Path

import jax
import numpy as np

from bitjax.config import apply_overrides, load_recipe
from bitjax.generate import greedy_generate
from bitjax.train import Trainer

TINY = str(Path(__file__).resolve().parents[1] / "recipes" / "tiny.py")


def test_cached_greedy_decoding_equals_full_recomputation():
    trainer = Trainer.create(apply_overrides(load_recipe(TINY), ["model.n_layers=2"]))
    params = trainer.init_state().params
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 2000, n).astype(np.int32) for n in (5, 11, 2)]   # left-padded to 11
    outs = greedy_generate(trainer.model, params, prompts, max_new_tokens=6, stop_ids=set())
    forward = jax.jit(lambda p, t: trainer.model(p)(t))
    for prompt, out in zip(prompts, outs):
        seq = list(prompt)
        for _ in range(6):
            seq.append(int(np.argmax(np.asarray(forward(params, np.asarray([seq], np.int32)))[0, -1])))
        assert out.tolist() == seq[len(prompt):]


def test_generation_stops_at_a_stop_id():
    trainer = Trainer.create(apply_overrides(load_recipe(TINY), ["model.n_layers=1"]))
    params = trainer.init_state().params
    prompt = [np.arange(1, 6, dtype=np.int32)]
    full = greedy_generate(trainer.model, params, prompt, max_new_tokens=5, stop_ids=set())[0]
    stop = int(full[1])
    cut = greedy_generate(trainer.model, params, prompt, max_new_tokens=5, stop_ids={stop})[0]
    assert cut.tolist() == full[:full.tolist().index(stop) + 1].tolist()
