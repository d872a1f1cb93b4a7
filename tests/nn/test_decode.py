"""Decoding with the key/value cache: greedy equals re-running the whole sequence, batches equal the sequential
path, sampled rows follow their own seeds, and rows split over 8 devices decode as on one."""


import json
import os
import subprocess
import sys

import jax
import numpy as np

from bitjax.config import apply_overrides, load_recipe
from bitjax.nn.decode import Sampling, argmax_ids, generate, greedy_generate
from bitjax.training.trainer import Trainer
from tests.support import ROOT, TINY


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


def _tiny(layers=1):
    trainer = Trainer.create(apply_overrides(load_recipe(TINY), [f"model.n_layers={layers}"]))
    return trainer, trainer.init_state().params


def test_batches_of_one_shape_equal_the_sequential_path():
    """`generate` (fixed batches, the last padded) gives each prompt what decoding it alone gives."""
    trainer, params = _tiny()
    rng = np.random.default_rng(1)
    prompts = [rng.integers(1, 2000, n).astype(np.int32) for n in (3, 9, 5, 7, 4)]
    batched = generate(trainer.model, params, prompts, max_new_tokens=6, stop_ids=set(), batch_size=2)
    for prompt, out in zip(prompts, batched):
        alone = greedy_generate(trainer.model, params, [prompt], max_new_tokens=6, stop_ids=set())[0]
        assert out.tolist() == alone.tolist()


def test_a_sampled_row_depends_on_its_seed_not_on_its_neighbours():
    trainer, params = _tiny()
    rng = np.random.default_rng(2)
    prompts = [rng.integers(1, 2000, 6).astype(np.int32) for _ in range(4)]
    hot = Sampling(temperature=1.5)
    together = generate(trainer.model, params, prompts, max_new_tokens=8, stop_ids=set(), sampling=hot,
                        seeds=[10, 11, 12, 13], batch_size=4)
    alone = generate(trainer.model, params, prompts[2:3], max_new_tokens=8, stop_ids=set(), sampling=hot, seeds=[12])
    assert together[2].tolist() == alone[0].tolist()
    other_seed = generate(trainer.model, params, prompts[2:3], max_new_tokens=8, stop_ids=set(), sampling=hot,
                          seeds=[99])
    assert other_seed[0].tolist() != alone[0].tolist()


def test_top_p_keeps_only_the_most_likely_token_at_a_tiny_mass():
    trainer, params = _tiny()
    prompts = [np.random.default_rng(3).integers(1, 2000, 6).astype(np.int32)]
    greedy = generate(trainer.model, params, prompts, max_new_tokens=8, stop_ids=set())
    nucleus = generate(trainer.model, params, prompts, max_new_tokens=8, stop_ids=set(),
                       sampling=Sampling(temperature=1.0, top_p=1e-6), seeds=[5])
    assert nucleus[0].tolist() == greedy[0].tolist()


def test_rows_split_over_eight_devices_decode_as_on_one():
    """Greedy and sampled continuations with the parameters split over 8 simulated devices (fsdp) and the rows
    split over the batch axes equal those on one device."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run([sys.executable, "-m", "tests.support.decode_devices"], env=env, cwd=ROOT,
                         capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-3000:]
    result = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("{")))
    assert result["devices"] == 8
    assert result["sharded"] == result["single"]


def test_one_sampling_setting_is_one_select_function_so_the_step_compiles_once():
    """The jitted step is cached by its `select`: a fresh closure per call would recompile it for every batch."""
    assert Sampling(1.0, 0.9).select() is Sampling(1.0, 0.9).select()
    assert Sampling(1.0, 0.9).select() is not Sampling(0.7, 0.9).select()
    assert Sampling(0.0).select() is argmax_ids
