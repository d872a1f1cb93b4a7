"""GGUF files (llama.cpp) as bitjax models: the `llama`, `qwen2` and `bitnet` architectures, any tensor type.

    cfg, params = load_gguf("model.gguf")     # ModelConfig (quant="none") and float32 parameters
    model = gguf_model("model.gguf")          # tokens (B, L) -> logits (B, L, V)

Quantized tensors (Q4_1, Q8_0, K-quants, TQ1_0/TQ2_0, ...) are dequantized with the `gguf` library. llama.cpp's
converter stores the q and k projections of `llama` models permuted for its interleaved RoPE; they are
permuted back to the half-split layout bitjax (and Hugging Face) use. A bitnet file's per-tensor `.scale`
multiplies its weight, as llama.cpp does. Only metadata and tensors are read: no code runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bitjax.errors import ConfigError
from bitjax.nn.model_config import ModelConfig
from bitjax.pretrained.hf import ARCHITECTURES, fill_params, merged_model

# bitjax parameter path pieces -> GGUF tensor names (per block "blk.N.")
BLOCK_NAMES = {
    "input_layernorm.scale": "attn_norm.weight",
    "post_attention_layernorm.scale": "ffn_norm.weight",
    "self_attn.q_proj.kernel": "attn_q.weight", "self_attn.k_proj.kernel": "attn_k.weight",
    "self_attn.v_proj.kernel": "attn_v.weight", "self_attn.o_proj.kernel": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.attn_sub_norm.scale": "attn_sub_norm.weight",
    "mlp.gate_proj.kernel": "ffn_gate.weight", "mlp.up_proj.kernel": "ffn_up.weight",
    "mlp.down_proj.kernel": "ffn_down.weight", "mlp.ffn_sub_norm.scale": "ffn_sub_norm.weight",
}


def _reader(path: Path):
    import gguf

    if not path.is_file():
        raise ConfigError(f"{path} does not exist; pass a .gguf file")
    try:
        return gguf.GGUFReader(str(path))
    except Exception as e:   # gguf raises ValueError / struct errors on files that are not GGUF
        raise ConfigError(f"{path} is not a readable GGUF file ({type(e).__name__}: {e})") from None


def _field(reader, key: str, path: Path, default=None):
    field = reader.fields.get(key)
    if field is None:
        if default is None:
            raise ConfigError(f"{path}: metadata key {key} is missing")
        return default
    return field.contents()


def gguf_model_config(path: str | Path, reader=None) -> ModelConfig:
    """The ModelConfig a GGUF file's metadata describes (full precision)."""
    path = Path(path)
    reader = reader or _reader(path)
    arch = _field(reader, "general.architecture", path)
    if arch not in ("llama", "qwen2", "bitnet"):
        raise ConfigError(f"{path}: architecture {arch!r} is not supported; bitjax imports llama, qwen2 and bitnet")
    fixed = dict(ARCHITECTURES[arch])
    if arch == "bitnet":
        fixed["ffn_activation"] = _field(reader, "bitnet.hidden_activation", path, "silu")   # llama.cpp's default
    names = {t.name for t in reader.tensors}
    scaling = _field(reader, f"{arch}.rope.scaling.type", path, "none")
    if scaling != "none" or "rope_freqs.weight" in names:   # rope_freqs: Llama 3.x's per-frequency factors
        raise ConfigError(f"{path}: RoPE scaling {'llama3' if scaling == 'none' else scaling!r} is not implemented "
                          "by bitjax's decoder (only plain RoPE); import a model without RoPE scaling")
    heads = int(_field(reader, f"{arch}.attention.head_count", path))
    d_model = int(_field(reader, f"{arch}.embedding_length", path))
    return ModelConfig(
        vocab_size=int(reader.tensors[[t.name for t in reader.tensors].index("token_embd.weight")].shape[1]),
        d_model=d_model, n_layers=int(_field(reader, f"{arch}.block_count", path)), n_heads=heads,
        n_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", path, heads)),
        head_dim=int(_field(reader, f"{arch}.attention.key_length", path, d_model // heads)),
        d_ff=int(_field(reader, f"{arch}.feed_forward_length", path)),
        max_seq_len=int(_field(reader, f"{arch}.context_length", path, 2048)),
        rope_theta=float(_field(reader, f"{arch}.rope.freq_base", path, 10_000.0)),
        norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", path)),
        tie_embeddings="output.weight" not in names, quant="none",
        **{**fixed, "attention_bias": "blk.0.attn_q.bias" in names})


def _unpermute(w_OI: np.ndarray, n_heads: int) -> np.ndarray:
    """Undo llama.cpp's q/k permutation (interleaved RoPE pairs) back to half-split order."""
    out = w_OI.shape[0]
    return w_OI.reshape(n_heads, out // n_heads // 2, 2, *w_OI.shape[1:]).swapaxes(1, 2).reshape(w_OI.shape)


def gguf_tensors(path: str | Path, cfg: ModelConfig, reader=None) -> dict[str, np.ndarray]:
    """bitjax parameter path -> float32 array (kernels (in, out)), every tensor dequantized."""
    import gguf

    path = Path(path)
    reader = reader or _reader(path)
    arch = _field(reader, "general.architecture", path)
    by_name = {t.name: t for t in reader.tensors}

    def read(name: str) -> np.ndarray:
        t = by_name[name]
        try:
            value = gguf.quants.dequantize(t.data, t.tensor_type)
        except NotImplementedError:
            raise ConfigError(f"{path}: tensor {name} has type {t.tensor_type.name}, which gguf cannot "
                              "dequantize; requantize the file (e.g. to Q8_0 or F16)") from None
        value = np.asarray(value, np.float32).reshape(tuple(int(n) for n in reversed(t.shape)))
        if f"{name.removesuffix('.weight')}.scale" in by_name:   # bitnet: per-tensor scale
            value = value * float(np.asarray(by_name[f"{name.removesuffix('.weight')}.scale"].data).ravel()[0])
        return value

    wanted = {"embed_tokens.embedding": "token_embd.weight", "norm.scale": "output_norm.weight"}
    if not cfg.tie_embeddings:
        wanted["lm_head.kernel"] = "output.weight"
    for i in range(cfg.n_layers):
        wanted.update({f"layers.{i}.{ours}": f"blk.{i}.{theirs}" for ours, theirs in BLOCK_NAMES.items()})
    tensors = {}
    for ours, theirs in wanted.items():
        if theirs not in by_name:
            continue   # fill_params names what the config needs and the file lacks
        value = read(theirs)
        if arch == "llama" and ours.endswith(("q_proj.kernel", "k_proj.kernel")):
            value = _unpermute(value, cfg.n_heads if "q_proj" in ours else cfg.n_kv_heads)
        tensors[ours] = value.T if ours.endswith(".kernel") else value
    return tensors


def load_gguf(path: str | Path):
    """(ModelConfig, parameters) of a GGUF file."""
    path = Path(path)
    reader = _reader(path)
    cfg = gguf_model_config(path, reader)
    return cfg, fill_params(cfg, gguf_tensors(path, cfg, reader), str(path))


def gguf_model(path: str | Path):
    """The imported model, ready to call: tokens (B, L) -> logits (B, L, V)."""
    cfg, params = load_gguf(path)
    return merged_model(cfg, params)
