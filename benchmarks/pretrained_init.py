"""What starting from a pretrained model buys: SmolLM2-135M-shaped ternary students at equal tokens.

    (a) random     random init, KD from the teacher (a from-scratch learning rate)
    (b) converted  init_from the embedded SmolLM2-135M-Instruct GGUF (SubLN inserted), quantization ramped in
                   over the first third of the steps, KD from the same model (recipes/smollm2_ternary.py)
    (c) relation   (b) plus BitDistill's attention-relation loss on the last block (distill.relation_weight)
    (d) no_subln   (b) without SubLN: the student keeps the source's architecture (model.sub_norms=false), so
                   at lambda 0 it is the source exactly, and it exports in that architecture (llama), not bitnet

Every arm distils online (the teacher runs in the train step, bitjax.teachers.online) on the same natural
Shakespeare stream, for each seed of `--seeds` (a seed sets the init and the data order). Printed: held-out
nats/token (the run's held-out split, fully quantized student) of each arm and of the teacher itself, "gap
closed" = (a - x) / (a - teacher), and the seconds per step after the first (compile excluded; the teacher's
forward included). (a) trains at a from-scratch peak learning rate, 1e-3; (b) and (c) at the recipe's (also
1e-3) unless `--converted-lr` sets theirs.

    python -m benchmarks.pretrained_init [--steps 40] [--seq-len 128] [--batch-size 2] [--seeds 0,1]
                                         [--converted-lr LR] [--keep DIR]
    python -m benchmarks.pretrained_init --smoke     # the plumbing on a 2-layer random Llama of SmolLM2's
                                                     # vocabulary instead of SmolLM2 (tests/benchmarks/test_scripts.py)
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

import jax
import jax.numpy as jnp

from bitjax import data as data_lib
from bitjax.config import apply_overrides, load_recipe
from bitjax.losses import reference
from bitjax.run.metrics import read_history
from bitjax.teachers import online as online_teacher
from bitjax.training import Trainer, train

ROOT = Path(__file__).resolve().parent.parent
RECIPE = ROOT / "recipes" / "smollm2_ternary.py"
ARMS = {
    "random": "(a) random init + KD",
    "converted": "(b) converted + KD",
    "relation": "(c) converted + KD + relation",
    "no_subln": "(d) converted + KD, no SubLN",
}


RANDOM_LR = 1e-3   # a from-scratch peak learning rate; the converted arms use the recipe's unless --converted-lr


def _lr(peak: float) -> list[str]:
    return [f"optim.peak_lr={peak}", f"optim.stage2_peak_lr={peak / 2}"]


def arm_overrides(arm: str, steps: int, relation_weight: float, converted_lr: float | None) -> list[str]:
    if arm == "random":
        return ["init_from=", "quant_warmup_steps=0", *_lr(RANDOM_LR)]
    ramp = [f"quant_warmup_steps={max(steps // 3, 1)}"] + (_lr(converted_lr) if converted_lr else [])
    if arm == "no_subln":
        ramp.append("model.sub_norms=false")
    return ramp + ([f"distill.relation_weight={relation_weight}"] if arm == "relation" else [])


def teacher_heldout(cfg) -> float:
    """The teacher's own held-out nats/token on the batches the students are scored on."""
    trainer = Trainer.create(cfg)
    teacher = online_teacher.load(cfg.distill.teacher, cfg.model, trainer.mesh)
    pipeline = data_lib.build_pipeline(cfg.data, vocab_size=cfg.model.vocab_size)

    @jax.jit
    def summed(params, batch):
        logits_BLV = teacher.model(params)(batch["inputs"], batch["segment_ids"], batch["positions"])
        return reference.summed_cross_entropy(logits_BLV, batch["targets"], batch["loss_mask"])

    total, count = 0.0, 0.0
    for batch in pipeline.heldout_batches(cfg.eval_batches):
        s, n = summed(teacher.params, {k: jnp.asarray(v) for k, v in batch.items()})
        total, count = total + float(s), count + float(n)
    return total / count


def last_train_record(workdir: Path) -> dict:
    """The last logged training scalars; their throughput covers the steps after the first (the compile)."""
    return [r for r in read_history(workdir / "metrics.jsonl") if "tokens_per_sec" in r][-1]


def smoke_source(directory: Path) -> list[str]:
    """A 2-layer random Llama with SmolLM2's vocabulary written by transformers, standing in for SmolLM2 as the
    init_from source and the teacher, and the student shape that matches it."""
    import torch
    import transformers

    torch.manual_seed(0)
    config = transformers.LlamaConfig(vocab_size=49152, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                                      num_attention_heads=2, num_key_value_heads=1, head_dim=32,
                                      max_position_embeddings=256, rms_norm_eps=1e-5, tie_word_embeddings=True)
    transformers.LlamaForCausalLM(config).save_pretrained(directory, safe_serialization=True)
    shape = dict(d_model=64, n_layers=2, n_kv_heads=1, n_heads=2, head_dim=32, d_ff=128, max_seq_len=256,
                 rope_theta=10000.0)
    source = [f"init_from=hf:{directory}", f"distill.teacher=hf:{directory}", "distill.relation_heads=2"]
    return [f"model.{k}={v}" for k, v in shape.items()] + source


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--steps", type=int, default=40)
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=2)
    ap.add_argument("--eval-batches", type=int, default=4)
    ap.add_argument("--seeds", default="0,1")
    ap.add_argument("--relation-weight", type=float, default=1.0, help="distill.relation_weight of arm (c)")
    ap.add_argument("--converted-lr", type=float, default=None,
                    help="peak learning rate of arms (b) and (c) (default: the recipe's)")
    ap.add_argument("--arms", default=",".join(ARMS), help=f"a subset of {','.join(ARMS)}")
    ap.add_argument("--smoke", action="store_true", help="a 2-layer random Llama instead of SmolLM2, 2 steps")
    ap.add_argument("--keep", default=None, metavar="DIR", help="write the runs to DIR/<arm>-<seed> and keep them "
                    "(to export or evaluate a student afterwards); default: a temporary directory")
    args = ap.parse_args()
    arms = [a for a in args.arms.split(",") if a]
    if unknown := [a for a in arms if a not in ARMS]:
        ap.error(f"--arms: {', '.join(unknown)} unknown; choose from {', '.join(ARMS)}")
    if args.smoke:
        args.steps, args.seq_len, args.eval_batches, args.seeds = 2, 32, 1, "0"

    with tempfile.TemporaryDirectory() as scratch:
        tmp = args.keep or scratch
        common = [f"steps={args.steps}", f"data.seq_len={args.seq_len}", f"data.batch_size={args.batch_size}",
                  f"eval_batches={args.eval_batches}", f"eval_every={args.steps}", f"log_every={args.steps}",
                  "distill.online=true", "distill.k=32", f"loss_chunk={args.seq_len}",
                  f"checkpoint.every={args.steps}", "optim.warmup_steps=5"]
        if args.smoke:
            common += smoke_source(Path(tmp) / "smoke-source")
        base = apply_overrides(load_recipe(RECIPE), common)
        teacher = teacher_heldout(base)
        results: dict[str, list[float]] = {arm: [] for arm in arms}
        seconds: dict[str, list[float]] = {arm: [] for arm in arms}
        tokens_per_step = args.batch_size * args.seq_len
        for seed in [int(s) for s in args.seeds.split(",")]:
            for arm in arms:
                overrides = arm_overrides(arm, args.steps, args.relation_weight, args.converted_lr)
                # the data order as well as the init: a converted student has no random init of its own
                cfg = apply_overrides(base, overrides + [f"seed={seed}", f"data.shuffle_seed={seed}"])
                workdir = Path(tmp) / f"{arm}-{seed}"
                summary = train(cfg, workdir, progress=False)
                last = last_train_record(workdir)
                results[arm].append(summary["heldout_loss"])
                seconds[arm].append(tokens_per_step / last["tokens_per_sec"])
                parts = ", ".join(f"{k} {last[k]:.4f}" for k in ("kd", "relation") if k in last)
                print(f"  {ARMS[arm]}, seed {seed}: held-out {summary['heldout_loss']:.3f} nats/token "
                      f"(last step: {parts})", flush=True)

    students = ("smoke: 2-layer students of a random Llama" if args.smoke
                else "SmolLM2-135M-shaped ternary students of gguf:smollm2")
    print(f"\n{students}, {args.steps} steps x {args.batch_size} x {args.seq_len} tokens, online KD (k=32), "
          f"relation weight {args.relation_weight}, peak lr {RANDOM_LR} (a) and "
          f"{args.converted_lr or base.optim.peak_lr} (b, c); held-out nats/token\n")
    print("| student | " + " | ".join(f"seed {s}" for s in args.seeds.split(",")) + " | mean | gap closed | "
          "s/step |")
    print("|---|" + "---|" * (len(args.seeds.split(",")) + 3))
    print(f"| teacher (full precision) | {' | '.join(f'{teacher:.3f}' for _ in args.seeds.split(','))} | "
          f"{teacher:.3f} | | |")
    base_mean = statistics.mean(results["random"]) if "random" in results else None
    for arm in arms:
        mean = statistics.mean(results[arm])
        closed = (f"{(base_mean - mean) / (base_mean - teacher):.1%}"
                  if base_mean is not None and arm != "random" and base_mean != teacher else "")
        print(f"| {ARMS[arm]} | {' | '.join(f'{v:.3f}' for v in results[arm])} | {mean:.3f} | {closed} | "
              f"{statistics.median(seconds[arm]):.2f} |")


if __name__ == "__main__":
    main()
