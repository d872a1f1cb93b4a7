"""Train the fast tiny config on several meshes in one process and print the per-step losses as JSON.

Run by tests/test_sharding.py in a subprocess whose XLA_FLAGS fake several CPU devices:
    python -m tests.support.mesh_losses WORKDIR 8,1,1 2,2,2 1,1,1 -- key=value ...
"""

import json
import sys
from pathlib import Path

import jax

from bitjax.config import apply_overrides, load_recipe
from bitjax.run.metrics import loss_series, read_history
from bitjax.training import train
from tests.support import TINY


def main(argv):
    workdir, rest = Path(argv[0]), argv[1:]
    meshes = rest[:rest.index("--")] if "--" in rest else rest
    overrides = rest[rest.index("--") + 1:] if "--" in rest else []
    losses = {}
    for mesh in meshes:
        data, fsdp, tensor = mesh.split(",")
        # Meshes smaller than the machine use its first devices.
        devices = jax.devices()[: int(data) * int(fsdp) * int(tensor)]
        cfg = apply_overrides(load_recipe(TINY), overrides + [
            f"mesh.data={data}", f"mesh.fsdp={fsdp}", f"mesh.tensor={tensor}"])
        run_dir = workdir / mesh.replace(",", "x")
        train(cfg, run_dir, progress=False, devices=devices)
        losses[mesh] = loss_series(read_history(run_dir / "metrics.jsonl"), "loss")[1]
    print("LOSSES " + json.dumps({"devices": jax.device_count(), "losses": losses}))


if __name__ == "__main__":
    main(sys.argv[1:])
