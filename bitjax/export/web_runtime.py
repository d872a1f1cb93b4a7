"""The browser runtime of `bitjax export --format web`: wllama, llama.cpp built to WebAssembly, from npm.

bitjax does not ship wllama (it is another project's code, MIT-licensed) and never lets a page fetch it from
a CDN: `npm install` puts the pinned release in a local folder once, and every web export copies three files
out of it, each checked against the hash of the release the export was tested with:

    esm/index.js          the ES module (the worker and the Emscripten glue are inlined in it)
    esm/wasm/wllama.wasm  llama.cpp (with the `bitnet` architecture and the TQ1_0/TQ2_0 kernels), wasm64 + SIMD
    LICENCE               wllama's MIT licence, which must travel with the copies

The folder is $BITJAX_WEB_RUNTIME, or `<bitjax cache>/web-runtime` (see bitjax.paths.cache_dir).
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from pathlib import Path

from bitjax.errors import ExportError
from bitjax.paths import cache_dir

PACKAGE = "@wllama/wllama"
VERSION = "3.13.0"
# sha256 of the files copied, as published on npm for VERSION (checked before every copy)
FILES = {
    "esm/index.js": "fffd95c16ca191f31f4303664a05189c43d0cb20c52b67276c04e8857b138b64",
    "esm/wasm/wllama.wasm": "79ac5be917b71d50571a4f584436a9f6baf6b6e57719d094ed8bd950e9a65780",
    "LICENCE": None,   # copied as it is
}
# where each file goes inside the exported folder
DESTINATIONS = {"esm/index.js": "wllama/index.js", "esm/wasm/wllama.wasm": "wllama/wllama.wasm",
                "LICENCE": "wllama/LICENCE"}


def runtime_prefix() -> Path:
    """The npm prefix the runtime is installed under: $BITJAX_WEB_RUNTIME or <bitjax cache>/web-runtime."""
    given = os.environ.get("BITJAX_WEB_RUNTIME")
    return Path(given).expanduser() if given else cache_dir() / "web-runtime"


def install_command(prefix: Path | None = None) -> str:
    """The one pinned npm step that installs the runtime where `find_runtime` looks."""
    prefix = prefix or runtime_prefix()
    return f"npm install --prefix {prefix} --no-audit --no-fund --no-save {PACKAGE}@{VERSION}"


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def find_runtime(prefix: Path | None = None) -> Path:
    """The installed package directory, checked (version, files, hashes); ExportError naming the npm step."""
    prefix = prefix or runtime_prefix()
    package = prefix / "node_modules" / PACKAGE
    manifest = package / "package.json"
    if not manifest.is_file():
        raise ExportError(f"the browser runtime {PACKAGE}@{VERSION} is not installed under {prefix}; install it "
                          f"with `{install_command(prefix)}` (or point $BITJAX_WEB_RUNTIME at an npm prefix "
                          "that has it)")
    version = json.loads(manifest.read_text(encoding="utf-8")).get("version")
    if version != VERSION:
        raise ExportError(f"{package} is {PACKAGE}@{version}; bitjax's page is written and tested for {VERSION}: "
                          f"`{install_command(prefix)}`")
    for name, expected in FILES.items():
        path = package / name
        if not path.is_file():
            raise ExportError(f"{path} is missing from the installed {PACKAGE}@{VERSION}; reinstall it with "
                              f"`{install_command(prefix)}`")
        if expected is not None and _sha256(path) != expected:
            raise ExportError(f"{path} differs from the published {PACKAGE}@{VERSION} (sha256 mismatch); "
                              f"reinstall it with `{install_command(prefix)}`")
    return package


def copy_runtime(package: Path, out_dir: Path) -> list[str]:
    """Copy the runtime's files into an export folder; returns their paths relative to it."""
    copied = []
    for name, destination in DESTINATIONS.items():
        target = out_dir / destination
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(package / name, target)
        copied.append(destination)
    return copied
