"""Greedy decoding with the key/value cache equals decoding by re-running the whole sequence."""


import jax
import numpy as np

from bitjax.config import apply_overrides, load_recipe
from bitjax.nn.decode import greedy_generate
from bitjax.training.trainer import Trainer
from tests.support import TINY


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


def test_generation_stops_at_a_stop_id_mid_sequence():
    """A stop id first produced at the third or a later step ends that row right after it (the stop id
    kept, nothing after), while another row in the batch that never meets it runs to max_new_tokens."""
    trainer = Trainer.create(apply_overrides(load_recipe(TINY), ["model.n_layers=1"]))
    params = trainer.init_state().params
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 2000, 6).astype(np.int32) for _ in range(8)]
    full = greedy_generate(trainer.model, params, prompts, max_new_tokens=8, stop_ids=set())
    chosen = None
    for b, row in enumerate(full):
        seq = row.tolist()
        for t in range(2, 7):
            if seq[t] not in seq[:t] and any(seq[t] not in o.tolist() for o in full):
                chosen = (b, t, seq[t])
                break
        if chosen:
            break
    assert chosen is not None, "no row makes a token first at step >= 3; pick other prompts"
    b, t, stop = chosen
    other = next(i for i, o in enumerate(full) if stop not in o.tolist())
    cut = greedy_generate(trainer.model, params, [prompts[b], prompts[other]], max_new_tokens=8, stop_ids={stop})
    assert cut[0].tolist() == full[b][:t + 1].tolist()
    assert len(cut[0]) == t + 1 >= 3
    assert cut[1].tolist() == full[other].tolist() and len(cut[1]) == 8
