import numpy as np

from bitjax.config import DataConfig
from bitjax.data import heldout_batches, prepare_corpus, train_dataset, window_example

EOS = 0


def test_window_example_segments_positions_and_mask():
    window = np.array([5, 6, EOS, 7, 8, 9, EOS, 3, 4], np.int32)
    ex = window_example(window, EOS)
    np.testing.assert_array_equal(ex["inputs"], [5, 6, EOS, 7, 8, 9, EOS, 3])
    np.testing.assert_array_equal(ex["targets"], [6, EOS, 7, 8, 9, EOS, 3, 4])
    np.testing.assert_array_equal(ex["segment_ids"], [1, 1, 1, 2, 2, 2, 2, 3])
    np.testing.assert_array_equal(ex["positions"], [0, 1, 2, 0, 1, 2, 3, 0])
    # an EOS input predicts the next document's first token: not trained on
    np.testing.assert_array_equal(ex["loss_mask"], [1, 1, 0, 1, 1, 1, 0, 1])


CFG = DataConfig(vocab_size=512, seq_len=32, batch_size=4)


def test_iterator_state_restores_the_same_batches():
    corpus = prepare_corpus(CFG)
    it = iter(train_dataset(corpus, CFG))
    for _ in range(3):
        next(it)
    state = it.get_state()
    expected = [next(it) for _ in range(5)]
    it2 = iter(train_dataset(corpus, CFG))
    it2.set_state(state)
    for want in expected:
        got = next(it2)
        for key in want:
            np.testing.assert_array_equal(got[key], want[key])


def test_process_shards_are_disjoint():
    corpus = prepare_corpus(CFG)
    firsts = []
    for index in range(2):
        it = iter(train_dataset(corpus, CFG, process_index=index, process_count=2))
        firsts.append({tuple(row) for _ in range(10) for row in next(it)["inputs"]})
    assert not firsts[0] & firsts[1]


def test_heldout_is_not_in_training_tokens():
    corpus = prepare_corpus(CFG)
    batch = heldout_batches(corpus, CFG, 1)[0]
    assert batch["inputs"].shape == (CFG.batch_size, CFG.seq_len)
    assert len(corpus.heldout_tokens) >= CFG.batch_size * (CFG.seq_len + 1)
