"""Models named by their Hugging Face Hub id, fetched into huggingface_hub's own cache (bitjax.pretrained.spec).

    hf:ORG/NAME[@REVISION]                 a model repository: config.json, safetensors, tokenizer files
    gguf:ORG/NAME/FILE.gguf[@REVISION]     one GGUF file of a repository

huggingface_hub does the work: `snapshot_download` / `hf_hub_download` with its cache (`HF_HOME`,
`HF_HUB_CACHE`), its offline switch (`HF_HUB_OFFLINE=1`: the cache alone, no request) and the token of
`hf auth login` or `HF_TOKEN`. A file already in the cache is not fetched again. Nothing here runs unless a
spec has the form of a Hub id and no local path of that name exists (the spec parser decides); every
failure is one ConfigError naming the spec and the fix.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

from huggingface_hub import constants, hf_hub_download, snapshot_download
from huggingface_hub.errors import (
    EntryNotFoundError,
    GatedRepoError,
    HfHubHTTPError,
    HFValidationError,
    LocalEntryNotFoundError,
    RepositoryNotFoundError,
    RevisionNotFoundError,
)
from huggingface_hub.utils import validate_repo_id

from bitjax.errors import ConfigError

# What a model repository is fetched for: its config, safetensors weights (and their index), tokenizer and chat
# template. Not the other formats a repository may also hold (PyTorch .bin, GGUF, ONNX), which bitjax never reads.
MODEL_FILES = ["*.json", "*.safetensors", "*.txt", "*.model", "*.jinja"]


@dataclasses.dataclass(frozen=True)
class HubId:
    repo: str                  # ORG/NAME
    revision: str | None       # a branch, tag or commit; None: the repository's main branch
    filename: str | None       # the file inside the repository (gguf:), None for a whole model (hf:)

    def fetch_command(self) -> str:
        """The `hf` command that puts this id in the cache, for messages."""
        parts = ["hf download", self.repo] + ([self.filename] if self.filename else [])
        return " ".join(parts + ([f"--revision {self.revision}"] if self.revision else []))


def parse_id(scheme: str, location: str) -> HubId | None:
    """`location` as a Hub id of `scheme` ("hf": ORG/NAME, "gguf": ORG/NAME/FILE.gguf, each with an optional
    @REVISION), or None when it does not have that form (then it can only be a local path)."""
    body, at, revision = location.rpartition("@")
    if not at:
        body, revision = location, None
    elif not revision:   # "ORG/NAME@": no revision named
        return None
    parts = body.split("/")
    if scheme == "hf" and len(parts) == 2:
        filename = None
    elif scheme == "gguf" and len(parts) >= 3 and body.endswith(".gguf") and all(parts[2:]):
        filename = "/".join(parts[2:])
    else:
        return None
    repo = "/".join(parts[:2])
    try:
        validate_repo_id(repo)
    except HFValidationError:
        return None
    return HubId(repo, revision, filename)


def fetch(hub_id: HubId, what: str, spec: str) -> Path:
    """The local path of `hub_id` in huggingface_hub's cache (the snapshot directory of a model, the file of a
    GGUF), fetched first when it is not there and the Hub may be asked."""
    try:
        if hub_id.filename:
            return Path(hf_hub_download(hub_id.repo, hub_id.filename, revision=hub_id.revision))
        directory = Path(snapshot_download(hub_id.repo, revision=hub_id.revision, allow_patterns=MODEL_FILES))
    except LocalEntryNotFoundError:   # offline (HF_HUB_OFFLINE, no network) and not in the cache
        raise ConfigError(
            f"{what}={spec}: {_what(hub_id)} is not in the Hugging Face cache ({constants.HF_HUB_CACHE}) and the "
            f"Hub was not asked (HF_HUB_OFFLINE=1) or cannot be reached; fetch it where the Hub is reachable "
            f"with `{hub_id.fetch_command()}` (same HF_HOME), or unset HF_HUB_OFFLINE") from None
    except GatedRepoError:
        raise ConfigError(f"{what}={spec}: {hub_id.repo} is gated; accept its terms on huggingface.co/"
                          f"{hub_id.repo} and log in with `hf auth login` (or set HF_TOKEN)") from None
    except RepositoryNotFoundError:
        raise ConfigError(f"{what}={spec}: no model {hub_id.repo} on the Hugging Face Hub (or it is private: "
                          "log in with `hf auth login`), and no local path of that name; check the id or the "
                          "path") from None
    except RevisionNotFoundError:
        raise ConfigError(f"{what}={spec}: {hub_id.repo} has no revision {hub_id.revision!r}; name a branch, tag "
                          "or commit of the repository") from None
    except EntryNotFoundError:
        raise ConfigError(f"{what}={spec}: {hub_id.repo} holds no file {hub_id.filename}; name a .gguf file the "
                          f"repository holds (huggingface.co/{hub_id.repo}/tree/main)") from None
    except HfHubHTTPError as e:
        first = (str(e).strip().splitlines() or [""])[0]
        raise ConfigError(f"{what}={spec}: the Hugging Face Hub refused the download ({first}); retry, or fetch "
                          f"it with `{hub_id.fetch_command()}`") from None
    if not (directory / "config.json").is_file():
        raise ConfigError(f"{what}={spec}: {hub_id.repo} holds no config.json (in {directory}); name a transformers "
                          "model repository, or gguf:ORG/NAME/FILE.gguf for a GGUF file")
    return directory


def _what(hub_id: HubId) -> str:
    name = f"{hub_id.repo}/{hub_id.filename}" if hub_id.filename else hub_id.repo
    return name + (f"@{hub_id.revision}" if hub_id.revision else "")
