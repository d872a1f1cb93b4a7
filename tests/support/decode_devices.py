"""Decode a tiny model with its parameters on one device and split over all devices; print both as JSON.

Run by tests/nn/test_decode.py with XLA_FLAGS faking 8 CPU devices:  python -m tests.support.decode_devices
"""

import json

import jax
import numpy as np

from bitjax.config import apply_overrides, load_recipe
from bitjax.nn.decode import Sampling, generate
from bitjax.training import Trainer
from tests.support import TINY


def main():
    cfg = apply_overrides(load_recipe(TINY), ["model.n_layers=2", "mesh.data=1", "mesh.fsdp=-1"])
    trainer = Trainer.create(cfg)
    sharded_params = trainer.init_state().params
    single_params = jax.device_put(jax.device_get(sharded_params), jax.devices()[0])
    rng = np.random.default_rng(0)
    prompts = [rng.integers(1, 2000, n).astype(np.int32) for n in (4, 7, 5, 6, 3)]
    out = {"devices": jax.device_count()}
    for name, params, mesh in (("single", single_params, None), ("sharded", sharded_params, trainer.mesh)):
        runs = [generate(trainer.model, params, prompts, max_new_tokens=6, stop_ids=set(), sampling=sampling,
                         seeds=[1, 2, 3, 4, 5], batch_size=8, mesh=mesh)
                for sampling in (Sampling(), Sampling(temperature=1.0, top_p=0.9))]
        out[name] = [[o.tolist() for o in run] for run in runs]
    print(json.dumps(out))


if __name__ == "__main__":
    main()
