"""`export_run`: a run directory's latest checkpoint to a packed directory or a GGUF file."""

from __future__ import annotations

import dataclasses
import sys
from pathlib import Path

from bitjax.export import architectures, checks, model_card
from bitjax.export.common import ExportError, check_output_apart, check_output_free
from bitjax.export.embedding_quant import EMBEDDING_TYPES, default_embedding_type
from bitjax.export.gguf_writer import QTYPES, write_gguf
from bitjax.export.hf_packed import write_packed
from bitjax.export.model_source import TernaryModel
from bitjax.export.web import DEFAULT_SPLIT_MB, export_web
from bitjax.paths import user_path
from bitjax.run import Run

FORMATS = ("gguf", "packed", "web")
GGUF_TYPES = tuple(QTYPES)


def export_run(run_dir: str | Path, out: str | Path, *, format: str, gguf_type: str | None = None,
               embedding_type: str | None = None, force: bool = False, allow_runtime_mismatch: bool = False,
               allow_unfinished_quantization: bool = False, progress: bool = False,
               split_mb: float | None = None) -> dict:
    """Export the latest checkpoint of `run_dir` to `out`; returns a summary (path, bytes, step, architecture).

    Raises ExportError (a ValueError) with a one-line fix for bad input; nothing is left under `out`
    unless the export succeeded and its read-back check passed. A run whose gradual quantization has not
    reached lambda 1 is refused (`checks.unfinished_quantization`) unless `allow_unfinished_quantization`, which
    writes the warning into the model card (and a GGUF's `general.description`).
    """
    out, run_dir = user_path(out, "OUT"), user_path(run_dir, "RUN_DIR")
    check_output_apart(out, run_dir)   # first: replacing an overlapping output would delete the run
    if format not in FORMATS:
        raise ExportError(f"--format {format} is not known; use one of {', '.join(FORMATS)}")
    if split_mb is not None and format != "web":
        raise ExportError("--split-mb applies to --format web only")
    if format == "web":   # a folder: the GGUF, bitjax's page and the WebAssembly runtime (bitjax.export.web)
        return export_web(run_dir, out, gguf_type=gguf_type, embedding_type=embedding_type, force=force,
                          split_mb=DEFAULT_SPLIT_MB if split_mb is None else split_mb,
                          allow_runtime_mismatch=allow_runtime_mismatch, progress=progress)
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
    check_output_free(out, force, "directory" if format == "packed" else "file")  # before the (slow) restore
    run = Run(run_dir)
    if (unfinished := checks.unfinished_quantization(run)) and not allow_unfinished_quantization:
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
