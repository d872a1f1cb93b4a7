"""Host memory of loading a trained run: parameters only (bitjax.run) against the whole train state, and a GGUF export.

Writes a bitnet_125m-shaped checkpoint (random initial weights, the trainer's own state and layout), then in
fresh processes measures the peak resident memory above the process's baseline (Python, JAX and bitjax
imported) of: restoring the parameters with `Run`; restoring the whole TrainState (parameters and AdamW's
two moments) as loading did before `Run`; and a full `bitjax export --format packed` (the format a relu2
model like bitnet_125m exports to).

    python -m benchmarks.run_memory [--preset bitnet_125m] [--out runs/run_memory]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

# Each measurement runs in its own process: `python -m benchmarks.run_memory --measure WHAT RUN_DIR`.
MEASURES = ("params", "train_state", "export")


def _rss_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmRSS in /proc/self/status")


def _peak_bytes() -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise RuntimeError("no VmHWM in /proc/self/status")


def _reset_peak() -> None:
    """Let VmHWM restart from the current RSS (Linux: writing 5 to clear_refs), so imports are not counted."""
    Path("/proc/self/clear_refs").write_text("5")


def measure(what: str, run_dir: Path) -> dict:
    import jax

    from bitjax.cli import main
    from bitjax.run import Run, load_run_config
    from bitjax.training.checkpointer import Checkpointer
    from bitjax.training.trainer import Trainer

    jax.devices()
    baseline = _rss_bytes()
    _reset_peak()
    if what == "params":
        jax.block_until_ready(Run(run_dir).params)
    elif what == "train_state":
        cfg = load_run_config(run_dir)
        trainer = Trainer.create(cfg)
        ckpt = Checkpointer(run_dir / "checkpoints", cfg)
        jax.block_until_ready(ckpt.restore_state(ckpt.latest_step(), trainer.abstract_state()))
        ckpt.close()
    else:
        out = run_dir.parent / "packed"
        assert main(["export", str(run_dir), str(out), "--format", "packed", "--force"]) == 0
    return {"what": what, "baseline_bytes": baseline, "peak_above_baseline_bytes": _peak_bytes() - baseline}


def write_checkpoint(preset: str, run_dir: Path) -> int:
    """A run directory holding step 0 of a fresh `preset` model; returns the parameters' bytes."""
    import jax
    import orbax.checkpoint as ocp

    from bitjax import tokenizer as tokenizer_lib
    from bitjax.config import load_recipe
    from bitjax.nn.model_config import ModelConfig
    from bitjax.paths import cache_dir
    from bitjax.training.checkpointer import dump_meta, meta_for
    from bitjax.training.trainer import Trainer

    cfg = load_recipe(ROOT / "recipes" / "tiny.py")
    model = getattr(ModelConfig, preset)(vocab_size=49152)
    cfg = dataclasses.replace(cfg, name=preset, model=model,
                              data=dataclasses.replace(cfg.data, tokenizer="smollm2", batch_size=1))
    tok_path = tokenizer_lib.resolve("smollm2", 0, lambda: iter(()), cache_dir(), "")
    state = Trainer.create(cfg).init_state()
    shutil.rmtree(run_dir, ignore_errors=True)
    run_dir.mkdir(parents=True)
    shutil.copyfile(tok_path, run_dir / "tokenizer.json")
    meta = meta_for(cfg, tokenizer_lib.fingerprint(tokenizer_lib.load(tok_path)))
    (run_dir / "config.json").write_text(dump_meta(meta))
    with ocp.CheckpointManager((run_dir / "checkpoints").absolute()) as manager:
        manager.save(0, args=ocp.args.Composite(state=ocp.args.StandardSave(state), meta=ocp.args.JsonSave(meta)))
        manager.wait_until_finished()
    return sum(x.nbytes for x in jax.tree.leaves(state.params))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="bitnet_125m", help="a ModelConfig preset")
    parser.add_argument("--out", default="runs/run_memory")
    parser.add_argument("--measure", choices=MEASURES, help=argparse.SUPPRESS)
    parser.add_argument("run_dir", nargs="?", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print("MEASURED " + json.dumps(measure(args.measure, Path(args.run_dir))))
        return

    run_dir = Path(args.out) / "run"
    param_bytes = write_checkpoint(args.preset, run_dir)
    print(f"{args.preset}: parameters {param_bytes / 2**20:.1f} MiB (float32); train state with AdamW's "
          f"two moments {3 * param_bytes / 2**20:.1f} MiB")
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT))
    for what in MEASURES:
        out = subprocess.run([sys.executable, "-m", "benchmarks.run_memory", "--measure", what, str(run_dir)],
                             env=env, cwd=ROOT, capture_output=True, text=True, check=True)
        result = json.loads(next(x for x in out.stdout.splitlines() if x.startswith("MEASURED "))[9:])
        peak = result["peak_above_baseline_bytes"]
        print(f"  {what:<12} peak host memory above baseline {peak / 2**20:8.1f} MiB = "
              f"{peak / param_bytes:.2f} x parameters (baseline {result['baseline_bytes'] / 2**20:.0f} MiB)")


if __name__ == "__main__":
    main()
