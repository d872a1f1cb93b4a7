"""What FSDP moves to bring the BitLinear weights to the matmul: the step compiled with the codes packed four to a
byte (the trainer's gather plans, bitjax.nn.ternary_gather) and without (no plan: the int8 codes as they lie,
as before packing), and its collectives read from the compiled HLO (bitjax.fit_check.collectives).

    python -m benchmarks.code_gathers --recipe recipes/bitnet_700m.py --topology v5p-64      # a TPU slice (libtpu)
    XLA_FLAGS=--xla_force_host_platform_device_count=8 python -m benchmarks.code_gathers \\
        --recipe recipes/tiny.py --set mesh.data=1 --set mesh.fsdp=8 ...                     # this CPU's devices

Per variant and step, per device: the bytes of every collective by kind and dtype (array and on the wire), and
the weight codes' share (s8 / u8 all-gathers and the ring exchanges a TPU compiler splits them into). `--json`
prints one line with every collective (tests/fit_check/test_collectives.py reads it).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os

os.environ.setdefault("ALLOW_MULTIPLE_LIBTPU_LOAD", "1")

import jax  # noqa: E402

from bitjax import sharding  # noqa: E402
from bitjax.config import apply_overrides, load_recipe, recipe_presets  # noqa: E402
from bitjax.fit_check import check, collectives  # noqa: E402
from bitjax.training.trainer import Trainer  # noqa: E402

PLANNED = sharding.code_gather_plan


def compiled_text(cfg, topology: str | None) -> tuple[str, int]:
    """The step's optimised HLO and its device count: for a TPU slice, or on the local devices."""
    if topology:
        lowered, mesh = check.lower_step(cfg, check.topology(topology))
        return lowered.compile().as_text(), mesh.size
    trainer = Trainer.create(cfg)
    batch_sharding = sharding.batch_sharding(trainer.mesh)
    batch = {name: jax.ShapeDtypeStruct(shape, dtype, sharding=batch_sharding)
             for name, (shape, dtype) in trainer.batch_shapes().items()}
    return trainer.jit_train_step().lower(trainer.abstract_state(), batch).compile().as_text(), trainer.mesh.size


def variants(cfg, topology: str | None) -> dict:
    out = {}
    for name, plan in (("packed", PLANNED), ("unpacked", lambda path, shape, mesh: None)):
        sharding.code_gather_plan = plan   # the trainer asks the sharding module for plans when it traces
        text, devices = compiled_text(cfg, topology)
        out[name] = collectives.traffic(text, devices)
        out["devices"] = devices
    sharding.code_gather_plan = PLANNED
    return out


def codes_bytes(traffic: collectives.Traffic) -> tuple[float, float]:
    """(array, wire) bytes per step of the weight codes: int8 or uint8 all-gathers and ring exchanges."""
    found = [c for c in traffic.collectives if c.dtype in ("s8", "u8")
             and c.kind in ("all-gather", "collective-permute")]
    return sum(c.array_bytes * c.runs for c in found), sum(c.wire_bytes for c in found)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--recipe", required=True)
    ap.add_argument("--topology", default=None, help="a TPU slice (fit-check's names); default: local devices")
    ap.add_argument("--set", dest="overrides", action="append", default=[])
    ap.add_argument("--json", action="store_true", help="print one JSON line with every collective")
    args = ap.parse_args()
    if args.topology:
        check.pin_cpu_platform()
    preset = args.topology if args.topology in recipe_presets(args.recipe) else None
    cfg = apply_overrides(load_recipe(args.recipe, preset), args.overrides)
    result = variants(cfg, args.topology)
    if args.json:
        print("COLLECTIVES " + json.dumps({"devices": result["devices"]} | {
            name: {"unknown_trip_counts": t.unknown_trip_counts,
                   "collectives": [dataclasses.asdict(c) | {"wire_bytes": c.wire_bytes} for c in t.collectives]}
            for name, t in result.items() if name != "devices"}))
        return
    where = args.topology or f"{result['devices']} local devices"
    print(f"{args.recipe} on {where} (preset {preset}); per device and step:")
    for name in ("unpacked", "packed"):
        t = result[name]
        array, wire = codes_bytes(t)
        print(f"  {name:<9} weight codes {array / 1e9:.3f} GB gathered ({wire / 1e9:.3f} GB on the wire); "
              f"all collectives {t.wire_bytes / 1e9:.3f} GB on the wire: {t.describe()}")
    before, after = codes_bytes(result["unpacked"])[0], codes_bytes(result["packed"])[0]
    print(f"  packed / unpacked weight codes gathered: {after / before:.3f}" if before else "  no codes gathered")


if __name__ == "__main__":
    main()
