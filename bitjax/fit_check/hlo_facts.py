"""Facts read from a compiled (optimized) HLO module's text: big buffers, int8 matmuls, collectives.

fit-check prints them and the tests hold the train step to them: no L x L attention-score array, no float32
(B, L, V) logits, BitLinear matmuls as `s8 x s8 -> s32`, and how many all-reduces the step issues. The text
is what `jax.jit(f).lower(...).compile().as_text()` returns (TPU or CPU compiler alike).
"""

from __future__ import annotations

import dataclasses
import math
import re

# `%name = f32[2,128]{1,0:T(8,128)} opcode(%a, %b), ...`; tuples and token types do not match (not arrays).
_INSTRUCTION = re.compile(r"^\s*(?:ROOT\s+)?%?([\w.\-]+)\s*=\s*([a-z]+\d*)\[([\d,]*)\][^ ]*\s+([\w\-]+)\((.*)$")
_OPERAND = re.compile(r"%([\w.\-]+)")
_FLOATS = ("f64", "f32", "bf16", "f16")


@dataclasses.dataclass(frozen=True)
class Instruction:
    name: str
    dtype: str                  # f32, bf16, s8, s32, pred, ...
    shape: tuple[int, ...]
    opcode: str                 # convolution, dot, all-reduce, fusion, ...
    operands: tuple[str, ...]   # operand names, in order

    @property
    def size(self) -> int:
        return math.prod(self.shape)


def parse(hlo_text: str) -> list[Instruction]:
    """Every array-valued instruction of every computation in the module."""
    out = []
    for line in hlo_text.splitlines():
        m = _INSTRUCTION.match(line)
        if not m:
            continue
        name, dtype, dims, opcode, rest = m.groups()
        shape = tuple(int(d) for d in dims.split(",") if d)
        args = rest.split("),")[0]   # operands end at the first "), " (attributes follow)
        out.append(Instruction(name, dtype, shape, opcode, tuple(_OPERAND.findall(args))))
    return out


@dataclasses.dataclass(frozen=True)
class HloFacts:
    """What the acceptance checks of the train step read."""

    score_buffers: tuple[Instruction, ...]       # floating arrays whose last two dims are (L, L)
    full_logits_f32: tuple[Instruction, ...]     # float32 arrays holding a vocab axis over every position
    int8_matmuls: int                            # dots/convolutions of two s8 operands into s32
    float_matmuls: int                           # dots/convolutions with floating-point operands
    all_reduces: int                             # all-reduce ops in the program text (a loop body counts once)
    while_loops: int                             # scanned bodies (layers, loss chunks)


def facts(hlo_text: str, *, seq_len: int, vocab_size: int, rows: int) -> HloFacts:
    """`vocab_size` and `rows`: the vocabulary and the batch rows one device holds (after tensor and batch
    splits). A float32 array with a vocab axis and at least rows * seq_len * vocab elements is a logits copy
    over the whole sequence; a chunked head holds (rows, chunk, vocab) blocks, smaller by seq_len / chunk."""
    instructions = parse(hlo_text)
    dtype_of = {i.name: i.dtype for i in instructions}
    scores = tuple(i for i in instructions if i.dtype in _FLOATS and len(i.shape) >= 2
                   and i.shape[-2:] == (seq_len, seq_len))
    logits = tuple(i for i in instructions if i.dtype == "f32" and vocab_size in i.shape
                   and i.size >= rows * seq_len * vocab_size)
    matmuls = [i for i in instructions if i.opcode in ("dot", "convolution")]
    int8 = sum(1 for i in matmuls if i.dtype == "s32"
               and all(dtype_of.get(o) == "s8" for o in i.operands[:2]) and len(i.operands) >= 2)
    floats = sum(1 for i in matmuls if i.dtype in _FLOATS)
    all_reduces = sum(1 for i in instructions if i.opcode in ("all-reduce", "all-reduce-start"))
    loops = sum(1 for line in hlo_text.splitlines() if re.search(r"\swhile\(", line))
    return HloFacts(scores, logits, int8, floats, all_reduces, loops)


def describe(f: HloFacts) -> str:
    """One line for fit-check's report."""
    def shapes(items):
        return ", ".join(sorted({f"{i.dtype}{list(i.shape)}" for i in items})[:3]) or "none"
    return (f"L x L score arrays: {shapes(f.score_buffers)}; float32 full-sequence logits: "
            f"{shapes(f.full_logits_f32)}; matmuls s8 x s8 -> s32: {f.int8_matmuls}, floating: {f.float_matmuls}; "
            f"all-reduces: {f.all_reduces}; loops: {f.while_loops}")
