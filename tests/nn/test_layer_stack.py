"""Stacked, scanned blocks: the same network as a loop over layers, any remat policy, one block in the program,
and the per-layer view every exporter and importer reads."""

import subprocess
import sys

import jax
import jax.numpy as jnp
import numpy as np
import orbax.checkpoint as ocp
import pytest
from flax import nnx
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

from bitjax import sharding
from bitjax.config import TrainConfig, apply_overrides
from bitjax.errors import ConfigError
from bitjax.nn import layer_stack
from bitjax.nn.attention import AttentionMask
from bitjax.nn.layers import QuantStrength
from bitjax.nn.model_config import REMAT_POLICIES, ModelConfig
from bitjax.nn.transformer import Block, Transformer
from bitjax.run import legacy_layers

SMALL = dict(vocab_size=64, d_model=32, n_layers=3, n_heads=4, n_kv_heads=2, head_dim=8, d_ff=48)


def _model(**kw):
    return Transformer(ModelConfig.tiny(**{**SMALL, **kw}), rngs=nnx.Rngs(0))


def _batch():
    tokens_BL = jax.random.randint(jax.random.key(1), (2, 7), 0, SMALL["vocab_size"])
    segment_ids_BL = jnp.asarray([[1, 1, 1, 2, 2, 2, 0], [1, 1, 1, 1, 1, 1, 1]], jnp.int32)
    return tokens_BL, segment_ids_BL


def _unrolled(model: Transformer, tokens_BL, segment_ids_BL):
    """The reference: a Python loop calling one Block per layer, each merged from its slice of the stack."""
    B, L = tokens_BL.shape
    positions_BL = jnp.broadcast_to(jnp.arange(L, dtype=jnp.int32), (B, L))
    mask = AttentionMask(segment_ids_BL=segment_ids_BL)
    graphdef, layers_state = nnx.split(model.layers)
    x_BLD = model.embed_tokens(tokens_BL).astype(model.cfg.compute_dtype)
    for i in range(model.cfg.n_layers):
        block = nnx.merge(graphdef, jax.tree.map(lambda x, i=i: x[i], layers_state))
        assert isinstance(block, Block)
        x_BLD, _ = block(x_BLD, positions_BL, mask)
    return model.head(x_BLD)


def _loss_and_grads(model: Transformer, forward, tokens_BL, segment_ids_BL):
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)

    def loss(params):
        logits_BLV = forward(nnx.merge(graphdef, params, rest), tokens_BL, segment_ids_BL)
        return jnp.sum(jax.nn.log_softmax(logits_BLV)[..., 0] * jnp.arange(1, 8)[None, :]), logits_BLV

    (loss, logits_BLV), grads = jax.jit(jax.value_and_grad(loss, has_aux=True))(params)
    return loss, grads, logits_BLV


@pytest.mark.parametrize("quant", ["ternary", "none"])
def test_scanned_model_equals_a_loop_over_layers_in_float64(quant):
    with jax.enable_x64(True):
        model = _model(dtype="float64", quant=quant)
        tokens_BL, segment_ids_BL = _batch()
        scanned = _loss_and_grads(model, lambda m, t, s: m(t, s), tokens_BL, segment_ids_BL)
        unrolled = _loss_and_grads(model, _unrolled, tokens_BL, segment_ids_BL)
        np.testing.assert_allclose(scanned[2], unrolled[2], rtol=1e-12, atol=1e-12)   # logits
        np.testing.assert_allclose(scanned[0], unrolled[0], rtol=1e-12)
        for a, b in zip(jax.tree.leaves(scanned[1]), jax.tree.leaves(unrolled[1]), strict=True):
            assert a.dtype == jnp.float64 and a.shape == b.shape
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-12)
        assert float(jnp.abs(scanned[1]["layers"]["mlp"]["up_proj"]["kernel"][...][2]).max()) > 0


def test_every_remat_policy_gives_the_same_loss_and_grads():
    with jax.enable_x64(True):
        tokens_BL, segment_ids_BL = _batch()
        results = {remat: _loss_and_grads(_model(dtype="float64", remat=remat), lambda m, t, s: m(t, s),
                                          tokens_BL, segment_ids_BL) for remat in REMAT_POLICIES}
    reference = results["none"]
    for remat, (loss, grads, _) in results.items():
        np.testing.assert_allclose(loss, reference[0], rtol=1e-12, err_msg=remat)
        for a, b in zip(jax.tree.leaves(grads), jax.tree.leaves(reference[1]), strict=True):
            np.testing.assert_allclose(a, b, rtol=1e-12, atol=1e-14, err_msg=remat)


def test_remat_accepts_old_booleans_and_rejects_unknown_names():
    assert ModelConfig(remat=True).remat == "full" and ModelConfig(remat=False).remat == "none"
    base = TrainConfig()
    assert apply_overrides(base, ["model.remat=dots_saveable"]).model.remat == "dots_saveable"
    assert apply_overrides(base, ["model.remat=true"]).model.remat == "full"   # the old spelling
    with pytest.raises(ConfigError, match=r"^--set model.remat=offload: expected one of none, full, dots_saveable$"):
        apply_overrides(base, ["model.remat=offload"])
    # A recipe's own value, checked by ModelConfig (outside the test-time type checker, as users run it).
    code = ("from bitjax.model import ModelConfig\ntry: ModelConfig(remat='offload')\n"
            "except Exception as e: print(type(e).__name__, e)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out == "ConfigError model.remat='offload'; use one of 'none', 'full', 'dots_saveable'\n"


def _compiled_train_step_text(n_layers: int, remat: str) -> str:
    model = _model(n_layers=n_layers, remat=remat)
    graphdef, params, rest = nnx.split(model, nnx.Param, ...)
    tokens_BL, segment_ids_BL = _batch()

    def loss(params):
        return jnp.mean(nnx.merge(graphdef, params, rest)(tokens_BL, segment_ids_BL))

    return jax.jit(jax.grad(loss)).lower(params).compile().as_text()


def test_compiled_program_holds_one_block_whatever_the_depth():
    """Matmuls in the compiled gradient: equal for 2 and 6 layers (a loop over layers would triple them)."""
    counts = {}
    for n_layers in (2, 6):
        text = _compiled_train_step_text(n_layers, "full")
        counts[n_layers] = text.count(" dot(")
    assert counts[2] == counts[6] > 0, counts


def test_per_layer_view_round_trips_and_names_every_layer():
    model = _model()
    params = nnx.state(model, nnx.Param)
    stacked = {sharding.path_name(p): np.asarray(x) for p, x in jax.tree_util.tree_flatten_with_path(params)[0]}
    per_layer = layer_stack.flat_per_layer(params)
    assert "layers.mlp.up_proj.kernel" in stacked and stacked["layers.mlp.up_proj.kernel"].shape == (3, 32, 48)
    assert {f"layers.{i}.self_attn.q_proj.kernel" for i in range(3)} <= set(per_layer)
    assert not any(layer_stack.is_stacked(name) for name in per_layer)
    np.testing.assert_array_equal(per_layer["layers.2.mlp.up_proj.kernel"], stacked["layers.mlp.up_proj.kernel"][2])
    back = layer_stack.stack(per_layer)
    assert sorted(back) == sorted(stacked)
    for name, value in stacked.items():
        np.testing.assert_array_equal(back[name], value)
    shapes = layer_stack.per_layer_shapes(params)
    assert list(shapes) == list(per_layer) and shapes["layers.1.mlp.down_proj.kernel"].shape == (48, 32)
    # map_per_layer: called with per-layer names and shapes, its results restacked
    seen = []
    filled = layer_stack.map_per_layer(lambda name, leaf: seen.append(name) or jnp.full(leaf.shape, len(seen)),
                                       params)
    assert filled["layers"]["mlp"]["up_proj"]["kernel"][...].shape == (3, 32, 48)
    assert "layers.2.mlp.up_proj.kernel" in seen and "embed_tokens.embedding" in seen


def test_layers_are_initialised_independently():
    kernel_SDF = nnx.state(_model(), nnx.Param)["layers"]["mlp"]["gate_proj"]["kernel"][...]
    assert not np.allclose(kernel_SDF[0], kernel_SDF[1]) and not np.allclose(kernel_SDF[1], kernel_SDF[2])
    np.testing.assert_allclose(np.std(np.asarray(kernel_SDF)), 0.02, rtol=0.1)


@pytest.mark.parametrize("path, shape, spec", [
    ("params.layers.mlp.gate_proj.kernel", (3, 256, 768), P(None, "fsdp", "tensor")),
    ("params.layers.self_attn.o_proj.kernel", (2, 256, 256), P(None, "tensor", "fsdp")),
    ("opt_state.1.inner_state.0.mu.layers.mlp.down_proj.kernel", (3, 768, 256), P(None, "tensor", "fsdp")),
    ("params.layers.mlp.ffn_sub_norm.scale", (4, 768), P(None, "tensor")),
    ("params.layers.input_layernorm.scale", (4, 256), P()),
    ("params.layers.0.mlp.gate_proj.kernel", (256, 768), P("fsdp", "tensor")),   # the per-layer view
])
def test_the_layer_axis_is_never_split(path, shape, spec):
    assert sharding.spec_for(path, shape, AbstractMesh((2, 2, 2), sharding.AXES)) == spec


def test_a_per_layer_checkpoint_restores_into_the_stacked_state(tmp_path):
    model = _model()
    params = nnx.state(model, nnx.Param)
    per_layer = layer_stack.flat_per_layer(params)
    nested = {}
    for name, value in per_layer.items():   # the layout checkpoints had before the blocks were stacked
        node = nested.setdefault("params", {})
        for key in name.split("."):
            node = node.setdefault(key, {})
        node["value"] = value
    nested["step"] = np.asarray(5, np.int32)
    ocp.PyTreeCheckpointer().save(tmp_path / "state", nested)
    assert legacy_layers.has_per_layer_names(tmp_path / "state")

    mesh = jax.sharding.Mesh(np.asarray(jax.devices()[:1]).reshape(1, 1, 1), sharding.AXES)
    abstract = {"params": jax.eval_shape(lambda: params)}
    target = jax.tree.map(lambda x, s: jax.ShapeDtypeStruct(x.shape, x.dtype, sharding=s), abstract,
                          sharding.tree_shardings(abstract, mesh))
    for to_host in (False, True):
        restored = legacy_layers.restore_stacked(tmp_path / "state", target, to_host=to_host)["params"]
        for a, b in zip(jax.tree.leaves(restored), jax.tree.leaves(params), strict=True):
            assert a.shape == b.shape and isinstance(a, np.ndarray) == to_host
            np.testing.assert_array_equal(a, b)

    ocp.PyTreeCheckpointer().save(tmp_path / "stacked", {"params": params})
    assert not legacy_layers.has_per_layer_names(tmp_path / "stacked")


def test_zero_fraction_metrics_keep_per_layer_names():
    from bitjax.training.trainer import zero_fractions

    params = nnx.state(_model(), nnx.Param)
    zeros = zero_fractions(params)
    assert sorted(zeros) == sorted(f"layers.{i}.{m}" for i in range(3) for m in (
        "self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj", "self_attn.o_proj",
        "mlp.gate_proj", "mlp.up_proj", "mlp.down_proj"))
    from bitjax.nn import quant
    kernel = params["layers"]["mlp"]["up_proj"]["kernel"][...][1]
    assert float(zeros["layers.1.mlp.up_proj"]) == float(jnp.mean(quant.ternary_codes(kernel)[0] == 0))


def test_stacked_quant_strength_is_one_variable_per_layer():
    _, _, quant_vars = nnx.split(_model(), nnx.Param, QuantStrength)
    assert {x.shape for x in jax.tree.leaves(quant_vars)} == {(3,)}
