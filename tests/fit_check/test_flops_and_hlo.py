"""Analytic step FLOPs (the MFU numerator) and the facts fit-check reads from compiled HLO."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from bitjax.fit_check import flops, hlo_facts
from bitjax.nn.model_config import ModelConfig
from bitjax.nn.transformer import count_params


@pytest.mark.parametrize("preset", ["tiny", "bitnet_125m", "bitnet_700m", "bitnet_2b4t"])
def test_matmul_params_are_the_model_kernels_and_head(preset):
    model = getattr(ModelConfig, preset)()
    counts = count_params(model)
    norms = model.n_layers * (2 * model.d_model + model.n_heads * model.head_dim + model.d_ff) + model.d_model
    # the tied embedding is the LM head: counted once, as a matmul weight
    assert flops.matmul_params(model) == counts["non_embedding"] - norms + counts["embedding"]


def test_model_flops_of_the_125m_preset_by_hand():
    model = ModelConfig.bitnet_125m()
    layer = 768 * (12 + 2 * 4) * 64 + 12 * 64 * 768 + 3 * 768 * 2048
    n = 12 * layer + 49152 * 768
    expected = 6 * n + 6 * 12 * 12 * 64 * 2048     # causal attention: half of PaLM's 12 n h L
    assert flops.model_flops_per_token(model, 2048) == expected
    model_flops, hardware = flops.step_flops(model, 4, 2048)
    assert model_flops == expected * 4 * 2048 and hardware == model_flops   # no remat, no recompute


def test_full_remat_recomputes_one_forward_of_the_blocks():
    model = ModelConfig.bitnet_125m(remat=True)
    model_flops, hardware = flops.step_flops(model, 1, 2048)
    blocks = flops.matmul_params(model) - 49152 * 768
    assert hardware - model_flops == pytest.approx(2048 * (2 * blocks + 2 * 12 * 12 * 64 * 2048))


def _compiled_text(f, *args):
    return jax.jit(f).lower(*args).compile().as_text()


def test_facts_find_an_int8_matmul_and_count_float_ones():
    x = jnp.ones((8, 32), jnp.int8)
    w = jnp.ones((32, 16), jnp.int8)
    int8 = _compiled_text(lambda a, b: jax.lax.dot(a, b, preferred_element_type=jnp.int32), x, w)
    f = hlo_facts.facts(int8, seq_len=8, vocab_size=16, rows=1)
    assert f.int8_matmuls == 1 and f.float_matmuls == 0
    floats = _compiled_text(lambda a, b: a.astype(jnp.float32) @ b.astype(jnp.float32), x, w)
    f = hlo_facts.facts(floats, seq_len=8, vocab_size=16, rows=1)
    assert f.int8_matmuls == 0 and f.float_matmuls == 1


def test_facts_find_score_arrays_and_full_logits_but_not_chunks():
    q_BLH = jnp.ones((2, 64, 16), jnp.float32)
    scores = _compiled_text(lambda q: jax.nn.softmax(jnp.einsum("blh,bmh->blm", q, q), -1).sum(), q_BLH)
    assert hlo_facts.facts(scores, seq_len=64, vocab_size=1000, rows=2).score_buffers
    h_BLD, w_DV = jnp.ones((2, 64, 16)), jnp.ones((16, 1000))
    full = _compiled_text(lambda h, w: jax.nn.logsumexp(h @ w, -1), h_BLD, w_DV)
    assert hlo_facts.facts(full, seq_len=64, vocab_size=1000, rows=2).full_logits_f32

    def chunked(h, w):   # 4 chunks of 16 positions, one (2, 16, V) block live at a time
        return jax.lax.map(lambda c: jax.nn.logsumexp(c @ w, -1), h.reshape(2, 4, 16, 16).swapaxes(0, 1))
    f = hlo_facts.facts(_compiled_text(chunked, h_BLD, w_DV), seq_len=64, vocab_size=1000, rows=2)
    assert not f.full_logits_f32 and not f.score_buffers and f.while_loops >= 1


def test_parse_reads_names_types_and_operands():
    text = ("ENTRY %main {\n  %p0 = s8[4,8]{1,0} parameter(0)\n  %p1 = s8[8,2]{1,0} parameter(1)\n"
            "  ROOT %dot.1 = s32[4,2]{1,0} dot(%p0, %p1), lhs_contracting_dims={1}, rhs_contracting_dims={0}\n}")
    instructions = hlo_facts.parse(text)
    assert [(i.name, i.dtype, i.shape, i.opcode) for i in instructions] == [
        ("p0", "s8", (4, 8), "parameter"), ("p1", "s8", (8, 2), "parameter"), ("dot.1", "s32", (4, 2), "dot")]
    assert instructions[-1].operands == ("p0", "p1") and np.prod(instructions[-1].shape) == 8
