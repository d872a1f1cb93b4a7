"""Quality gates for rephrased text: does a generated rephrasing keep to its source passage?

Each gate is a small pure function `(output, passage) -> score` with a threshold; `apply_gates` runs them
all and returns, per gate, the score, the threshold and whether it passed. `bitjax rephrase` records that
on every output line and routes a line that fails any gate to a side file.

    faithfulness  share of the output's content words that occur in the passage (after crude stemming)
    entities      share of the output's capitalised names that occur in the passage
    novelty       share of the output's word 4-grams that are not in the passage (0 for a verbatim copy)
    length_ratio  output characters / passage characters
    repetition    share of the output's word 4-grams that repeat an earlier 4-gram (n-gram loops)
    boilerplate   number of chat / refusal phrases ("I'm happy to help", "As an AI", "Sure! Here's")
    language      share of the output's words that are common English function words

Why word overlap and not an embedding or NLI model: no such model ships offline here, and the failures of a
small generator are gross (it writes about a "friendly dragon", invents a fantasy novel, lists "What's your
favorite color?"), so they show as words and names that are not in the passage. Overlap cannot tell a faithful
paraphrase in new words from an invention in new words; that is why the threshold is low and measured on
hand-labelled lines (data/rephrased/labels.jsonl, benchmarks/gate_precision.py), not assumed.
"""

from __future__ import annotations

import dataclasses
import re

from bitjax.errors import ConfigError

# Function words of modern and Early Modern English: they carry no content, so neither overlap counts them,
# and the language gate counts how many of the output's words are among them.
FUNCTION_WORDS = frozenset("""
a about above after again against all am an and any are as at be because been before being below between both
but by can could did do does doing down during each few for from further had has have having he her here hers
herself him himself his how i if in into is it its itself just me more most my myself no nor not now of off on
once only or other our ours ourselves out over own same she should so some such than that the their theirs them
themselves then there these they this those through to too under until up very was we were what when where which
while who whom why will with would you your yours yourself yourselves also may might must shall upon yet let
thou thee thy thine ye hath doth dost art hast shalt wilt wouldst couldst shouldst o oh tis 'tis ere nay aye
""".split())  # noqa: SIM905 (a word list reads best as text)

# Words any rephrasing may use whatever the passage says: the formats' own vocabulary and the speaker's frame.
FORMAT_WORDS = frozenset("""
passage text question questions answer answers q summary summarize summarizes explanation explain explains
student students speaker speakers shakespeare act scene describes describe described says said tells told means
meaning suggests
shows character characters line lines scene play speech talks talk refers modern english one two three
""".split())  # noqa: SIM905

BOILERPLATE = (
    r"\bI'?m (?:happy|glad|here) to help", r"\bI(?:'d| would) be (?:happy|glad)", r"\bas an AI\b",
    r"\blanguage model\b", r"^\s*(?:sure|certainly|of course|absolutely)\b[!,.]", r"\bhere(?:'s| is) (?:a|an|the|my)\b",
    r"\bI (?:can(?:no|')t|am unable to|'m unable to|'m sorry|apologi[sz]e)\b", r"\bfeel free\b",
    r"\blet me know\b", r"\bI hope (?:this|that) helps\b", r"\bgreat question\b", r"\byour (?:passage|text|request)\b",
    r"\bI'?ll (?:re-?write|make sure|do my best)\b",
)
_BOILERPLATE_RE = [re.compile(p, re.IGNORECASE | re.MULTILINE) for p in BOILERPLATE]
_WORD_RE = re.compile(r"[^\W\d_]+(?:'[^\W\d_]+)?")
_SENTENCE_RE = re.compile(r"(?<=[.!?:;])\s+|\n+")
_SUFFIXES = ("ing", "edst", "est", "eth", "ed", "es", "ly", "s")


def words(text: str) -> list[str]:
    return [w.lower() for w in _WORD_RE.findall(text)]


def stem(word: str) -> str:
    """A crude stemmer: strip one common (also archaic) suffix, keep six letters; 'loveth'/'loved' -> 'lov'."""
    word = word.lower().removesuffix("'s").replace("'", "")
    for suffix in _SUFFIXES:
        if word.endswith(suffix) and len(word) - len(suffix) >= 3:
            word = word[: -len(suffix)]
            break
    return word[:6].rstrip("e") or word


def capitalised_names(text: str) -> list[str]:
    """Capitalised words that do not open a sentence or line: the names a text mentions, roughly."""
    names = []
    for sentence in _SENTENCE_RE.split(text):
        ws = _WORD_RE.findall(sentence)
        names += [w for w in ws[1:] if len(w) > 2 and w[0].isupper() and not w.isupper()]
    return names


def content_stems(text: str) -> set[str]:
    return {stem(w) for w in words(text) if w not in FUNCTION_WORDS and w not in FORMAT_WORDS and len(w) > 2}


# --------------------------------------------------------------------------- the gates (pure functions)


def faithfulness(output: str, passage: str) -> float:
    """Share of the output's distinct content words whose stem occurs in the passage (1.0 with none)."""
    out = content_stems(output)
    return len(out & content_stems(passage)) / len(out) if out else 1.0


def entities(output: str, passage: str) -> float:
    """Share of the output's distinct capitalised names (not sentence-initial) found in the passage, any case."""
    names = {n.lower() for n in capitalised_names(output)} - FUNCTION_WORDS - FORMAT_WORDS
    source = {stem(w) for w in words(passage)}
    return sum(stem(n) in source for n in names) / len(names) if names else 1.0


def novelty(output: str, passage: str, n: int = 4) -> float:
    """Share of the output's distinct word n-grams absent from the passage: a copy is faithful but no rephrasing."""
    grams = set(ngrams(words(output), n))
    return len(grams - set(ngrams(words(passage), n))) / len(grams) if grams else 1.0


def length_ratio(output: str, passage: str) -> float:
    return len(output.strip()) / max(len(passage.strip()), 1)


def ngrams(ws: list[str], n: int) -> list[tuple[str, ...]]:
    return [tuple(ws[i:i + n]) for i in range(len(ws) - n + 1)]


def repetition(output: str, passage: str = "", n: int = 4) -> float:
    """Share of word n-grams that repeat an earlier one: 0 for varied text, near 1 for a loop."""
    grams = ngrams(words(output), n)
    return 1 - len(set(grams)) / len(grams) if grams else 0.0


def boilerplate(output: str, passage: str = "") -> float:
    """How many distinct chat/refusal phrases the output holds."""
    return float(sum(bool(p.search(output)) for p in _BOILERPLATE_RE))


def language(output: str, passage: str = "") -> float:
    """Share of the output's words that are English function words (non-Latin scripts count as non-English)."""
    ws = _WORD_RE.findall(output)
    if not ws:
        return 0.0
    return sum(w.lower() in FUNCTION_WORDS and w.isascii() for w in ws) / len(ws)


# --------------------------------------------------------------------------- thresholds and verdicts


@dataclasses.dataclass(frozen=True)
class Thresholds:
    """A line passes when every score lies on the right side of its threshold (chosen in data/rephrased/README.md)."""

    min_faithfulness: float = 0.5
    min_entities: float = 0.5
    min_novelty: float = 0.5
    min_length_ratio: float = 0.25
    max_length_ratio: float = 2.5
    max_repetition: float = 0.1
    max_boilerplate: int = 0
    min_language: float = 0.2

    def __post_init__(self):
        for name in ("min_faithfulness", "min_entities", "min_novelty", "max_repetition", "min_language"):
            value = getattr(self, name)
            if not 0.0 <= value <= 1.0:
                raise ConfigError(f"--{name.replace('_', '-')} {value}: must lie in [0, 1]")
        if not 0.0 <= self.min_length_ratio < self.max_length_ratio:
            raise ConfigError(f"--min-length-ratio {self.min_length_ratio} / --max-length-ratio "
                              f"{self.max_length_ratio}: need 0 <= min < max")
        if self.max_boilerplate < 0:
            raise ConfigError(f"--max-boilerplate {self.max_boilerplate}: must be 0 or more")


DEFAULTS = Thresholds()

# gate -> (score function, lowest passing score field or None, highest passing score field or None)
GATES = {
    "faithfulness": (faithfulness, "min_faithfulness", None),
    "entities": (entities, "min_entities", None),
    "novelty": (novelty, "min_novelty", None),
    "length_ratio": (length_ratio, "min_length_ratio", "max_length_ratio"),
    "repetition": (repetition, None, "max_repetition"),
    "boilerplate": (boilerplate, None, "max_boilerplate"),
    "language": (language, "min_language", None),
}


def apply_gates(output: str, passage: str, thresholds: Thresholds = DEFAULTS) -> dict:
    """{"scores": {gate: score}, "failed": [gates that failed]}; the line is kept when `failed` is empty."""
    scores, failed = {}, []
    for name, (fn, low, high) in GATES.items():
        score = round(fn(output, passage), 4)
        scores[name] = score
        if (low and score < getattr(thresholds, low)) or (high and score > getattr(thresholds, high)):
            failed.append(name)
    return {"scores": scores, "failed": failed}


def verdict(output: str, passage: str, thresholds: Thresholds | None) -> dict:
    """What `bitjax rephrase` records: the scores always; with `thresholds=None` (gates off) nothing fails,
    except that an empty output always fails ("empty"): it is not a rephrasing whatever the settings."""
    result = apply_gates(output, passage, thresholds or DEFAULTS)
    if thresholds is None:
        result["failed"] = []
    if not output.strip():
        result["failed"] = ["empty"]
    return result
