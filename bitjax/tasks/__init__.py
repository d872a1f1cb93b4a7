"""Reasoning tasks: problems with exact answers, split for training and evaluation, and their verifiers.

  spec        a task by name: a reasoning-gym task with its keyword arguments, or a user's JSONL problems
  problems    a task's training and held-out problems, disjoint by construction (question hash or template)
  answers     a completion's final answer (`Answer: ...`), judged by the task's own `score_answer` or math-verify
  prompts     the user message every model is asked, rendered in its chat template
  worked      step-by-step worked solutions to train a teacher on (chain_sum's running totals, answer_cot)
"""
