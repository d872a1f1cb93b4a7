"""The Grain pipeline: mixing, packing, resume, sharding, the TFDS builders and bad input."""

import dataclasses
import json

import grain
import numpy as np
import pytest

from bitjax import tokenizer as tokenizer_lib
from bitjax.config import DataConfig, SourceConfig
from bitjax.data import DataError, build_pipeline
from bitjax.data.pack import pack
from bitjax.data.sources import corpora, records, tfds_corpora, uris
from bitjax.data.sources.examples import DocumentExamples
from bitjax.data.sources.token_shard import TokenShard, load_shard, save_shard
from bitjax.errors import ConfigError


@pytest.fixture(scope="module")
def rephrased_jsonl(tmp_path_factory):
    """A stand-in for rephrased text: 60 short documents made from natural passages."""
    path = tmp_path_factory.mktemp("rephrased") / "rephrased.jsonl"
    docs = uris.load_documents("tfds:shakespeare")[:60]
    with path.open("w") as f:
        for d in docs:
            summary = " ".join(d["text"].split()[:40])
            f.write(json.dumps({"id": d["id"] + "#summary", "text": f"Summary: {summary}"}) + "\n")
    return path


def mixed_config(rephrased_jsonl, **kw):
    srcs = (SourceConfig("natural", "tfds:shakespeare", 0.6),
            SourceConfig("rephrased", f"jsonl:{rephrased_jsonl}", 0.4))
    return DataConfig(**{"sources": srcs, "vocab_size": 512, "seq_len": 32, "batch_size": 100, **kw})


@pytest.mark.parametrize("weights", ["", "natural=0.8,rephrased=0.2"])
def test_realized_mix_is_exact_over_10000_sequences(rephrased_jsonl, weights):
    """Grain's weighted mix interleaves deterministically: exactly 6000 (8000) of 10,000 sequences and the
    same share of tokens, in every batch of 100 too. A mixer that samples would miss the exact count."""
    cfg = mixed_config(rephrased_jsonl, weights=weights)
    pipeline = build_pipeline(cfg)
    it = pipeline.train_iterator()
    examples = np.zeros(2)
    tokens = {"natural": 0, "rephrased": 0}
    want = cfg.mixture_weights()["natural"] / sum(cfg.mixture_weights().values())
    per_batch = set()
    for _ in range(100):  # 100 batches x 100 sequences
        batch = next(it)
        counts = np.bincount(batch["source_id"], minlength=2)
        per_batch.add(int(counts[0]))
        examples += counts
        for name, n in pipeline.token_counts(batch).items():
            tokens[name] += n
    frac_examples = examples[0] / examples.sum()
    frac_tokens = tokens["natural"] / sum(tokens.values())
    print(f"natural share: {frac_examples:.4f} of sequences, {frac_tokens:.4f} of tokens (weight {want:.2f}); "
          f"tokens {tokens}")
    assert examples.sum() == 10_000
    assert examples[0] == round(10_000 * want)                       # 6000 (8000), exactly
    assert per_batch == {round(100 * want)}
    # concat-then-split pads only at the end of a finite stream: every token is a real one, 32 per sequence
    assert tokens["natural"] == round(10_000 * want) * 32
    assert sum(tokens.values()) == 10_000 * 32


def test_realized_mix_follows_weights_by_name_not_by_order(rephrased_jsonl):
    """Sources listed out of alphabetical order each get their own weight."""
    srcs = (SourceConfig("zz_natural", "tfds:shakespeare", 0.7), SourceConfig("aa_rephrased",
                                                                            f"jsonl:{rephrased_jsonl}", 0.3))
    pipeline = build_pipeline(DataConfig(sources=srcs, vocab_size=512, seq_len=32, batch_size=100))
    it = pipeline.train_iterator()
    ids = np.concatenate([next(it)["source_id"] for _ in range(20)])
    assert abs(np.mean(ids == 0) - 0.7) < 0.01     # source_id 0 is zz_natural, the first listed


def synthetic_shard(lengths, fingerprint="synthetic") -> TokenShard:
    """Document d holds tokens d*1000+1 ... so every token names its document."""
    docs = [np.arange(n, dtype=np.int32) % 999 + 1 + 1000 * d for d, n in enumerate(lengths)]
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    return TokenShard(np.concatenate(docs), offsets, np.zeros(len(lengths), np.int32), fingerprint, "synthetic")


@pytest.mark.parametrize("packing", ["concat_then_split", "first_fit"])
def test_no_token_crosses_a_segment_boundary_and_long_documents_are_kept(packing):
    rng = np.random.default_rng(0)
    lengths = rng.integers(1, 90, size=200)
    lengths[5] = 300  # longer than a sequence: split, never dropped
    shard = synthetic_shard(lengths)
    L, BOS = 32, 0
    ds = grain.MapDataset.source(DocumentExamples(shard, BOS)).to_iter_dataset()
    seen = np.zeros(len(lengths), np.int64)
    for ex in pack(ds, L, packing, max_doc_tokens=int(lengths.max())):
        seg, pos, inp, tgt, mask = ex["segment_ids"], ex["positions"], ex["inputs"], ex["targets"], ex["loss_mask"]
        assert all(v.shape == (L,) and v.dtype == np.int32 for v in ex.values())
        for s in np.unique(seg[seg > 0]):
            idx = np.flatnonzero(seg == s)
            assert np.array_equal(idx, np.arange(idx[0], idx[-1] + 1))          # contiguous
            assert np.array_equal(pos[idx], np.arange(len(idx)))               # positions restart per piece
            docs = {int(t) // 1000 for t in np.concatenate([inp[idx], tgt[idx]]) if t != BOS}
            assert len(docs) == 1, f"segment mixes documents {docs}"        # nothing from a neighbour
            seen[docs.pop()] += int(np.sum(tgt[idx] != BOS))
        assert np.all(mask[seg == 0] == 0) and np.all(inp[seg == 0] == 0)
    np.testing.assert_array_equal(seen, lengths)  # every token of every document, the long one included


@pytest.mark.parametrize("packing", ["concat_then_split", "first_fit"])
def test_restored_iterator_yields_the_same_next_50_batches(rephrased_jsonl, packing):
    cfg = mixed_config(rephrased_jsonl, batch_size=4, packing=packing)
    pipeline = build_pipeline(cfg)
    it = pipeline.train_iterator()
    for _ in range(13):
        next(it)
    state = json.loads(json.dumps(it.get_state()))  # as Orbax stores it
    expected = [next(it) for _ in range(50)]
    restored = build_pipeline(cfg).train_iterator()
    restored.set_state(state)
    for want in expected:
        got = next(restored)
        assert got.keys() == want.keys()
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_weights_can_change_on_resume(rephrased_jsonl):
    cfg = mixed_config(rephrased_jsonl, batch_size=10)
    it = build_pipeline(cfg).train_iterator()
    for _ in range(5):
        next(it)
    state = json.loads(json.dumps(it.get_state()))
    changed = build_pipeline(mixed_config(rephrased_jsonl, batch_size=10, weights="natural=0.2,rephrased=0.8"))
    it2 = changed.train_iterator()
    it2.set_state(state)
    ids = np.concatenate([next(it2)["source_id"] for _ in range(50)])
    assert abs(np.mean(ids == 0) - 0.2) < 0.01


def write_token_source(tmp_path, lengths):
    tok = tokenizer_lib.train_bpe(["a b c d e f g"] * 10, 300)
    tok_path = tmp_path / "tokenizer.json"
    tokenizer_lib.save_atomic(tok, tok_path)
    # every token of document d is d + 1: it names its document and stays inside the small vocabulary
    tokens = np.concatenate([np.full(n, d + 1, np.int32) for d, n in enumerate(lengths)])
    offsets = np.concatenate([[0], np.cumsum(lengths)]).astype(np.int64)
    shard = TokenShard(tokens, offsets, np.zeros(len(lengths), np.int32), tokenizer_lib.fingerprint(tok), "synthetic")
    assert len(lengths) < tok.get_vocab_size()
    save_shard(shard, tmp_path / "shard")
    return tok_path, tmp_path / "shard"


def test_two_processes_shards_are_disjoint_and_cover_the_data(tmp_path):
    lengths = np.random.default_rng(1).integers(5, 60, size=101)
    tok_path, shard_dir = write_token_source(tmp_path, lengths)
    cfg = DataConfig(sources=(SourceConfig("pre", f"tokens:{shard_dir}"),), tokenizer=str(tok_path), seq_len=16,
                     batch_size=2, on_exhausted="error", heldout_fraction=0.01)
    pipeline = build_pipeline(cfg)
    n_train = len(pipeline.sources["pre"].train)
    per_process = []
    for index in range(2):
        docs = set()
        it = pipeline.train_iterator(process_index=index, process_count=2)
        with pytest.raises(DataError, match="ran dry"):
            while True:
                batch = next(it)
                docs |= {int(t) - 1 for t in batch["targets"].ravel() if t != 0}
        per_process.append(docs)
    assert not per_process[0] & per_process[1]
    assert per_process[0] | per_process[1] == set(range(n_train))


def test_token_shard_from_another_tokenizer_is_refused(tmp_path):
    tok_path, shard_dir = write_token_source(tmp_path, [5, 6, 7])
    with pytest.raises(tokenizer_lib.TokenizerMismatch, match="made with tokenizer"):
        load_shard(shard_dir, expected_fingerprint="0123456789abcdef")


def test_tfds_builder_builds_and_reads_back_offline(tmp_path):
    docs = tfds_corpora.read("shakespeare", tmp_path)
    expected = {d["id"]: d["text"] for d in corpora.shakespeare_documents()}
    assert len(docs) == len(expected) > 2000
    assert all(expected[d["id"]] == d["text"] for d in docs)
    assert (tmp_path / "bitjax_shakespeare" / "0.6.0").is_dir()
    assert any(p.name.startswith("bitjax_shakespeare-train.array_record")
               for p in (tmp_path / "bitjax_shakespeare" / "0.6.0").iterdir())
    kjv = tfds_corpora.read("kjv", tmp_path)
    assert len(kjv) == 1189 and any(d["id"] == "Genesis 1" for d in kjv)


def test_prompt_completion_masks_the_prompt(tmp_path):
    path = tmp_path / "pc.jsonl"
    path.write_text("".join(json.dumps({"prompt": f"Question {i}? ", "completion": f"Answer {i}."}) + "\n"
                            for i in range(20)))
    src = SourceConfig("pc", f"jsonl:{path}", text_field="completion", prompt_field="prompt")
    pipeline = build_pipeline(DataConfig(sources=(src,), vocab_size=300, seq_len=16, batch_size=2))
    shard = pipeline.sources["pc"].train
    ex = DocumentExamples(shard, pipeline.boundary_id)[0]
    ids, prompt_len = shard.document(0)
    assert prompt_len > 0
    np.testing.assert_array_equal(ex["loss_mask"], [0] * prompt_len + [1] * (len(ids) + 1 - prompt_len))


def test_arrayrecord_source(tmp_path):
    path = tmp_path / "docs.array_record"
    records.write_arrayrecord(path, [{"id": str(i), "text": f"document number {i}"} for i in range(5)])
    docs = uris.load_documents(f"arrayrecord:{path}")
    assert [d["text"] for d in docs] == [f"document number {i}" for i in range(5)]


def test_heldout_documents_are_not_trained_on(rephrased_jsonl):
    pipeline = build_pipeline(mixed_config(rephrased_jsonl, batch_size=4))
    p = pipeline.sources["natural"]
    assert p.train.offsets[-1] == p.heldout.offsets[0]  # the held-out tail starts where training ends
    batch = pipeline.heldout_batches(2)[0]
    assert batch["inputs"].shape == (4, 32) and "source_id" not in batch


# --------------------------------------------------------------------------- bad input


@pytest.mark.parametrize("content,match", [
    (b"", "is empty"),
    (b'{"text": "ok"}\n{"text": "caf\xe9"}\n', r"bad\.jsonl:2: invalid UTF-8"),
    (b'{"text": "ok"}\n{"body": "no text"}\n', r"bad\.jsonl:2: missing field 'text'"),
    (b'{"text": "ok"}\n\n{"text": oops}\n', r"bad\.jsonl:3: not valid JSON"),
    (b'["a list"]\n', r"bad\.jsonl:1: expected a JSON object"),
])
def test_bad_jsonl_is_named_by_file_and_line(tmp_path, content, match):
    path = tmp_path / "bad.jsonl"
    path.write_bytes(content)
    with pytest.raises(DataError, match=match):
        uris.load_documents(f"jsonl:{path}")


def test_negative_or_all_zero_weights_are_errors():
    with pytest.raises(ConfigError, match="must be >= 0"):
        SourceConfig("a", "tfds:shakespeare", weight=-0.1)
    two = (SourceConfig("a", "tfds:shakespeare", 0.0), SourceConfig("b", "tfds:kjv", 0.0))
    with pytest.raises(ConfigError, match="all zero"):
        DataConfig(sources=two)
    with pytest.raises(ConfigError, match="negative"):
        DataConfig(sources=(SourceConfig("a", "tfds:shakespeare"),), weights="a=-1")
    with pytest.raises(ConfigError, match="NAME=WEIGHT"):
        DataConfig(sources=(SourceConfig("a", "tfds:shakespeare"),), weights="z=1")


def test_a_source_that_runs_dry_repeats_or_stops_by_config(tmp_path):
    tok_path, shard_dir = write_token_source(tmp_path, [20] * 10)
    src = (SourceConfig("pre", f"tokens:{shard_dir}"),)
    base = dict(sources=src, tokenizer=str(tok_path), seq_len=16, batch_size=2)
    it = build_pipeline(DataConfig(**base)).train_iterator()
    for _ in range(100):  # ~9 documents x 21 tokens / 32 per batch: many epochs
        next(it)
    it = build_pipeline(DataConfig(**base, on_exhausted="error")).train_iterator()
    with pytest.raises(DataError, match="'pre' ran dry .* data.on_exhausted=repeat"):
        for _ in range(100):
            next(it)


def test_unknown_source_kind_is_a_config_error():
    with pytest.raises(ConfigError, match="KIND:LOCATION"):
        build_pipeline(DataConfig(sources=(SourceConfig("a", "hdf5:x"),)))


def test_weights_are_set_from_the_command_line_and_sources_from_recipes():
    from bitjax.config import TrainConfig, apply_overrides, from_dict

    srcs = (SourceConfig("natural", "tfds:shakespeare", 0.6), SourceConfig("rephrased", "jsonl:x.jsonl", 0.4))
    cfg = TrainConfig(data=DataConfig(sources=srcs))
    changed = apply_overrides(cfg, ["data.weights=natural=0.5,rephrased=0.5"])
    assert changed.data.mixture_weights() == {"natural": 0.5, "rephrased": 0.5}
    with pytest.raises(ConfigError, match="data.weights"):
        apply_overrides(cfg, ["data.sources=x"])
    assert from_dict(TrainConfig, dataclasses.asdict(changed)) == changed  # config.json round trip


def test_a_source_smaller_than_the_shard_count_is_read_by_every_shard(tmp_path):
    """A repeating source with fewer training documents than data shards (a small sample on a pod) is
    repeated before it is split, so each of 4 shards gets rows of it; a non-repeating one is refused."""
    small = tmp_path / "small.jsonl"
    small.write_text("".join(json.dumps({"id": str(i), "text": f"small document {i} " * 5}) + "\n"
                             for i in range(3)))   # 2 for training, 1 held out
    srcs = (SourceConfig("natural", "tfds:shakespeare", 0.5), SourceConfig("small", f"jsonl:{small}", 0.5))
    cfg = DataConfig(sources=srcs, vocab_size=512, seq_len=32, batch_size=8, num_shards=4)
    pipeline = build_pipeline(cfg)
    small_id = pipeline.source_names.index("small")
    for shard in range(4):
        rows = next(iter(pipeline.train_dataset(shard, 4)))
        assert np.any(rows["source_id"] == small_id), shard
    with pytest.raises(DataError, match="fewer than the 4 data shards"):
        next(iter(build_pipeline(dataclasses.replace(cfg, on_exhausted="error")).train_dataset(3, 4)))
