"""How a problem is put to a model: one user message, rendered in the model's own chat template.

Every model bitjax asks (the embedded SmolLM2, a trained teacher, a student, an export in llama.cpp or the
browser) gets the same user message, `question` plus INSTRUCTION, in its chat template: the GGUF's or the
tokenizer's template for a chat model, bitjax's plain `user: ... / assistant: ` template (bitjax.tokenizer)
for models bitjax trains. Traces record the exact rendered prompt, so a student trains on what its teacher saw.
"""

from __future__ import annotations

from bitjax.tasks.problems import Problem
from bitjax.tokenizer import CHAT_TEMPLATE, render_chat

INSTRUCTION = "Think step by step, then end with 'Answer: <answer>'."


def user_message(problem: Problem) -> str:
    return f"{problem.question}\n{INSTRUCTION}"


def chat_prompt(problem: Problem) -> str:
    """The user message in bitjax's chat template, as a model bitjax trains is asked (bitjax.run.chat)."""
    return render_chat(CHAT_TEMPLATE, [{"role": "user", "content": user_message(problem)}])
