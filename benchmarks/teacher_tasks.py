"""How many held-out reasoning-gym problems a teacher solves, task by task (greedy, the task's own verifier).

Each task's first `--problems` held-out problems (bitjax.tasks) are put to the teacher by `bitjax traces
--split heldout --samples 1 --temperature 0`, one user message in the teacher's own chat template with the
instruction to end with `Answer: <answer>`; the records' labels are the task's `score_answer` verdicts. Printed:
a markdown table (solved, accuracy, completions that hit the token limit, tokens/s) and one JSON line per
task appended to `--results`.

    python -m benchmarks.teacher_tasks [--teacher smollm2] [--problems 100] [--tasks chain_sum,gcd,...]
                                       [--max-new-tokens 192] [--out-dir DIR] [--threads 1]

The trace files stay in `--out-dir` (default benchmarks/results/teacher_tasks/<teacher>/, not committed), so a
rerun resumes where one stopped.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from bitjax.cli import main as bitjax_main
from bitjax.data.teacher_files import traces as trace_files

# Ten tasks of reasoning-gym's defaults that a small model could get right with a few steps, and gsm_symbolic.
TASKS = ("chain_sum", "basic_arithmetic", "products", "gcd", "lcm", "leg_counting", "letter_counting",
         "number_sorting", "spell_backward", "word_sequence_reversal", "gsm_symbolic")
RESULTS = Path(__file__).resolve().parent / "results"


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--teacher", default="smollm2")
    ap.add_argument("--tasks", default=",".join(TASKS))
    ap.add_argument("--problems", type=int, default=100)
    ap.add_argument("--max-new-tokens", type=int, default=192)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out-dir", type=Path, default=None)
    ap.add_argument("--results", type=Path, default=RESULTS / "teacher_tasks.jsonl")
    a = ap.parse_args(argv)
    out_dir = a.out_dir or RESULTS / "teacher_tasks" / Path(a.teacher.partition(":")[2] or a.teacher).name
    rows = []
    for task in a.tasks.split(","):
        out = out_dir / f"{task.replace(':', '_').replace(',', '_')}.jsonl"
        code = bitjax_main(["traces", "--out", str(out), "--teacher", a.teacher, "--task", task, "--split",
                            "heldout", "--prompts", str(a.problems), "--samples", "1", "--temperature", "0",
                            "--max-new-tokens", str(a.max_new_tokens), "--threads", str(a.threads),
                            "--no-progress"])
        if code != 0:
            raise SystemExit(code)
        records = trace_files.read_traces(out)[:a.problems]
        solved = sum(r["label"] == "positive" for r in records)
        row = {"teacher": a.teacher, "task": task, "problems": len(records), "solved": solved,
               "accuracy": solved / len(records), "hit_limit": sum(r["finish_reason"] == "length" for r in records),
               "max_new_tokens": a.max_new_tokens}
        rows.append(row)
        a.results.parent.mkdir(parents=True, exist_ok=True)
        with a.results.open("a", encoding="utf-8") as f:
            f.write(json.dumps(row) + "\n")
    print(f"\n| task ({a.teacher}, greedy) | solved | accuracy | hit the {a.max_new_tokens}-token limit |")
    print("|---|---|---|---|")
    for r in rows:
        print(f"| {r['task']} | {r['solved']}/{r['problems']} | {100 * r['accuracy']:.0f}% | {r['hit_limit']} |")


if __name__ == "__main__":
    main()
