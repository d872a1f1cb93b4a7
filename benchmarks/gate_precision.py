"""How well the rephrasing quality gates agree with a reader: the gates run on hand-labelled candidates.

`data/rephrased/labels.jsonl` holds generated rephrasings, each with its source passage and a label given by a
person reading it against the passage: `faithful` (restates the passage, possibly loosely), `copy` (repeats the
passage more or less verbatim: faithful, but no rephrasing), or `unfaithful` (about something else, invented
names or events, contradictions, loops, chat replies). Printed: per label, the share the gates keep, and which
gate rejects how many; with --sweep, the same for a range of faithfulness and novelty thresholds.

    python -m benchmarks.gate_precision                 # the defaults (bitjax.teachers.rephrase_gates.Thresholds)
    python -m benchmarks.gate_precision --sweep         # how the shares move with the two main thresholds
"""

from __future__ import annotations

import argparse
import collections
import dataclasses
import json
from pathlib import Path

from bitjax.teachers import rephrase_gates as gates

LABELS = Path(__file__).resolve().parent.parent / "data" / "rephrased" / "labels.jsonl"
CLASSES = ("faithful", "copy", "unfaithful")


def read_labels(path: Path = LABELS) -> list[dict]:
    rows = [json.loads(line) for line in path.read_text(encoding="utf-8").splitlines() if line.strip()]
    bad = [r.get("id") for r in rows if r.get("label") not in CLASSES]
    if bad:
        raise ValueError(f"{path}: labels must be one of {CLASSES}; see {bad[:3]}")
    return rows


def measure(rows: list[dict], thresholds: gates.Thresholds = gates.DEFAULTS) -> dict:
    """Per label: how many, how many kept, and how many each gate rejects."""
    out = {c: {"n": 0, "kept": 0, "rejected_by": collections.Counter()} for c in CLASSES}
    for row in rows:
        verdict = gates.apply_gates(row["text"], row["passage"], thresholds)
        cell = out[row["label"]]
        cell["n"] += 1
        cell["kept"] += not verdict["failed"]
        cell["rejected_by"].update(verdict["failed"])
    return out


def summary_line(m: dict) -> str:
    def share(c, kept):
        n = m[c]["n"]
        k = m[c]["kept"] if kept else n - m[c]["kept"]
        return f"{k}/{n} ({100 * k / n:.0f}%)" if n else "-"
    return (f"faithful kept {share('faithful', True)}, copies rejected {share('copy', False)}, "
            f"unfaithful rejected {share('unfaithful', False)}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--labels", default=str(LABELS))
    ap.add_argument("--sweep", action="store_true")
    args = ap.parse_args(argv)
    rows = read_labels(Path(args.labels))
    thresholds = gates.Thresholds()
    m = measure(rows, thresholds)
    print(f"{len(rows)} labelled candidates ({args.labels}); thresholds {dataclasses.asdict(thresholds)}\n")
    print("| label | candidates | kept by the gates | rejected, by gate (a line can fail several) |")
    print("|---|---|---|---|")
    for c in CLASSES:
        cell = m[c]
        by = ", ".join(f"{g} {n}" for g, n in cell["rejected_by"].most_common())
        print(f"| {c} | {cell['n']} | {cell['kept']} | {by or '-'} |")
    print("\n" + summary_line(m))
    kept = sum(m[c]["kept"] for c in CLASSES)
    print(f"of the {kept} lines the gates keep, {m['faithful']['kept']} are faithful rephrasings")
    # The thresholds were chosen on the first two origins; the shipped run's lines were labelled afterwards.
    for origin in dict.fromkeys(r.get("origin", "") for r in rows):
        print(f"  {origin}: {summary_line(measure([r for r in rows if r.get('origin', '') == origin], thresholds))}")
    if args.sweep:
        print("\n| min_faithfulness | min_novelty | result |\n|---|---|---|")
        for f in (0.3, 0.4, 0.5, 0.6, 0.7):
            for nov in (0.0, 0.3, 0.5):
                t = dataclasses.replace(thresholds, min_faithfulness=f, min_novelty=nov)
                print(f"| {f} | {nov} | {summary_line(measure(rows, t))} |")


if __name__ == "__main__":
    main()
