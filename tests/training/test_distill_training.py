"""Training against teacher caches: the KD term enters the loss and pulls the student to the teacher."""

import json
from pathlib import Path

import numpy as np
import pytest

from bitjax.config import apply_overrides, load_recipe
from bitjax.data.teacher_files.topk_cache import CacheError, TopKCache
from bitjax.errors import ConfigError
from bitjax.teachers.cache_teacher import cache_teacher
from bitjax.training import train
from tests.support import KD_TINY, ROOT

TINY = str(ROOT / "recipes" / "tiny.py")
SMALL = ["model.n_layers=1", "data.seq_len=32", "data.batch_size=4", "eval_batches=1", "log_every=1"]


@pytest.fixture(scope="module")
def cache_dir(tmp_path_factory):
    """A full-precision tiny teacher, and its top-8 cache of 16 sequences split over the two kd sources."""
    root = tmp_path_factory.mktemp("kd")
    train(apply_overrides(load_recipe(TINY), SMALL + ["steps=30", "model.quant=none"]), root / "teacher",
          progress=False)
    cfg = apply_overrides(load_recipe(KD_TINY), SMALL + [f"distill.cache={root / 'cache'}"])
    manifests = cache_teacher(cfg, f"bitjax:{root / 'teacher'}", root / "cache", k=8, n_examples=16,
                              num_shards=2, progress=False)
    assert {n: m["records"] for n, m in manifests.items()} == {"natural": 10, "rephrased": 6}  # 0.6 / 0.4
    return root / "cache"


def _history(workdir):
    return [json.loads(line) for line in (Path(workdir) / "metrics.jsonl").read_text().splitlines()]


def _kd(cache_dir, *extra):
    return apply_overrides(load_recipe(KD_TINY), SMALL + [f"distill.cache={cache_dir}", *extra])


def _kd_over_the_whole_cache(cfg, workdir, cache_dir) -> float:
    """The trained student's KD (and no other term) over every cached sequence of both sources, four rows a
    batch: a fixed evaluation set, the same for every student whatever order training read it in."""
    import jax

    from bitjax.training.checkpointer import Checkpointer
    from bitjax.training.trainer import Trainer

    trainer = Trainer.create(cfg)
    params = Checkpointer(Path(workdir) / "checkpoints", cfg).restore_state(cfg.steps, trainer.abstract_state()).params
    rows = [{**TopKCache(cache_dir / name)[i], "source_id": np.int32(s)}
            for s, name in enumerate(("natural", "rephrased")) for i in range(len(TopKCache(cache_dir / name)))]
    loss = jax.jit(trainer.loss)
    kd = [float(loss(params, {f: np.stack([r[f] for r in rows[b:b + 4]]) for f in rows[0]}, 1.0, 10**6)[1]["kd"])
          for b in range(0, len(rows), 4)]
    return float(np.mean(kd))


def test_kd_training_lowers_kd_against_the_same_run_without_kd(cache_dir, tmp_path):
    """The control: the same run (seed, data order) with kd_weight 1 and with kd_weight 0 (CE only). Both see
    the same batch at each step, so step 1's KD is equal in the two; KD alone is the loss of the first. After
    12 steps the KD-trained student is the closer to the teacher, over every cached sequence and on the last
    batches both trained on."""
    kd_hist, ce_hist = [], []
    for weight, hist in ((1.0, kd_hist), (0.0, ce_hist)):
        train(_kd(cache_dir, "steps=12", f"distill.kd_weight={weight}"), tmp_path / str(weight), progress=False)
        hist += [r for r in _history(tmp_path / str(weight)) if "kd" in r]
    assert len(kd_hist) == len(ce_hist) == 12 and all("ce" in r for r in kd_hist + ce_hist)
    np.testing.assert_allclose([r["loss"] for r in kd_hist], [r["kd"] for r in kd_hist], rtol=1e-6)
    np.testing.assert_allclose([r["loss"] for r in ce_hist], [r["ce"] for r in ce_hist], rtol=1e-6)
    np.testing.assert_allclose(kd_hist[0]["kd"], ce_hist[0]["kd"], rtol=1e-6)     # same model, same batch
    kd_trained, ce_trained = np.array([r["kd"] for r in kd_hist]), np.array([r["kd"] for r in ce_hist])
    whole = {w: _kd_over_the_whole_cache(_kd(cache_dir, "steps=12"), tmp_path / str(w), cache_dir)
             for w in (1.0, 0.0)}
    print("kd with KD:", kd_trained.round(4), "\nkd with CE only:", ce_trained.round(4), "\nwhole cache:", whole)
    assert whole[1.0] < 0.8 * whole[0.0]
    # measured: 0.124 against 0.159 with contiguous cache shards (0.128 against 0.171 with the earlier
    # round-robin ones, when every step from the 7th also compared lower; with contiguous shards one of those
    # six batches does not, so the per-step claim gave way to the whole cache above)
    assert kd_trained[-4:].mean() < 0.8 * ce_trained[-4:].mean()


def test_kd_weight_mixes_the_terms(cache_dir, tmp_path):
    train(_kd(cache_dir, "steps=2", "distill.kd_weight=0.25", "distill.kind=jsd"), tmp_path, progress=False)
    r = _history(tmp_path)[0]
    np.testing.assert_allclose(r["loss"], 0.25 * r["kd"] + 0.75 * r["ce"], rtol=1e-5)


def test_cache_rows_and_plain_rows_share_a_batch(cache_dir, tmp_path):
    """One source distils, the other trains on CE: rows of both meet in each batch, each with its loss."""
    import dataclasses

    from bitjax.training import train as train_fn
    cfg = _kd(cache_dir, "steps=3", "distill.kd_weight=1.0")
    natural, rephrased = cfg.data.sources
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(
        cfg.data, sources=(natural, dataclasses.replace(rephrased, objective="ce"))))
    train_fn(cfg, tmp_path, progress=False)
    r = _history(tmp_path)[0]
    assert "loss/natural" in r and "loss/rephrased" in r
    n_nat = r["data/tokens/natural"] / 32
    # natural rows are pure KD (weight 1), rephrased rows plain CE; each counts by its share of the 4 rows
    np.testing.assert_allclose(r["loss"], (n_nat * r["loss/natural"] + (4 - n_nat) * r["loss/rephrased"]) / 4,
                               rtol=1e-5)
    np.testing.assert_allclose(r["loss/natural"], r["kd"], rtol=1e-5)


def test_cache_for_another_sequence_length_is_refused(cache_dir, tmp_path):
    with pytest.raises(CacheError, match="set data.seq_len=32 or rebuild the cache"):
        train(_kd(cache_dir, "data.seq_len=64"), tmp_path, progress=False)


def test_cache_of_other_data_is_refused(cache_dir, tmp_path):
    """The cache holds the sequences the sources streamed when it was written; another shuffle seed
    streams other sequences, and training refuses to pair them with the cached teacher."""
    with pytest.raises(CacheError, match="computed for other tokens"):
        train(_kd(cache_dir, "data.shuffle_seed=5"), tmp_path, progress=False)


def test_missing_source_cache_names_the_command(cache_dir, tmp_path):
    with pytest.raises(CacheError, match="write the teacher cache first"):
        train(_kd(tmp_path / "nothing", "steps=1"), tmp_path / "run", progress=False)


def test_cached_sequences_are_the_ones_training_would_stream(cache_dir):
    from bitjax.data import build_pipeline
    cfg = _kd(cache_dir)
    pipeline = build_pipeline(cfg.data)
    stream = pipeline.source_examples("rephrased")
    cache = TopKCache(cache_dir / "rephrased")
    for e in range(len(cache)):
        np.testing.assert_array_equal(cache[cache.example(e)]["inputs"], next(stream)["inputs"])


def test_bad_distill_settings():
    with pytest.raises(ConfigError, match="distill.kd_weight=1.5"):
        apply_overrides(load_recipe(TINY), ["distill.kd_weight=1.5"])
    with pytest.raises(ConfigError, match="expected one of forward_kl"):
        apply_overrides(load_recipe(TINY), ["distill.kind=kl"])
    with pytest.raises(ConfigError, match="distill.cache is empty"):
        apply_overrides(load_recipe(KD_TINY), ["distill.cache="])


def test_kd_ce_sft_and_redi_rows_train_together(cache_dir, tmp_path):
    """The Grain mix takes cached-teacher rows, plain rows and both kinds of trace rows in one run."""
    import dataclasses

    from bitjax.config import SourceConfig
    traces = tmp_path / "traces.jsonl"
    rows = [{"prompt_id": f"q{p}", "prompt": f"Q{p}? ", "completion": f"so #### {a}", "gold": str(p),
             "label": "positive" if a == p else "negative", "id": f"q{p}#{a}"} for p in range(4) for a in (p, p + 1)]
    traces.write_text("".join(json.dumps(r) + "\n" for r in rows))
    cfg = _kd(cache_dir, "steps=8", "data.batch_size=8")
    natural, rephrased = cfg.data.sources
    sources = (natural, dataclasses.replace(rephrased, objective="ce"),
               SourceConfig("sft", f"traces:{traces}", weight=0.3, objective="sft", loss_weight=0.5),
               SourceConfig("redi", f"traces:{traces}", weight=0.3, objective="redi"))
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=sources))
    train(cfg, tmp_path / "run", progress=False)
    history = _history(tmp_path / "run")
    seen = {k for r in history for k in r if k.startswith("loss/")}
    assert seen == {"loss/natural", "loss/rephrased", "loss/sft", "loss/redi"}
    assert all(np.isfinite(r["loss"]) for r in history if "loss" in r)
    assert any("redi/positive_logprob" in r for r in history) and any("kd" in r for r in history)


def test_quant_and_kd_warmups_ramp_inside_training(cache_dir, tmp_path):
    """quant_warmup_steps=4 and distill.kd_warmup_steps=4 in a real run: the logged lambda and KD weight
    follow step / 4 (capped), each step's loss is w KD + (1 - w) CE with that step's w, and at step 1
    (lambda 0) the loss is the full-precision model's: the same run with model.quant=none logs the same."""
    # the ramp runs BitLinear's fake-quantized path: the int8 matmul holds the strength at 1
    train(_kd(cache_dir, "steps=6", "model.int8_matmul=false", "quant_warmup_steps=4", "distill.kd_warmup_steps=4",
              "distill.kd_weight=0.8"), tmp_path / "warm", progress=False)
    h = [r for r in _history(tmp_path / "warm") if "kd" in r]
    np.testing.assert_allclose([r["quant_lambda"] for r in h], [0, 0.25, 0.5, 0.75, 1, 1], atol=1e-7)
    np.testing.assert_allclose([r["kd_weight"] for r in h], [0, 0.2, 0.4, 0.6, 0.8, 0.8], atol=1e-7)
    for r in h:
        np.testing.assert_allclose(r["loss"], r["kd_weight"] * r["kd"] + (1 - r["kd_weight"]) * r["ce"], rtol=1e-5)
    train(_kd(cache_dir, "steps=1", "model.quant=none", "distill.kd_weight=0.8", "distill.kd_warmup_steps=4"),
          tmp_path / "fp", progress=False)
    fp = [r for r in _history(tmp_path / "fp") if "kd" in r][0]
    np.testing.assert_allclose([h[0]["ce"], h[0]["kd"]], [fp["ce"], fp["kd"]], rtol=1e-5)
    # and a fully quantized start differs from it (the warmup is what made them equal)
    train(_kd(cache_dir, "steps=1", "distill.kd_weight=0.8"), tmp_path / "q", progress=False)
    q = [r for r in _history(tmp_path / "q") if "kd" in r][0]
    assert abs(q["ce"] - fp["ce"]) > 1e-4


def _runs(tokens, n=8):
    """Every window of n consecutive tokens."""
    tokens = np.asarray(tokens)
    return {tuple(tokens[i:i + n]) for i in range(len(tokens) - n + 1)}


def test_heldout_documents_are_absent_from_the_training_stream_and_the_teacher_cache(cache_dir):
    """No 8-token run found only in held-out documents (Shakespeare repeats phrases, so runs that a training
    document also holds are set aside) occurs in the cached teacher sequences (every record) or in the first 200
    training batches (25,600 tokens); such runs do occur in the held-out batches, so the search would find one."""
    from bitjax.data import build_pipeline
    cfg = _kd(cache_dir)
    pipeline = build_pipeline(cfg.data)
    heldout, train_split = set(), set()
    for name in ("natural", "rephrased"):
        for shard, into in ((pipeline.sources[name].heldout, heldout), (pipeline.sources[name].train, train_split)):
            for d in range(len(shard)):
                into |= _runs(shard.document(d)[0])
    heldout -= train_split
    assert len(heldout) > 1000
    seen_cache, seen_train = set(), set()
    for name in ("natural", "rephrased"):
        cache = TopKCache(cache_dir / name)
        for e in range(len(cache)):
            rec = cache[e]
            for s in np.unique(rec["segment_ids"][rec["segment_ids"] > 0]):
                seen_cache |= _runs(rec["inputs"][rec["segment_ids"] == s])
    it = pipeline.train_iterator()
    for _ in range(200):
        batch = next(it)
        for row in range(len(batch["inputs"])):
            seg = batch["segment_ids"][row]
            for s in np.unique(seg[seg > 0]):
                seen_train |= _runs(batch["inputs"][row][seg == s])
    assert seen_cache and seen_train
    assert not heldout & seen_cache
    assert not heldout & seen_train
    heldout_rows = set()
    for batch in pipeline.heldout_batches(2):
        for row in batch["inputs"]:
            heldout_rows |= _runs(row)
    assert heldout & heldout_rows


def test_a_run_past_its_cache_goes_on_with_ce_on_the_text(cache_dir, tmp_path):
    """on_cache_exhausted="ce": the natural source's 10 cached sequences are read once, then its text trains
    under CE as `natural.ce` (logged with its own loss and token count); the KD term stays on the cached rows."""
    import dataclasses

    cfg = _kd(cache_dir, "steps=8", "data.weights=natural=1,rephrased=0")
    sources = tuple(dataclasses.replace(s, on_cache_exhausted="ce") for s in cfg.data.sources)
    cfg = dataclasses.replace(cfg, data=dataclasses.replace(cfg.data, sources=sources))
    train(cfg, tmp_path, progress=False)
    history = [r for r in _history(tmp_path) if "loss" in r]
    tokens = [(r.get("data/tokens/natural", 0), r.get("data/tokens/natural.ce", 0)) for r in history]
    assert sum(t[0] for t in tokens) == 10 * 32                      # each cached sequence once (no padding)
    assert sum(t[1] for t in tokens) == (8 * 4 - 10) * 32            # the rest of the 32 rows: text
    assert "kd" in history[0] and "loss/natural.ce" in history[-1] and "kd" not in history[-1]
    np.testing.assert_allclose(history[-1]["loss"], history[-1]["loss/natural.ce"], rtol=1e-6)
