"""What starting from a pretrained model buys: SmolLM2-135M-shaped ternary students at equal tokens.

    (a) random   random init, KD from the teacher (a from-scratch learning rate)
    (b) converted  init_from the embedded SmolLM2-135M-Instruct GGUF, quantization ramped in over the first third
                 of the steps, KD from the same model (recipes/smollm2_ternary.py)

Both distil online (the teacher runs in the train step, bitjax.online_teacher) on the same natural Shakespeare
stream, with two seeds each. Held-out nats/token (the run's held-out split, fully quantized student) of each
arm and of the teacher itself; "gap closed" is (a - b) / (a - teacher). The attention-relation loss arm of
BitDistill is not built.

    python -m benchmarks.pretrained_init [--steps 40] [--seq-len 128] [--batch-size 2] [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import jax
import jax.numpy as jnp

from bitjax import data as data_lib
from bitjax import losses, online_teacher
from bitjax.config_io import apply_overrides, load_recipe
from bitjax.train import Trainer, train

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "smollm2_ternary.py"


def arm_overrides(arm: str, steps: int) -> list[str]:
    if arm == "random":
        return ["init_from=", "quant_warmup_steps=0", "optim.peak_lr=1e-3", "optim.stage2_peak_lr=5e-4"]
    return [f"quant_warmup_steps={max(steps // 3, 1)}"]


def teacher_heldout(cfg) -> float:
    """The teacher's own held-out nats/token on the batches the students are scored on."""
    trainer = Trainer.create(cfg)
    teacher = online_teacher.load(cfg.distill.teacher, cfg.model, trainer.mesh)
    pipeline = data_lib.build_pipeline(cfg.data, vocab_size=cfg.model.vocab_size)

    @jax.jit
    def summed(params, batch):
        logits_BLV = teacher.model(params)(batch["inputs"], batch["segment_ids"], batch["positions"])
        return losses.summed_cross_entropy(logits_BLV, batch["targets"], batch["loss_mask"])

    total, count = 0.0, 0.0
    for batch in pipeline.heldout_batches(cfg.eval_batches):
        s, n = summed(teacher.params, {k: jnp.asarray(v) for k, v in batch.items()})
        total, count = total + float(s), count + float(n)
    return total / count


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--eval-batches", type=int, default=4)
    ap.add_argument("--seeds", default="0,1")
    args = ap.parse_args()

    common = [f"steps={args.steps}", f"data.seq_len={args.seq_len}", f"data.batch_size={args.batch_size}",
              f"eval_batches={args.eval_batches}", f"eval_every={args.steps}", f"log_every={args.steps}",
              "distill.online=true", "distill.k=32", f"loss_chunk={args.seq_len}",
              f"checkpoint.every={args.steps}", "optim.warmup_steps=5"]
    base = apply_overrides(load_recipe(RECIPE), common)
    teacher = teacher_heldout(base)
    results: dict[str, list[float]] = {"random": [], "converted": []}
    seconds: dict[str, list[float]] = {"random": [], "converted": []}
    with tempfile.TemporaryDirectory() as tmp:
        for seed in [int(s) for s in args.seeds.split(",")]:
            for arm in results:
                cfg = apply_overrides(base, arm_overrides(arm, args.steps) + [f"seed={seed}"])
                t0 = time.perf_counter()
                summary = train(cfg, Path(tmp) / f"{arm}-{seed}", progress=False)
                seconds[arm].append((time.perf_counter() - t0) / args.steps)
                results[arm].append(summary["heldout_loss"])
                print(f"  {arm:<10} seed {seed}: held-out {summary['heldout_loss']:.3f} nats/token", flush=True)
    print(f"SmolLM2-135M-shaped ternary students, {args.steps} steps x {args.batch_size} x {args.seq_len} tokens, "
          f"online KD from gguf:smollm2 (k=32); held-out nats/token")
    print(f"  teacher (full precision)      {teacher:.3f}")
    for arm, values in results.items():
        print(f"  {arm:<10} seeds {args.seeds}: {', '.join(f'{v:.3f}' for v in values)} "
              f"(mean {statistics.mean(values):.3f}; {statistics.mean(seconds[arm]):.1f} s/step incl. compile)")
    a, b = statistics.mean(results["random"]), statistics.mean(results["converted"])
    print(f"  gap closed by converting: (a - b) / (a - teacher) = {(a - b) / (a - teacher):.1%}")


if __name__ == "__main__":
    main()
