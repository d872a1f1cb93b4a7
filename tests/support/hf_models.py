"""Small transformers models trained briefly on Shakespeare, as sources to convert (the conversion round trips).

A random network's logits are so flat that a third of the positions or more are near-ties (measured: 95% TQ2_0
argmax agreement, 100% of the clear positions), which says little about an export; 25 steps of torch AdamW make
its predictions decide. Ids come from the export tests' tokenizer (the tiny recipe's BPE, vocabulary 2048).
"""

from pathlib import Path

import numpy as np


def shakespeare_ids(tokenizer_path: Path) -> tuple[np.ndarray, np.ndarray]:
    """Training ids (the first plays) and 256 held-out ids (the last one), in the export tests' tokenizer."""
    from bitjax import tokenizer as tokenizer_lib
    from bitjax.data.sources import corpora

    tok = tokenizer_lib.load(tokenizer_path)
    docs = list(corpora.shakespeare_documents())
    train = np.asarray(tok.encode("\n\n".join(d["text"] for d in docs[:20])).ids, np.int64)
    return train, np.asarray(tok.encode(docs[-1]["text"]).ids[:256], np.int32)


def trained_hf_model(directory: Path, train_ids: np.ndarray, config_cls: str, model_cls: str, *, steps: int = 25,
                     rope_parameters: dict | None = None, **config):
    """A `model_cls` of `config_cls(vocab_size=2048, **config)` trained `steps` steps of 8 x 64 tokens (AdamW,
    3e-3) and saved to `directory` (safetensors); returns it. Norm scales and biases are moved off their
    initial values first, so a mapping that drops or swaps one shows."""
    import torch
    import transformers

    torch.manual_seed(0)
    cfg = getattr(transformers, config_cls)(vocab_size=2048, **config)
    if rope_parameters is not None:
        cfg.rope_parameters = rope_parameters
    model = getattr(transformers, model_cls)(cfg)
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("bias") or "norm" in name:
                p.add_(0.1 * torch.randn_like(p))
    optimizer = torch.optim.AdamW(model.parameters(), lr=3e-3)
    rng = np.random.default_rng(0)
    for _ in range(steps):
        rows = torch.as_tensor(np.stack([train_ids[a:a + 65] for a in rng.integers(0, len(train_ids) - 65, 8)]))
        logits = model(input_ids=rows[:, :-1]).logits
        loss = torch.nn.functional.cross_entropy(logits.reshape(-1, 2048), rows[:, 1:].reshape(-1))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    model.eval().save_pretrained(directory, safe_serialization=True)
    return model
