"""What each runtime can run, checked before anything is written.

Each check returns problems as one-line strings; the exporter raises them unless the user passes
`--allow-runtime-mismatch`, and the runtime checks in export/ print them next to their figures.
"""

from __future__ import annotations

from bitjax.export.model_source import TernaryModel
from bitjax.nn.model_config import ModelConfig
from bitjax.run import Run

TQ_BLOCK = 256
# Which llama.cpp computes a relu2 `bitnet` FFN? The llama.cpp vendored in llama-cpp-python 0.3.36, the
# newest release and the runtime bitjax installs and tests, hardcodes the SiLU-gated FFN
# (src/models/bitnet.cpp: `LLM_FFN_SILU, LLM_FFN_PAR`). llama.cpp master (ggml-org/llama.cpp, read at commit
# 38fcfa12) reads `bitnet.hidden_activation` and maps "relu2" to LLM_FFN_RELU_SQR (src/llama-model.cpp,
# LLM_FFN_OP_TYPES_FROM_STRING), so a llama.cpp built from master runs relu2 files; until a llama-cpp-python
# release ships that, the exporter refuses relu2 for GGUF (--allow-runtime-mismatch writes it anyway, and
# the file records the activation for the builds that read it).
SILU_ONLY_LLAMA_CPP_PYTHON = ("0.3.36",)
SILU_RECIPES = "recipes/bitnet_125m_silu.py or recipes/bitnet_700m_silu.py"


def gguf_activation_problems(cfg: ModelConfig, llama_cpp_version: str | None = None) -> list[str]:
    """A relu2 FFN runs wrongly in the released llama.cpp's SiLU-gated `bitnet` graph. (The other architectures
    have no relu2 at all: bitjax.export.architectures refuses it for them.)"""
    if cfg.ffn_activation == "silu" or not cfg.sub_norms:
        return []
    which = (f"llama-cpp-python {llama_cpp_version}" if llama_cpp_version
             else f"the llama.cpp in llama-cpp-python {', '.join(SILU_ONLY_LLAMA_CPP_PYTHON)}")
    return [f"model.ffn_activation={cfg.ffn_activation!r}: {which} runs the bitnet FFN as SiLU-gated and would "
            f"compute this model wrongly; train the SiLU variant ({SILU_RECIPES}, or "
            "--set model.ffn_activation=silu), or export --format packed for transformers"]


def tq_width_problems(model: TernaryModel, gguf_type: str, tensor_names: dict[str, str]) -> list[str]:
    """TQ1_0/TQ2_0 pack rows in blocks of 256: every ternary tensor's input width must be a multiple."""
    problems = []
    for name, tensor in model.ternary.items():
        width = tensor.codes_OI.shape[1]
        if width % TQ_BLOCK:
            problems.append(
                f"tensor {tensor_names[name]} ({name}) has rows of {width} values, not a multiple of {TQ_BLOCK}, "
                f"so it cannot be stored as {gguf_type}; use --type f16 or --type f32, or widths that are "
                f"multiples of {TQ_BLOCK}")
    return problems


def packed_problems(model: TernaryModel) -> list[str]:
    problems = []
    if not model.config.quantize_activations:
        problems.append(
            "model.quantize_activations=False (W1.58A16): transformers' autobitlinear always quantizes activations "
            "to int8 per token, so its output would differ from this model's")
    for name, tensor in model.ternary.items():
        if tensor.codes_OI.shape[0] % 4:
            problems.append(f"tensor {name} has {tensor.codes_OI.shape[0]} output rows, not a multiple of 4, "
                            "which transformers' packed loader needs")
    return problems


def unfinished_quantization(run: Run) -> str | None:
    """Why the run's checkpoint is not yet the ternary network it trains, or None.

    With `quant_warmup_steps` = W the update logged as step s ran at gradual-quantization strength
    lambda = (s - 1) / W (bitjax.nn.quant.lambda_schedule of the step before it), so lambda first reaches 1 at
    step W + 1. Before that the network the run trained is a blend of latent and ternary weights, and the
    export, which is the ternary network alone, is one the run never trained.
    """
    warmup = run.config.quant_warmup_steps
    if warmup <= 0 or run.step >= warmup + 1:
        return None
    lam = max(run.step - 1, 0) / warmup
    return (f"{run.dir} is at step {run.step}, trained at gradual-quantization strength lambda {lam:.3g}; lambda "
            f"reaches 1 at step {warmup + 1} (quant_warmup_steps={warmup}), and until then its ternary network is "
            f"one the run never trained; train to step {warmup + 1} or later, or pass "
            "--allow-unfinished-quantization to export it anyway")
