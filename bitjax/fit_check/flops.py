"""Analytic FLOPs of a train step: what MFU is measured against.

Compiler cost analysis is not a FLOP count to trust here: it counts a Pallas kernel without a cost estimate
as nothing, a scanned layer body once, and an int8 matmul like a bf16 one. So MFU comes from the model:

  model FLOPs     6 N T  +  6 * layers * heads * head_dim * L * T     (PaLM appendix B, causal attention)
                  N counts every matmul weight, the LM head included, not the embedding lookup; the attention
                  term is PaLM's 12 * n * h * L * T halved because a causal mask skips half the scores.
  hardware FLOPs  model FLOPs plus what rematerialisation computes again in the backward pass: with
                  `remat="full"` one more forward of the blocks (2 N_blocks T + the attention forward);
                  a policy that saves the matmul outputs recomputes (almost) no matmul.
  int8 FLOPs      the part of the hardware FLOPs that runs as int8 x int8 -> int32 matmuls: the BitLinear
                  forwards of an `int8_matmul` ternary model (2 N_blocks T, again when remat recomputes them).
                  Their backward (dX, dW) runs in the compute dtype: it is not counted here.
"""

from __future__ import annotations

from bitjax.nn.model_config import ModelConfig


def attention_flops_per_token(model: ModelConfig, seq_len: int) -> float:
    """Forward + backward FLOPs of causal attention scores and values, per token (6 * n * h * L)."""
    return 6.0 * model.n_layers * model.n_heads * model.head_dim * seq_len


def matmul_params(model: ModelConfig) -> int:
    """Weights that take part in a matmul per token: every linear layer and the LM head (not norms, biases
    or the embedding lookup)."""
    D, F, qkv = model.d_model, model.d_ff, (model.n_heads + 2 * model.n_kv_heads) * model.head_dim
    per_layer = D * qkv + model.n_heads * model.head_dim * D + 3 * D * F
    return model.n_layers * per_layer + model.vocab_size * model.d_model


def model_flops_per_token(model: ModelConfig, seq_len: int) -> float:
    return 6.0 * matmul_params(model) + attention_flops_per_token(model, seq_len)


def recompute_flops_per_token(model: ModelConfig, seq_len: int) -> float:
    """FLOPs the backward pass spends recomputing the forward of rematerialised blocks, per token."""
    policy = remat_policy_name(model)
    if policy in ("none", "dots_saveable", "offload"):
        return 0.0    # matmul outputs are kept (or offloaded): only elementwise work is recomputed
    block_params = matmul_params(model) - model.vocab_size * model.d_model   # the head is not rematerialised
    return 2.0 * block_params + attention_flops_per_token(model, seq_len) / 3.0


def remat_policy_name(model: ModelConfig) -> str:
    """The remat setting as a policy name ("none", "full", ...), whether the config holds a bool or a name."""
    remat = model.remat
    if isinstance(remat, bool):
        return "full" if remat else "none"
    return str(remat)


def int8_flops(model: ModelConfig, batch_size: int, seq_len: int, recompute: bool = True) -> float:
    """FLOPs of one step that run as int8 x int8 matmuls (see the module docstring), all devices: the hardware's
    (with the recompute), or with `recompute=False` the model's (the forward once)."""
    if model.quant != "ternary" or not (model.int8_matmul and model.quantize_activations):
        return 0.0
    block_params = matmul_params(model) - model.vocab_size * model.d_model
    forwards = 2 if recompute and recompute_flops_per_token(model, seq_len) > 0 else 1
    return 2.0 * block_params * batch_size * seq_len * forwards


def step_flops(model: ModelConfig, batch_size: int, seq_len: int) -> tuple[float, float]:
    """(model FLOPs, hardware FLOPs) of one train step over batch_size x seq_len tokens, all devices together."""
    tokens = batch_size * seq_len
    model_flops = model_flops_per_token(model, seq_len) * tokens
    return model_flops, model_flops + recompute_flops_per_token(model, seq_len) * tokens


def forward_flops(model: ModelConfig, batch_size: int, seq_len: int) -> float:
    """FLOPs of one forward pass over batch_size x seq_len tokens (an online teacher's share of a step)."""
    per_token = 2.0 * matmul_params(model) + attention_flops_per_token(model, seq_len) / 3.0
    return per_token * batch_size * seq_len
