#!/usr/bin/env bash
# The reasoning pipeline end to end, at laptop scale (docs/reasoning.md):
#   1 problems  chain sums of 4-5 one-digit terms, with verified worked solutions and with the answer alone
#   2 teacher   a full-precision model trained from scratch on the worked solutions (recipes/reasoning_teacher.py)
#   3 traces    the teacher samples solutions of training problems in batches in JAX; the task's verifier labels them
#   4 student   a ternary student, SFT on the positive traces (recipes/reasoning_student.py; ARM=direct|sft|redi|kd)
#   5 eval      teacher and student on the same held-out problems, greedy, the task's own verifier
#   6 export    the student as a TQ2_0 GGUF, which solves a held-out problem in llama.cpp
#
#   recipes/reasoning_demo.sh [DIR]      (default runs/reasoning; a rerun skips the stages already done)
set -euo pipefail
DIR=${1:-runs/reasoning}
ARM=${ARM:-sft}
export BITJAX_REASONING_DIR=$DIR BITJAX_REASONING_ARM=$ARM
TASK=$(python -c "import runpy; print(runpy.run_path('recipes/reasoning_teacher.py')['TASK'])")
DATA=$DIR/data
mkdir -p "$DATA"
stage() { echo "== $1 ($(date +%T))"; }

stage "problems: $TASK"
[ -f "$DATA/train_worked.jsonl" ] || bitjax problems --task "$TASK" --count 20000 --out "$DATA/train_worked.jsonl"
[ -f "$DATA/train_direct.jsonl" ] || bitjax problems --task "$TASK" --count 20000 --solutions direct \
  --out "$DATA/train_direct.jsonl"

stage "teacher"
[ -f "$DIR/teacher/summary.json" ] || bitjax train recipes/reasoning_teacher.py --workdir "$DIR/teacher" --no-progress

stage "traces"
bitjax traces --teacher "bitjax:$DIR/teacher" --task "$TASK" --prompts 2000 --samples 4 --temperature 1.0 \
  --top-p 1.0 --max-new-tokens 64 --out "$DATA/traces.jsonl" --no-progress | tail -n 12

stage "student ($ARM)"
[ -f "$DIR/student_$ARM/summary.json" ] || bitjax train recipes/reasoning_student.py --workdir "$DIR/student_$ARM" \
  --no-progress

stage "held-out accuracy"
for run in teacher "student_$ARM"; do
  bitjax eval "$DIR/$run" --batches 2 > "$DIR/$run/eval.txt"
  awk -v run="$run" '$1 == "correct" {c = $2} $1 == "problems" {n = $2} $1 == "pass@1" {a = $2}
    END {printf "%s held-out accuracy: %s/%s = %.1f%%\n", run, c, n, 100 * a}' "$DIR/$run/eval.txt"
done

stage "export and llama.cpp"
bitjax export "$DIR/student_$ARM" "$DIR/student_$ARM.gguf" --format gguf --type tq2_0 --force
QUESTION=$(python -c "
from bitjax.tasks import problems, prompts, spec
print(prompts.user_message(problems.problems(spec.parse('$TASK'), 'heldout', 1)[0]))")
echo "$QUESTION"
bitjax generate "$DIR/student_$ARM.gguf" --chat --prompt "$QUESTION" --temperature 0 --max-new-tokens 64
