"""The compiled train step, as the TPU compiler (libtpu, on this CPU) builds it for a small slice: what
fit-check promises about the big recipes, held on a shape that compiles in seconds.

  - no L x L attention-score array (splash attention keeps scores in VMEM tiles)
  - no float32 logits over the whole sequence (the chunked head holds one (rows, chunk, V) block)
  - BitLinear forward matmuls are s8 x s8 -> s32
  - the number of all-reduces does not grow with depth (layers are one scanned body)
  - FSDP gathers the BitLinear codes packed four to a byte (u8), never as int8 or float weights; their gradients
    leave by reduce-scatter in bf16; the LM head is gathered once per step, not once per loss block
"""

import importlib.util

import pytest

from bitjax.config import apply_overrides, load_recipe
from bitjax.fit_check import check as fit_check
from bitjax.fit_check import collectives, hlo_facts
from tests.support import ROOT

pytestmark = pytest.mark.skipif(importlib.util.find_spec("libtpu") is None, reason="needs libtpu (.[tpu])")

# distil_tiny's shape with a teacher top-k in every row; L = 512 is not any width of the model
SHAPE = ["data.seq_len=512", "data.batch_size=8", "mesh.data=1", "mesh.fsdp=4", "model.dtype=bfloat16",
         "model.int8_matmul=true", "model.remat=full", "loss_chunk=128"]


class _Report:
    def __init__(self, hlo, traffic):
        self.hlo, self.traffic = hlo, traffic


def _report(*extra):
    """The facts of the step compiled for a v5p-8 slice (4 chips, 2 rows each), as fit-check reads them."""
    cfg = apply_overrides(load_recipe(ROOT / "recipes" / "distill_tiny.py"), SHAPE + list(extra))
    lowered, _ = fit_check.lower_step(cfg, fit_check.topology("v5p-8"), teacher_k=8)
    text = lowered.compile().as_text()
    return _Report(hlo_facts.facts(text, seq_len=512, vocab_size=cfg.model.vocab_size, rows=2),
                   collectives.traffic(text, 4))


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


def test_fsdp_moves_two_bit_codes_and_bf16_gradients(two_and_four_layers):
    for report, layers in zip(two_and_four_layers, (2, 4)):
        gathers = [c for c in report.traffic.collectives if c.kind == "all-gather"]
        # distil_tiny's block (D 256, 4 / 2 heads of 64, FFN 768): 786,432 codes, 196,608 bytes packed, each
        # gathered in the forward and again in the backward's recompute
        assert sum(c.array_bytes * c.runs for c in gathers if c.dtype == "u8") == layers * 2 * 196_608
        assert not [c for c in gathers if c.dtype in ("s8", "f32")]
        scatters = [c for c in report.traffic.collectives if c.kind == "reduce-scatter"]
        # every kernel's gradient, once per layer, in bf16: the same 786,432 values at 2 bytes
        assert sum(c.array_bytes * c.runs for c in scatters if c.dtype == "bf16") >= layers * 2 * 786_432
        assert not [c for c in scatters if c.dtype == "f32" and c.array_bytes < 49152 * 256 * 4]
        head = [c for c in gathers if c.dtype == "bf16" and c.array_bytes == 49152 * 256 * 2]
        assert head and all(c.runs == 1 for c in head)   # once per step (4 loss blocks would make it 4 or 8)
