"""`export_run`: a run directory's latest checkpoint to a packed directory or a GGUF file."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from bitjax.export import architectures, model_card
from bitjax.export.common import ExportError, check_output_apart, check_output_free
from bitjax.export.embedding_quant import EMBEDDING_TYPES, default_embedding_type
from bitjax.export.gguf_writer import QTYPES, write_gguf
from bitjax.export.hf_packed import write_packed
from bitjax.export.model_source import TernaryModel
from bitjax.paths import user_path
from bitjax.run import Run

FORMATS = ("gguf", "packed")
GGUF_TYPES = tuple(QTYPES)


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


def export_run(run_dir: str | Path, out: str | Path, *, format: str, gguf_type: str | None = None,
               embedding_type: str | None = None, force: bool = False, allow_runtime_mismatch: bool = False,
               allow_unfinished_quantization: bool = False, progress: bool = False) -> dict:
    """Export the latest checkpoint of `run_dir` to `out`; returns a summary (path, bytes, step, architecture).

    Raises ExportError (a ValueError) with a one-line fix for bad input; nothing is left under `out`
    unless the export succeeded and its read-back check passed. A run whose gradual quantization has not
    reached lambda 1 is refused (`unfinished_quantization`) unless `allow_unfinished_quantization`, which
    writes the warning into the model card (and a GGUF's `general.description`).
    """
    out, run_dir = user_path(out, "OUT"), user_path(run_dir, "RUN_DIR")
    check_output_apart(out, run_dir)   # first: replacing an overlapping output would delete the run
    if format not in FORMATS:
        raise ExportError(f"--format {format} is not known; use one of {', '.join(FORMATS)}")
    if format == "packed" and gguf_type is not None:
        raise ExportError("--type applies to --format gguf only; the packed format is always 2-bit")
    if format == "packed" and embedding_type is not None:
        raise ExportError("--embedding-type applies to --format gguf only; the packed format keeps the embedding "
                          "in float32 for transformers")
    gguf_type = gguf_type or ("tq2_0" if format == "gguf" else None)
    if gguf_type is not None and gguf_type not in QTYPES:
        raise ExportError(f"--type {gguf_type} is not supported; use one of {', '.join(QTYPES)}")
    if gguf_type is not None:
        embedding_type = embedding_type or default_embedding_type(gguf_type)
        if embedding_type not in EMBEDDING_TYPES:
            raise ExportError(f"--embedding-type {embedding_type} is not supported; use one of "
                              f"{', '.join(EMBEDDING_TYPES)}")
    check_output_free(out, force)  # before the (slow) restore
    run = Run(run_dir)
    if (unfinished := unfinished_quantization(run)) and not allow_unfinished_quantization:
        raise ExportError(unfinished)
    model = TernaryModel.from_run(run)
    if unfinished:
        warning = (f"exported at step {run.step}, before the run's gradual quantization reached lambda 1 (step "
                   f"{run.config.quant_warmup_steps + 1}): this ternary network was never trained as such")
        print(f"bitjax: warning: {warning}", file=sys.stderr, flush=True)
        model = dataclasses.replace(model, warnings=(warning,))
    if format == "packed":
        card = model_card.render(model, model_card.training_facts(run))
        write_packed(model, out, force=force, allow_runtime_mismatch=allow_runtime_mismatch, card=card)
        size = sum(p.stat().length for p in out.iterdir())
    else:
        write_gguf(model, out, gguf_type, embedding_type=embedding_type, force=force,
                   allow_runtime_mismatch=allow_runtime_mismatch, progress=progress)
        size = out.stat().length
    return {"path": str(out), "format": format, "type": gguf_type, "embedding_type": embedding_type,
            "bytes": size, "step": model.step, "ffn_activation": model.config.ffn_activation,
            "architecture": architectures.architecture(model.config).name}
