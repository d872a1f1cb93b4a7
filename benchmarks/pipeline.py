"""Input-pipeline throughput against what training consumes, and the streamed Parquet path.

1. Pre-tokenized: two sources mixed 60/40 by Grain, packed into 1024-token sequences, batched, on one core;
   then the tokens/s a train step of the tiny recipe (and, with --model-125m, the bitnet_125m preset)
   consumes on this machine, and the ratios.
2. Streamed (--stream-docs N): a generated Parquet corpus in FineWeb-Edu's layout (id, text, url columns)
   as two streamed sources mixed 60/40: read a row group at a time, tokenized on the fly, packed, mixed and
   batched, on one core, for each --read-threads value; beside it the `tokenizers` batch encoder alone on the
   same documents and core (the expected ceiling), and how many such cores keep a v5p-64 host fed at the
   bitnet_700m recipe's rate.
3. Host memory (--rss-docs 20000,200000): the peak RSS of one full pass of the train iterator over a streamed
   corpus of each size, each in a fresh process (docs/data.md quotes it).

    python -m benchmarks.pipeline [--batches 200] [--packing concat_then_split] [--model-125m]
                                  [--stream-docs 4000] [--read-threads 1,2] [--rounds 5]
                                  [--rss-docs 20000,200000] [--rows-per-group 0]
    python -m benchmarks.pipeline --stream-docs 0 --rss-docs 20000,200000 --rows-per-group 0   # memory alone
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]

# The bitnet_700m recipe on its v5p-64 preset: 256 x 2048 tokens per step over 8 hosts (4 chips each), at the
# step time docs/sharding.md's fit-check estimates (212 ms).
V5P_64_HOSTS, RECIPE_700M_BATCH, RECIPE_700M_SEQ, RECIPE_700M_STEP_S = 8, 256, 2048, 0.212

WORDS = ("the of and to in a is that for it as was with be by on not he this are or his from at which but have an "
         "they you were her she there been one all we their has would when if so no what up out who them some "
         "could into time only new other than then two may first any these like its over such our most also "
         "made after did many before must through back years where much your way well down should because each "
         "just those people how too little state good very make world still own see men work long get here "
         "between both life being under never day same another know while last might us great old year off "
         "come since against go came right used take three").split()


def write_parquet_corpus(directory: str | Path, n_docs: int, *, n_files: int = 4, rows_per_group: int | None = 1000,
                         words: tuple[int, int] = (20, 120), seed: int = 0) -> Path:
    """A generated Parquet corpus in FineWeb-Edu's layout: columns id, text and url; document i's text
    starts with `document i:` and goes on with words drawn from a fixed list. Returns the directory."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    vocab = np.asarray(WORDS)
    per_file = -(-n_docs // n_files)
    for f in range(n_files):
        ids = range(f * per_file, min(n_docs, (f + 1) * per_file))
        lengths = rng.integers(*words, size=len(ids))
        texts = [f"document {i}: " + " ".join(rng.choice(vocab, size=n)) + "." for i, n in zip(ids, lengths)]
        table = pa.table({"id": [f"doc-{i}" for i in ids], "text": texts, "url": [f"https://example.org/{i}"
                                                                                   for i in ids]})
        pq.write_table(table, directory / f"part-{f:03d}.parquet", row_group_size=rows_per_group)
    return directory


def pipeline_tokens_per_sec(cfg_data, batches: int, warmup: int = 10) -> tuple[float, float]:
    """Tokens/s of the train iterator over `batches` batches after `warmup` ones."""
    from bitjax.data import build_pipeline

    pipeline = build_pipeline(cfg_data)   # tokenizes once and caches the token shards (not timed)
    it = pipeline.train_iterator()
    for _ in range(min(warmup, batches)):
        next(it)
    tokens = real = 0
    t0 = time.perf_counter()
    for _ in range(batches):
        batch = next(it)
        pipeline.token_counts(batch)
        tokens += batch["inputs"].size
        real += int(np.sum(batch["segment_ids"] > 0))
    dt = time.perf_counter() - t0
    return tokens / dt, real / tokens


def streamed_config(corpora: list[Path], tokenizer: str, read_threads: int, **kw):
    """Two streamed Parquet sources mixed 60/40, 8 x 1024 tokens per batch.

    The shuffle window is 256 documents (not the default 4,096): a window is filled before its first document
    comes out, so the timed batches must span several windows of each source to measure the steady state
    rather than the first fill or reads from an already filled window.
    """
    from bitjax.config import DataConfig, SourceConfig

    sources = tuple(SourceConfig(f"web_{i}", f"parquet:{corpus}/*.parquet", weight)
                    for i, (corpus, weight) in enumerate(zip(corpora, (0.6, 0.4))))
    return DataConfig(sources=sources, tokenizer=tokenizer, seq_len=1024, batch_size=8, read_threads=read_threads,
                      shuffle_window=256, **kw)


def encoder_tokens_per_sec(corpora: list[Path], tokenizer: str) -> dict[str, float]:
    """The `tokenizers` batch encoder alone on the corpora's documents, 256 per call."""
    import pyarrow.parquet as pq

    from bitjax import tokenizer as tokenizer_lib

    tok = tokenizer_lib.load(tokenizer)
    texts = [t for corpus in corpora for path in sorted(corpus.glob("*.parquet"))
             for t in pq.read_table(path, columns=["text"]).column("text").to_pylist()]
    rates = {}
    for name in ("encode_batch", "encode_batch_fast"):
        encode = getattr(tok, name)
        t0, n = time.perf_counter(), 0
        for i in range(0, len(texts), 256):
            n += sum(len(e.ids) for e in encode(texts[i:i + 256], add_special_tokens=False))
        rates[name] = n / (time.perf_counter() - t0)
    return rates


def one_pass(corpus_glob: str, tokenizer: str) -> dict:
    """One full pass of the train iterator over one streamed source; RSS sampled along the way (MB)."""
    from bitjax.config import DataConfig, SourceConfig
    from bitjax.data import build_pipeline
    from bitjax.errors import DataError

    cfg = DataConfig(sources=(SourceConfig("web", f"parquet:{corpus_glob}"),), tokenizer=tokenizer, seq_len=1024,
                     batch_size=8, on_exhausted="error")
    it = build_pipeline(cfg).train_iterator()
    tokens = batches = 0
    samples = []
    try:
        while True:
            batch = next(it)
            tokens += int(np.sum(batch["segment_ids"] > 0))
            batches += 1
            samples.append(_rss_mb("VmRSS"))
    except DataError as e:
        if "ran dry" not in str(e):
            raise
    return {"tokens": tokens, "batches": batches, "rss_mb": samples, "peak_mb": _rss_mb("VmHWM")}


def _rss_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024
    return float("nan")


def peak_rss_of_a_pass(n_docs: int, tokenizer: str, workdir: Path, rows_per_group: int = 1000) -> dict:
    """`rows_per_group` 0: what `pq.write_table` writes by default, one row group per file (up to 1M rows)."""
    corpus = write_parquet_corpus(workdir / f"rss-{n_docs}-{rows_per_group}", n_docs,
                                  rows_per_group=rows_per_group or None)
    env = dict(os.environ, PYTHONPATH=str(ROOT), JAX_PLATFORMS="cpu")
    out = subprocess.run([sys.executable, "-m", "benchmarks.pipeline", "--one-pass", f"{corpus}/*.parquet",
                          "--tokenizer", tokenizer], cwd=ROOT, env=env, capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def train_tokens_per_sec(cfg, steps: int) -> float:
    import jax

    from benchmarks.step_time import synthetic_batch
    from bitjax.training.trainer import Trainer

    trainer = Trainer.create(cfg)
    state = trainer.init_state()
    step = trainer.jit_train_step()
    batch = synthetic_batch(cfg)
    state, m = step(state, batch)
    jax.block_until_ready(m)
    t0 = time.perf_counter()
    for _ in range(steps):
        state, m = step(state, batch)
    jax.block_until_ready(m)
    return cfg.data.batch_size * cfg.data.seq_len * steps / (time.perf_counter() - t0)


def streamed(args, workdir: Path) -> None:
    """Streamed pipeline and encoder alone, alternating for --rounds rounds: medians, and the median of the
    per-round ratios (load that hits both alike cancels)."""
    from bitjax import tokenizer as tokenizer_lib
    from bitjax.paths import cache_dir

    tokenizer = str(tokenizer_lib.resolve(args.tokenizer, 4096, lambda: iter(WORDS), cache_dir(), "benchmark"))
    # documents of 200-1400 words (about 1,000 tokens on average, like FineWeb-Edu's): per-document costs
    # (packing, Grain's bookkeeping) weigh as they would on a web corpus
    corpora = [write_parquet_corpus(workdir / name, args.stream_docs // 2, n_files=2, rows_per_group=32,
                                    words=(200, 1400), seed=seed) for seed, name in enumerate(("a", "b"))]
    threads = [int(t) for t in args.read_threads.split(",")]
    encoder, fast, pipes = [], [], {t: [] for t in threads}
    for _ in range(args.rounds):
        rates = encoder_tokens_per_sec(corpora, tokenizer)
        encoder.append(rates["encode_batch"])
        fast.append(rates["encode_batch_fast"])
        for t in threads:
            # 40 warm-up batches (327k tokens) fill each source's first window; the timed ones span several
            pipes[t].append(pipeline_tokens_per_sec(streamed_config(corpora, tokenizer, t), args.batches, 40)[0])
    print(f"tokenizers batch encoder alone ({args.tokenizer}, 256 documents per call, 1 core, median of "
          f"{args.rounds}): encode_batch {np.median(encoder):,.0f} tokens/s, encode_batch_fast (what bitjax "
          f"calls) {np.median(fast):,.0f} tokens/s")
    need = RECIPE_700M_BATCH * RECIPE_700M_SEQ / V5P_64_HOSTS / RECIPE_700M_STEP_S
    for t in threads:
        tps = float(np.median(pipes[t]))
        ratio = np.median(np.asarray(pipes[t]) / np.asarray(fast))
        print(f"streamed Parquet -> tokenize -> pack -> mix 0.6/0.4 (8 x 1024, read_threads={t}, 1 core): "
              f"{tps:,.0f} tokens/s, {ratio:.2f} of encode_batch_fast alone (median per-round ratio); a v5p-64 "
              f"host at bitnet_700m's {need:,.0f} tokens/s needs {int(np.ceil(need / tps))} such core(s)")
    rss_passes(args, tokenizer, workdir)


def rss_passes(args, tokenizer: str, workdir: Path) -> None:
    """The peak RSS of one pass over each --rss-docs corpus, each in a fresh process."""
    groups = f"{args.rows_per_group}-row groups" if args.rows_per_group else "one row group per file"
    for n_docs in (int(n) for n in filter(None, args.rss_docs.split(","))):
        result = peak_rss_of_a_pass(n_docs, tokenizer, workdir, args.rows_per_group)
        print(f"one pass over {n_docs:,} streamed documents, 4 files of {groups} ({result['tokens']:,} tokens, "
              f"{result['batches']:,} batches): peak RSS {result['peak_mb']:.0f} MB, RSS along the pass "
              f"{min(result['rss_mb'], default=0):.0f}-{max(result['rss_mb'], default=0):.0f} MB")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--batches", type=int, default=200, help="batches of 8 x 1024 tokens to time")
    parser.add_argument("--packing", default="concat_then_split", choices=["concat_then_split", "first_fit"])
    parser.add_argument("--train-steps", type=int, default=5)
    parser.add_argument("--model-125m", action="store_true", help="also time a bitnet_125m step (slow on CPU)")
    parser.add_argument("--stream-docs", type=int, default=4000, help="documents of the streamed corpora (0: skip)")
    parser.add_argument("--read-threads", default="1,2", help="data.read_threads values to time, comma-separated")
    parser.add_argument("--rounds", type=int, default=5, help="alternating rounds of the streamed measurements")
    parser.add_argument("--rss-docs", default="", help="corpus sizes for the peak-RSS passes, e.g. 20000,200000")
    parser.add_argument("--rows-per-group", type=int, default=1000, help="rows per Parquet row group of the RSS "
                        "corpora (0: one row group per file, what pyarrow's write_table writes by default)")
    parser.add_argument("--tokenizer", default="smollm2", help="the streamed part's tokenizer (default: smollm2, "
                        "the 700m recipe's)")
    parser.add_argument("--one-pass", default=None, help=argparse.SUPPRESS)   # a child process of --rss-docs
    args = parser.parse_args()
    if args.one_pass:
        print(json.dumps(one_pass(args.one_pass, args.tokenizer)))
        return

    if args.rss_docs and not args.stream_docs:   # the memory passes alone
        from bitjax import tokenizer as tokenizer_lib
        from bitjax.paths import cache_dir

        tokenizer = str(tokenizer_lib.resolve(args.tokenizer, 4096, lambda: iter(WORDS), cache_dir(), "benchmark"))
        with tempfile.TemporaryDirectory() as workdir:
            rss_passes(args, tokenizer, Path(workdir))
        return
    from bitjax.config import load_recipe
    from bitjax.nn.model_config import ModelConfig

    tiny = load_recipe(ROOT / "recipes" / "tiny.py")
    data_1024 = dataclasses.replace(tiny.data, seq_len=1024, batch_size=8, packing=args.packing)
    # one core for the pipeline, before the tokenizers' thread pool exists (it sizes itself to the affinity)
    os.sched_setaffinity(0, {sorted(os.sched_getaffinity(0))[0]})
    pipe_tps, fill = pipeline_tokens_per_sec(data_1024, args.batches)
    print(f"pipeline ({args.packing}, mixed natural 0.6 / rephrased 0.4, 8 x 1024 tokens, 1 core): "
          f"{pipe_tps:,.0f} tokens/s ({fill:.1%} non-padding)")
    with tempfile.TemporaryDirectory() as workdir:
        if args.stream_docs:
            streamed(args, Path(workdir))
    os.sched_setaffinity(0, set(range(os.cpu_count())))           # the train step gets every core

    runs = [("tiny recipe (8 x 128)", tiny)]
    if args.model_125m:
        cfg = dataclasses.replace(tiny, model=ModelConfig.bitnet_125m(),
                                  data=dataclasses.replace(tiny.data, seq_len=1024, batch_size=1))
        runs.append(("bitnet_125m (1 x 1024)", cfg))
    for name, cfg in runs:
        tps = train_tokens_per_sec(cfg, args.train_steps)
        print(f"training consumption, {name}, all cores: {tps:,.0f} tokens/s -> pipeline/consumption = "
              f"{pipe_tps / tps:,.1f}x")


if __name__ == "__main__":
    main()
