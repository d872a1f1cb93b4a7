"""Codes packed four to a byte for FSDP's all-gather (bitjax.nn.ternary_gather), and the plans the sharding table
makes for them. The compiled steps that gather them: tests/fit_check/test_collectives.py (8 CPU devices) and
tests/fit_check/test_compiled_step.py (a TPU slice)."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
from flax import nnx
from jax.sharding import AbstractMesh
from jax.sharding import PartitionSpec as P

from bitjax import sharding
from bitjax.export.packing import pack_ternary
from bitjax.nn import ternary_gather
from bitjax.nn.layers import BitLinear, ternarize_once


def _codes(shape, seed=0):
    return jnp.asarray(np.random.default_rng(seed).integers(-1, 2, size=shape), jnp.int8)


def test_one_slice_is_the_hugging_face_layout():
    codes_OI = _codes((16, 5))
    np.testing.assert_array_equal(ternary_gather.pack(codes_OI, 0, 1), pack_ternary(np.asarray(codes_OI)))


@pytest.mark.parametrize("axis, shards", [(0, 4), (1, 2), (1, 3)])
def test_each_slice_is_packed_alone_and_the_round_trip_is_exact(axis, shards):
    """Device s packs only its own slice: the packed array is the slices' packs side by side, so packing
    moves nothing between devices, and unpacking the gathered whole gives the codes back."""
    codes = _codes((32, 24) if axis == 0 else (6, 24 * shards // 2))
    packed = ternary_gather.pack(codes, axis, shards)
    assert packed.dtype == jnp.uint8 and packed.shape[axis] == codes.shape[axis] // 4
    slices = jnp.split(codes, shards, axis)
    by_slice = [pack_ternary(np.asarray(s if axis == 0 else s.T)) for s in slices]
    expected = np.concatenate(by_slice if axis == 0 else [b.T for b in by_slice], axis)
    np.testing.assert_array_equal(packed, expected)
    np.testing.assert_array_equal(ternary_gather.unpack(packed, axis, shards), codes)


def test_stacked_kernels_pack_along_the_axis_after_the_layers():
    plan = ternary_gather.GatherPlan(axis=0, shards=2, sharded=P("fsdp", None), gathered=P())
    codes_ZDF = _codes((3, 16, 8))
    packed_ZQF = ternary_gather.pack_for_gather(codes_ZDF, plan)   # no mesh in the trace: no constraint
    assert packed_ZQF.shape == (3, 4, 8)
    for z in range(3):
        np.testing.assert_array_equal(ternary_gather.gather(packed_ZQF[z], plan), codes_ZDF[z])


def test_slices_not_a_multiple_of_four_are_refused():
    with pytest.raises(ValueError, match="not 2 slices of a multiple of 4"):
        ternary_gather.pack(_codes((12, 4)), 0, 2)


MESH_FSDP4 = AbstractMesh((1, 4, 1), sharding.AXES)


@pytest.mark.parametrize("path, shape, axis, gathered", [
    ("layers.mlp.gate_proj.kernel", (2, 256, 768), 0, P(None, "tensor")),     # (D, F): fsdp splits the input
    ("layers.mlp.down_proj.kernel", (2, 768, 256), 1, P("tensor", None)),     # (F, D): fsdp splits the output
    ("layers.self_attn.q_proj.kernel", (2, 256, 256), 0, P(None, "tensor")),
])
def test_the_sharding_table_plans_the_gather(path, shape, axis, gathered):
    plan = sharding.code_gather_plan(path, shape, MESH_FSDP4)
    assert (plan.axis, plan.shards, plan.gathered) == (axis, 4, gathered)
    assert plan.sharded[axis] == "fsdp"


def test_tensor_split_stays_in_the_gathered_placement():
    mesh = AbstractMesh((1, 2, 2), sharding.AXES)
    plan = sharding.code_gather_plan("layers.mlp.up_proj.kernel", (2, 256, 768), mesh)
    assert plan.sharded == P("fsdp", "tensor") and plan.gathered == P(None, "tensor")


def test_no_plan_without_an_fsdp_split_or_with_slices_not_a_multiple_of_four():
    assert sharding.code_gather_plan("layers.mlp.up_proj.kernel", (2, 256, 768),
                                     AbstractMesh((4, 1, 1), sharding.AXES)) is None
    # 8 devices split 8 rows: slices of one row cannot be packed four to a byte
    assert sharding.code_gather_plan("layers.mlp.up_proj.kernel", (2, 8, 768),
                                     AbstractMesh((1, 8, 1), sharding.AXES)) is None


def test_gathered_codes_feed_the_same_layer_output():
    """A BitLinear whose codes come packed gives the output of one that computes its own codes."""
    layer = BitLinear(32, 8, int8_matmul=True, rngs=nnx.Rngs(0))
    x = jax.random.normal(jax.random.key(1), (2, 3, 32))
    plain = layer(x)
    plan = ternary_gather.GatherPlan(axis=0, shards=2, sharded=P("fsdp"), gathered=P())
    ternarize_once(layer, lambda path, shape: plan)
    assert layer.ternary.get_value()[0].dtype == jnp.uint8
    np.testing.assert_array_equal(layer(x), plain)
