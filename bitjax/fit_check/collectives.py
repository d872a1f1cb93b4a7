"""The bytes a compiled step's collectives move per step and device, by kind and dtype, read from its HLO text.

Each collective's array comes from its shape (a tuple's arrays summed: the compiler combines small ones), its
group size from `replica_groups` (explicit lists, iota `[G,S]<=[N]`, or mesh axes), and how often it runs from
the call graph: a computation runs as often as the computations that call it, and a while loop's body its trip
count times more (the `constant(N)` its condition compares the counter against, as `jax.lax.scan` emits it).
So the scanned layers' all-gathers count once per layer and pass, the loss blocks' once per block.

On the wire, per device, as a ring moves them (what fit-check's interconnect term prices):

  all-gather           (n-1)/n x the gathered array
  reduce-scatter       (n-1)/n x the array before it is scattered (TPU's "all-reduce-scatter" fusions count here)
  all-reduce           2 (n-1)/n x the array
  all-to-all           (n-1)/n x the array
  collective-permute   the array (the steps of an all-gather the compiler split into neighbour exchanges, to
                       overlap them with the matmul that reads it)
"""

from __future__ import annotations

import dataclasses
import math
import re
from collections import defaultdict

KINDS = ("all-gather", "reduce-scatter", "all-reduce", "all-to-all", "collective-permute")
BYTES_PER_ELEMENT = {"pred": 1, "s4": 0.5, "u4": 0.5, "s8": 1, "u8": 1, "f8e4m3fn": 1, "f8e5m2": 1, "s16": 2,
                     "u16": 2, "f16": 2, "bf16": 2, "s32": 4, "u32": 4, "f32": 4, "s64": 8, "u64": 8, "f64": 8}

_HEADER = re.compile(r"^(ENTRY\s+)?%?([\w.\-]+)\s.*\{\s*$")
_OP = re.compile(r"=\s*(.*?)\s(all-gather|reduce-scatter|all-reduce|all-to-all|collective-permute)(-start)?\(")
_ARRAY = re.compile(r"\b([a-z]+\d*)\[([\d,]*)\]")
_CALLEE = re.compile(r"\b(?:calls|to_apply|body|condition)=%([\w.\-]+)|branch_computations=\{([^}]*)\}")
_WHILE = re.compile(r"\swhile\(.*condition=%([\w.\-]+), body=%([\w.\-]+)")
_BOUND = re.compile(r"constant\((\d+)\)")
_GROUPS_LIST = re.compile(r"replica_groups=\{\{([\d,]*)\}")
_GROUPS_IOTA = re.compile(r"replica_groups=\[(\d+),(\d+)\]<=")
_GROUPS_MESH = re.compile(r"replica_groups=mesh\[([^\]]*)\]\s*\{([^}]*)\}")


@dataclasses.dataclass(frozen=True)
class Collective:
    """One collective of the program: what it moves each time it runs, and how often it runs per step."""

    kind: str              # one of KINDS
    dtype: str             # of its (first) array
    array_bytes: float     # gathered output, array before scattering, reduced or exchanged array (per device)
    group: int             # devices taking part together
    runs: int              # per step (loop trip counts multiplied in)

    @property
    def wire_bytes(self) -> float:
        """Bytes one device sends (and receives) per step."""
        n = self.group
        share = {"all-gather": (n - 1) / n, "reduce-scatter": (n - 1) / n, "all-reduce": 2 * (n - 1) / n,
                 "all-to-all": (n - 1) / n, "collective-permute": 1.0}[self.kind]
        return self.array_bytes * share * self.runs


@dataclasses.dataclass(frozen=True)
class Traffic:
    """Every collective of one compiled step."""

    collectives: tuple[Collective, ...]
    unknown_trip_counts: int = 0     # loops whose trip count was not read: their bodies counted once

    @property
    def wire_bytes(self) -> float:
        return sum(c.wire_bytes for c in self.collectives)

    def by_kind(self) -> dict[tuple[str, str], tuple[float, float]]:
        """(kind, dtype) -> (array bytes per step, wire bytes per step), largest wire bytes first."""
        out: dict[tuple[str, str], list[float]] = defaultdict(lambda: [0.0, 0.0])
        for c in self.collectives:
            out[(c.kind, c.dtype)][0] += c.array_bytes * c.runs
            out[(c.kind, c.dtype)][1] += c.wire_bytes
        return {k: (a, w) for k, (a, w) in sorted(out.items(), key=lambda kv: -kv[1][1])}

    def describe(self) -> str:
        """`all-gather u8 0.41 GB, reduce-scatter bf16 1.20 GB, ...` (wire bytes per device and step)."""
        parts = [f"{kind} {dtype} {wire / 1e9:.2f} GB" for (kind, dtype), (_, wire) in self.by_kind().items()
                 if wire >= 1e6]
        return ", ".join(parts) or "none"


def traffic(hlo_text: str, n_devices: int) -> Traffic:
    """The collectives of a compiled module's text (`compiled.as_text()`), counted per step.

    `n_devices`: the size of a group written as `replica_groups={}` (all devices)."""
    bodies, calls, whiles = _computations(hlo_text)
    runs, unknown = _runs_per_step(bodies, calls, whiles)
    out = []
    for comp, lines in bodies.items():
        for line in lines:
            m = _OP.search(line)
            if not m or runs.get(comp, 0) == 0:
                continue
            shape, kind, start = m.groups()
            arrays = [(dtype, _elements(dims)) for dtype, dims in _ARRAY.findall(shape)
                      if dtype in BYTES_PER_ELEMENT]
            if start and kind == "all-gather":       # (operands..., outputs...)
                arrays = arrays[len(arrays) // 2:]
            elif start and kind == "collective-permute":   # (operand, output, contexts...)
                arrays = arrays[:1]
            if not arrays:
                continue
            group = _group_size(line, n_devices)
            size = sum(BYTES_PER_ELEMENT[d] * e for d, e in arrays)
            if kind == "reduce-scatter":
                size *= group                        # its shape is the scattered piece
            elif kind == "all-reduce" and comp.startswith("all-reduce-scatter"):
                kind = "reduce-scatter"              # TPU: a reduce-scatter lowered as a fusion around an all-reduce
            if group > 1 or kind == "collective-permute":
                out.append(Collective(kind, arrays[0][0], size, group, runs[comp]))
    return Traffic(tuple(out), unknown)


def _elements(dims: str) -> int:
    return math.prod(int(d) for d in dims.split(",") if d)


def _group_size(line: str, n_devices: int) -> int:
    if m := _GROUPS_MESH.search(line):
        sizes = dict(re.findall(r"'([^']+)'=(\d+)", m.group(1)))
        return math.prod(int(sizes[a]) for a in re.findall(r"'([^']+)'", m.group(2)))
    if m := _GROUPS_IOTA.search(line):
        return int(m.group(2))
    if m := _GROUPS_LIST.search(line):
        return len([d for d in m.group(1).split(",") if d])
    if "source_target_pairs" in line:
        return 2
    return n_devices


def _computations(hlo_text: str):
    """Each computation's lines, the computations each one calls, and its while loops (condition, body)."""
    bodies: dict[str, list[str]] = {}
    calls: dict[str, list[str]] = defaultdict(list)
    whiles: dict[str, list[tuple[str, str]]] = defaultdict(list)
    current = None
    for line in hlo_text.splitlines():
        if not line.startswith(" ") and (m := _HEADER.match(line)):
            current = "ENTRY" if m.group(1) else m.group(2)
            bodies[current] = []
            continue
        if current is None or not line.strip() or line.startswith("}"):
            continue
        bodies[current].append(line)
        if m := _WHILE.search(line):
            whiles[current].append(m.groups())
            continue
        for single, branches in _CALLEE.findall(line):
            calls[current] += [single] if single else re.findall(r"%([\w.\-]+)", branches)
    return bodies, calls, whiles


def _runs_per_step(bodies, calls, whiles) -> tuple[dict[str, int], int]:
    """How often each computation runs per step: 1 for ENTRY, summed over its callers (times trip counts)."""
    runs: dict[str, int] = defaultdict(int)
    unknown = 0

    def visit(comp: str, times: int, depth: int = 0):
        nonlocal unknown
        if depth > 64:   # a malformed graph; real modules nest a few levels
            return
        runs[comp] += times
        for callee in calls.get(comp, ()):
            if callee in bodies:
                visit(callee, times, depth + 1)
        for condition, body in whiles.get(comp, ()):
            trips = _trip_count(condition, bodies, calls)
            unknown += trips is None
            visit(body, times * (trips or 1), depth + 1)

    visit("ENTRY", 1)
    return runs, unknown


def _trip_count(condition: str, bodies, calls) -> int | None:
    """The N of `counter < N` in a while condition that compares against one constant (the compare may sit in
    a fusion the condition calls, as the CPU compiler writes it); None otherwise."""
    lines = bodies.get(condition, ())
    bounds = [int(m.group(1)) for line in lines if (m := _BOUND.search(line))]
    compares = [line for comp in (condition, *calls.get(condition, ())) for line in bodies.get(comp, ())
                if " compare(" in line and "direction=LT" in line]
    return bounds[0] if len(bounds) == 1 and len(compares) == 1 else None
