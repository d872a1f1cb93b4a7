"""The collectives fit-check reads from a compiled step (bitjax.fit_check.collectives): array and wire bytes by
kind and dtype, group sizes, loops counted by their trip counts; and a real FSDP step on 8 simulated devices,
its BitLinear gathers counted by hand (the run of benchmarks/code_gathers.py, its smoke test too)."""

import json
import os
import subprocess
import sys
from collections import defaultdict

import pytest

from bitjax.fit_check import collectives
from tests.support import ROOT, TINY

HLO = """HloModule step

%inner_body (p: (s32[], s8[4,8])) -> (s32[], s8[4,8]) {
  %p = (s32[], s8[4,8]) parameter(0)
  %x = s8[4,8]{1,0} get-tuple-element(%p), index=1
  %ag.2 = s8[16,8]{1,0} all-gather(%x), channel_id=3, replica_groups=[2,4]<=[8], dimensions={0}
  ROOT %t = (s32[], s8[4,8]) tuple(%i, %x)
}

%inner_cond (p: (s32[], s8[4,8])) -> pred[] {
  %p = (s32[], s8[4,8]) parameter(0)
  %c = s32[] constant(3)
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] compare(%i, %c), direction=LT
}

%body (p: (s32[], u8[8,16])) -> (s32[], u8[8,16]) {
  %p = (s32[], u8[8,16]) parameter(0)
  %x = u8[8,16]{1,0} get-tuple-element(%p), index=1
  %ag = u8[32,16]{1,0} all-gather(%x), replica_groups=mesh['axis_0'=4,'axis_1'=2] {'axis_0'}, dimensions={0}
  %w2 = (s32[], s8[4,8]) while(%t0), condition=%inner_cond, body=%inner_body
  ROOT %t = (s32[], u8[8,16]) tuple(%i, %x)
}

%wrapped_compare_computation (a: s32[], b: s32[]) -> pred[] {
  %a = s32[] parameter(0)
  %b = s32[] parameter(1)
  ROOT %lt = pred[] compare(%a, %b), direction=LT
}

%cond (p: (s32[], u8[8,16])) -> pred[] {
  %p = (s32[], u8[8,16]) parameter(0)
  %c = s32[] constant(6)
  %i = s32[] get-tuple-element(%p), index=0
  ROOT %lt = pred[] fusion(%i, %c), kind=kLoop, calls=%wrapped_compare_computation
}

%odd_cond (p: (s32[], f32[2])) -> pred[] {
  %p = (s32[], f32[2]) parameter(0)
  %c = s32[] constant(6)
  %d = s32[] constant(2)
  ROOT %lt = pred[] compare(%c, %d), direction=LT
}

%odd_body (p: (s32[], f32[2])) -> (s32[], f32[2]) {
  %p = (s32[], f32[2]) parameter(0)
  %y = f32[256]{0} all-reduce(%z), replica_groups={{0,1}}, to_apply=%add
  ROOT %t = (s32[], f32[2]) tuple(%i, %x)
}

%all-reduce-scatter.1 (input: f32[64,16]) -> f32[16,16] {
  %input = f32[64,16]{1,0} parameter(0)
  %ar = f32[64,16]{1,0} all-reduce(%input), channel_id=2, replica_groups={{0,1,2,3}}, to_apply=%add
  ROOT %ds = f32[16,16]{1,0} dynamic-slice(%ar, %o, %o), dynamic_slice_sizes={16,16}
}

ENTRY %main (a: f32[2]) -> f32[2] {
  %w = (s32[], u8[8,16]) while(%t0), condition=%cond, body=%body
  %w3 = (s32[], f32[2]) while(%t1), condition=%odd_cond, body=%odd_body
  %f = f32[16,16]{1,0} fusion(%g), kind=kCustom, calls=%all-reduce-scatter.1
  %ar2 = (f32[2]{0}, /*index=1*/f32[3]{0}) all-reduce(%a, %b), channel_id=4, replica_groups=[2,4]<=[8], to_apply=%add
  %rs = bf16[4,16]{1,0} reduce-scatter(%y), channel_id=5, replica_groups={{0,1,2,3}}, dimensions={0}, to_apply=%add
  %cp = (s8[1,48]{1,0}, s8[1,48]{1,0}, u32[], u32[]) collective-permute-start(%z), source_target_pairs={{0,1},{1,0}}
  %a2a = f32[8,8]{1,0} all-to-all(%q), replica_groups={{0,1}}, dimensions={0}
  ROOT %r = f32[2]{0} add(%a, %a)
}
"""


def _by(traffic):
    out = defaultdict(list)
    for c in traffic.collectives:
        out[(c.kind, c.dtype)].append(c)
    return out


def test_kinds_sizes_groups_and_runs_of_a_module():
    t = collectives.traffic(HLO, n_devices=8)
    by = _by(t)
    (ag,) = by[("all-gather", "u8")]        # in a loop of 6: its mesh-axes group is the 4 of axis_0
    assert (ag.array_bytes, ag.group, ag.runs) == (32 * 16, 4, 6)
    assert ag.wire_bytes == 32 * 16 * 3 / 4 * 6
    (inner,) = by[("all-gather", "s8")]     # a loop of 3 inside the loop of 6; iota groups [2,4]: 4 devices
    assert (inner.array_bytes, inner.group, inner.runs) == (16 * 8, 4, 18)
    (rs_tpu,) = by[("reduce-scatter", "f32")]   # TPU's all-reduce-scatter fusion is a reduce-scatter
    assert (rs_tpu.array_bytes, rs_tpu.group) == (64 * 16 * 4, 4) and rs_tpu.wire_bytes == 64 * 16 * 4 * 3 / 4
    (rs,) = by[("reduce-scatter", "bf16")]  # its shape is the scattered piece: the array is group times it
    assert rs.array_bytes == 4 * 16 * 2 * 4
    (ar,) = [c for c in by[("all-reduce", "f32")] if c.group == 4]   # combined: its tuple's arrays summed
    assert (ar.array_bytes, ar.group) == ((2 + 3) * 4, 4) and ar.wire_bytes == 2 * 3 / 4 * 20
    (cp,) = by[("collective-permute", "s8")]
    assert (cp.array_bytes, cp.wire_bytes) == (48, 48)
    (a2a,) = by[("all-to-all", "f32")]
    assert a2a.wire_bytes == 8 * 8 * 4 / 2


def test_a_loop_whose_trip_count_cannot_be_read_is_counted_once_and_reported():
    t = collectives.traffic(HLO, n_devices=8)
    odd = [c for c in t.collectives if c.kind == "all-reduce" and c.array_bytes == 256 * 4]
    assert [c.runs for c in odd] == [1] and t.unknown_trip_counts == 1


def test_describe_names_kinds_by_wire_bytes():
    text = "ENTRY %m (a: u8[2]) -> u8[2] {\n  %g = u8[4000000]{0} all-gather(%a), replica_groups={{0,1}}\n}\n"
    assert collectives.traffic(text, 2).describe() == "all-gather u8 0.00 GB"   # 2 MB on the wire
    assert collectives.traffic("", 2).describe() == "none"


# the tiny model (D 256, 4 heads / 2 KV heads of 64, FFN 768) in two layers, split over 8 devices by FSDP
FSDP_SHAPE = ["model.n_layers=2", "model.vocab_size=512", "model.dtype=bfloat16", "model.int8_matmul=true",
              "model.remat=full", "data.seq_len=64", "data.batch_size=8", "loss_chunk=64",
              "mesh.data=1", "mesh.fsdp=8", "mesh.tensor=1"]


def _fsdp_step_collectives() -> dict:
    """benchmarks/code_gathers.py on 8 simulated CPU devices: the step with the codes packed and without."""
    env = dict(os.environ, JAX_PLATFORMS="cpu", PYTHONPATH=str(ROOT),
               XLA_FLAGS="--xla_force_host_platform_device_count=8")
    out = subprocess.run([sys.executable, "-m", "benchmarks.code_gathers", "--recipe", TINY, "--json",
                          *(a for o in FSDP_SHAPE for a in ("--set", o))], env=env,
                         cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert out.returncode == 0, out.stderr[-3000:]
    line = next(x for x in out.stdout.splitlines() if x.startswith("COLLECTIVES "))
    return json.loads(line[len("COLLECTIVES "):])


@pytest.fixture(scope="module")
def fsdp_step():
    return _fsdp_step_collectives()


def _gathered(variant: dict, dtype: str) -> tuple[int, float]:
    found = [c for c in variant["collectives"] if c["kind"] == "all-gather" and c["dtype"] == dtype]
    return sum(c["array_bytes"] * c["runs"] for c in found), sum(c["wire_bytes"] for c in found)


def test_fsdp_step_gathers_its_bitlinear_codes_at_two_bits_as_counted_by_hand(fsdp_step):
    """The tiny model's two blocks split over 8 devices. Per block, the 7 BitLinear kernels hold
    D(N + 2K)H + NHD + 3DF = 256*(4 + 2*2)*64 + 4*64*256 + 3*256*768 = 786,432 codes; each is gathered in the
    forward and again in the backward's recompute (remat=full): 2 blocks x 2 passes x 786,432 / 4 bytes."""
    assert fsdp_step["devices"] == 8
    packed, unpacked = fsdp_step["packed"], fsdp_step["unpacked"]
    assert packed["unknown_trip_counts"] == unpacked["unknown_trip_counts"] == 0
    codes_per_block = 256 * (4 + 2 * 2) * 64 + 4 * 64 * 256 + 3 * 256 * 768
    by_hand = 2 * 2 * codes_per_block // 4
    array, wire = _gathered(packed, "u8")
    assert array == by_hand and wire == pytest.approx(by_hand * 7 / 8)
    assert _gathered(packed, "s8") == (0, 0)
    # before packing the gathers carry one byte a code: 4x as many bytes, less what the CPU compiler chose not
    # to gather twice in that program (measured: one (256, 768) kernel of each block, 3.5x in all)
    assert _gathered(unpacked, "u8") == (0, 0) and _gathered(unpacked, "s8")[0] >= 3 * by_hand
