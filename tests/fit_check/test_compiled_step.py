"""The compiled train step, as the TPU compiler (libtpu, on this CPU) builds it for a small slice: what
fit-check promises about the big recipes, held on a shape that compiles in seconds.

  - no L x L attention-score array (splash attention keeps scores in VMEM tiles)
  - no float32 logits over the whole sequence (the chunked head holds one (rows, chunk, V) block)
  - BitLinear forward matmuls are s8 x s8 -> s32
  - the number of all-reduces does not grow with depth (layers are one scanned body)
"""

import importlib.util

import pytest

from bitjax.config import apply_overrides, load_recipe
from bitjax.fit_check import check as fit_check
from bitjax.fit_check import hlo_facts
from tests.support import ROOT

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs libtpu (.[tpu])")

# distil_tiny's shape with a teacher top-k in every row; L = 512 is not any width of the model
SHAPE = ["data.seq_len=512", "data.batch_size=8", "mesh.data=1", "mesh.fsdp=4", "model.dtype=bfloat16",
         "model.int8_matmul=true", "model.remat=full", "loss_chunk=128"]


class _Report:
    def __init__(self, hlo):
        self.hlo = hlo


def _report(*extra):
    """The facts of the step compiled for a v5p-8 slice (4 chips, 2 rows each), as fit-check reads them."""
    cfg = apply_overrides(load_recipe(ROOT / "recipes" / "distill_tiny.py"), SHAPE + list(extra))
    lowered, _ = fit_check.lower_step(cfg, fit_check.topology("v5p-8"), teacher_k=8)
    text = lowered.compile().as_text()
    return _Report(hlo_facts.facts(text, seq_len=512, vocab_size=cfg.model.vocab_size, rows=2))


@pytest.fixture(scope="module")
def two_and_four_layers():
    return _report("model.n_layers=2"), _report("model.n_layers=4")


def test_no_score_matrix_and_no_full_f32_logits(two_and_four_layers):
    for report in two_and_four_layers:
        assert report.hlo.score_buffers == (), report.hlo.score_buffers[:3]
        assert report.hlo.full_logits_f32 == (), report.hlo.full_logits_f32[:3]


def test_bitlinear_forward_runs_int8_codes(two_and_four_layers):
    two, _ = two_and_four_layers
    # 7 BitLinear kernels per block, one scanned body: every one of them as s8 x s8 -> s32
    assert two.hlo.int8_matmuls >= 7


def test_all_reduces_do_not_grow_with_depth(two_and_four_layers):
    two, four = two_and_four_layers
    # the scanned body issues the same collectives whatever the depth (measured: 9 at depth 2, 8 at depth 4,
    # the compiler combining a little differently); FSDP's per-layer traffic is all-gathers and reduce-scatters
    assert four.hlo.all_reduces <= two.hlo.all_reduces <= 16
    assert four.hlo.int8_matmuls == two.hlo.int8_matmuls


def test_the_reference_paths_do_hold_what_the_checks_look_for():
    """The checks can fail: with plain-XLA attention and the unchunked head, the same step holds both."""
    report = _report("model.n_layers=2", "model.attention=xla", "loss_chunk=512", "model.int8_matmul=false")
    assert report.hlo.score_buffers and report.hlo.full_logits_f32
