"""Load an exported packed directory in transformers (the class its config.json names: `BitNetForCausalLM`,
`LlamaForCausalLM`, `Qwen2ForCausalLM` or `Qwen3ForCausalLM`, through the BitNet quantizer; CPU torch) and run it."""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np


def load_model(directory: str | Path):
    import torch
    from transformers import AutoModelForCausalLM

    # transformers wraps its BitNet unpacking in torch.compile; eager runs the same ops without a
    # minute of C++ compilation on a small CPU.
    torch.compiler.set_stance("force_eager")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "running a BitNet model on CPU" warnings
        model = AutoModelForCausalLM.from_pretrained(str(directory), dtype=torch.float32, device_map="cpu",
                                                     local_files_only=True)
    return model.eval()


def hf_logits(model, tokens_L) -> np.ndarray:
    import torch

    with torch.no_grad():
        out = model(torch.as_tensor(np.asarray(tokens_L, np.int64)[None]))
    return out.logits[0].float().numpy()


def hf_tokenize(directory: str | Path, text: str) -> list[int]:
    from transformers import AutoTokenizer

    return AutoTokenizer.from_pretrained(str(directory))(text, add_special_tokens=False)["input_ids"]
