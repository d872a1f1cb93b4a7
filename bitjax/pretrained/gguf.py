"""GGUF files (llama.cpp) as bitjax models: the `llama`, `qwen2`, `qwen3` and `bitnet` architectures, any tensor type.

    cfg, params = load_gguf("model.gguf")     # ModelConfig (quant="none") and float32 parameters
    model = gguf_model("model.gguf")          # tokens (B, L) -> logits (B, L, V)

Quantized tensors (Q4_1, Q8_0, K-quants, TQ1_0/TQ2_0, ...) are dequantized with the `gguf` library. llama.cpp's
converter stores the q and k projections of `llama` models permuted for its interleaved RoPE; they are
permuted back to the half-split layout bitjax (and Hugging Face) use. A per-tensor `.scale` multiplies its
weight, as llama.cpp does. RoPE scaling: `rope.scaling.type` linear or yarn (with its factor, original context
and betas), and Llama 3.x's `rope_freqs` tensor (one divisor per rotary pair: `RopeScaling.kind="freq_factors"`).
Only metadata and tensors are read: no code runs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from bitjax.errors import ConfigError
from bitjax.nn.model_config import ModelConfig
from bitjax.nn.rope import RopeScaling
from bitjax.pretrained.hf import ARCHITECTURES, fill_params, merged_model

GGUF_ARCHITECTURES = ("llama", "qwen2", "qwen3", "bitnet")

# bitjax parameter path pieces -> GGUF tensor names (per block "blk.N.")
BLOCK_NAMES = {
    "input_layernorm.scale": "attn_norm.weight",
    "post_attention_layernorm.scale": "ffn_norm.weight",
    "self_attn.q_proj.kernel": "attn_q.weight", "self_attn.k_proj.kernel": "attn_k.weight",
    "self_attn.v_proj.kernel": "attn_v.weight", "self_attn.o_proj.kernel": "attn_output.weight",
    "self_attn.q_proj.bias": "attn_q.bias", "self_attn.k_proj.bias": "attn_k.bias",
    "self_attn.v_proj.bias": "attn_v.bias",
    "self_attn.q_norm.scale": "attn_q_norm.weight", "self_attn.k_norm.scale": "attn_k_norm.weight",
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
    if "general.architecture" not in reader.fields:
        raise ConfigError(f"{path}: metadata key general.architecture is missing, so nothing says which network the "
                          "tensors form; write it (gguf.GGUFWriter(path, arch)) or convert the model again with "
                          "llama.cpp's convert_hf_to_gguf.py")
    arch = _field(reader, "general.architecture", path)
    if arch not in GGUF_ARCHITECTURES:
        raise ConfigError(f"{path}: architecture {arch!r} is not supported; bitjax imports "
                          f"{', '.join(GGUF_ARCHITECTURES)}")
    fixed = dict(ARCHITECTURES[arch])
    if arch == "bitnet":
        fixed["ffn_activation"] = _field(reader, "bitnet.hidden_activation", path, "silu")   # llama.cpp's default
    names = {t.name for t in reader.tensors}
    heads = int(_field(reader, f"{arch}.attention.head_count", path))
    d_model = int(_field(reader, f"{arch}.embedding_length", path))
    head_dim = int(_field(reader, f"{arch}.attention.key_length", path, d_model // heads))
    theta = float(_field(reader, f"{arch}.rope.freq_base", path, 10_000.0))
    rope_scaling = _rope_scaling(reader, arch, path, head_dim)
    return ModelConfig(
        vocab_size=int(reader.tensors[[t.name for t in reader.tensors].index("token_embd.weight")].shape[1]),
        d_model=d_model, n_layers=int(_field(reader, f"{arch}.block_count", path)), n_heads=heads,
        n_kv_heads=int(_field(reader, f"{arch}.attention.head_count_kv", path, heads)), head_dim=head_dim,
        d_ff=int(_field(reader, f"{arch}.feed_forward_length", path)),
        max_seq_len=int(_field(reader, f"{arch}.context_length", path, 2048)), rope_theta=theta,
        rope_scaling=rope_scaling,
        norm_eps=float(_field(reader, f"{arch}.attention.layer_norm_rms_epsilon", path)),
        tie_embeddings="output.weight" not in names, quant="none",
        **{**fixed, "attention_bias": "blk.0.attn_q.bias" in names, "qk_norm": "blk.0.attn_q_norm.weight" in names})


def _rope_scaling(reader, arch: str, path: Path, head_dim: int) -> RopeScaling:
    """RoPE scaling as llama.cpp reads it: `rope.scaling.*` metadata (linear, yarn), or a `rope_freqs` tensor."""
    kind = _field(reader, f"{arch}.rope.scaling.type", path, "none")
    freqs = next((t for t in reader.tensors if t.name == "rope_freqs.weight"), None)
    if freqs is not None and kind == "none":
        factors = np.asarray(freqs.data, np.float32).ravel()
        if factors.size != head_dim // 2:
            raise ConfigError(f"{path}: rope_freqs.weight holds {factors.size} factors, the heads have "
                              f"{head_dim // 2} rotary pairs")
        return RopeScaling("freq_factors", freq_factors=tuple(float(f) for f in factors))
    if kind == "none":
        return RopeScaling()
    # attention-factor settings beyond YaRN's default (DeepSeek's mscale): bitjax.nn.rope does not compute them
    attn = [key for key, plain in (("attn_factor", 1.0), ("yarn_attn_factor", 1.0), ("yarn_log_multiplier", 0.0))
            if float(_field(reader, f"{arch}.rope.scaling.{key}", path, plain)) != plain]
    if kind not in ("linear", "yarn") or freqs is not None or attn:
        what = f"{kind!r}" + (" with a rope_freqs tensor" if freqs is not None else "") + \
            (f" with rope.scaling.{attn[0]}" if attn else "")
        raise ConfigError(f"{path}: RoPE scaling {what} is not supported; bitjax imports linear and yarn scaling "
                          "and Llama 3.x's rope_freqs")
    factor = float(_field(reader, f"{arch}.rope.scaling.factor", path))
    if kind == "linear":
        return RopeScaling("linear", factor=factor)
    return RopeScaling("yarn", factor=factor,
                       original_max_len=int(_field(reader, f"{arch}.rope.scaling.original_context_length", path)),
                       beta_fast=float(_field(reader, f"{arch}.rope.scaling.yarn_beta_fast", path, 32.0)),
                       beta_slow=float(_field(reader, f"{arch}.rope.scaling.yarn_beta_slow", path, 1.0)))


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
