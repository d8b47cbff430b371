"""Word error rate, on text normalised so that only what was heard differs, not how it was written.

Recognisers write the same words differently: Whisper writes "Mr. Dashwood", "47",
"cold-hearted" and "colour" where a reference says "mister dashwood", "forty seven",
"cold hearted" and "color". Before counting edits both sides are lower-cased, numbers
are spelt out, hyphenated words split, a few titles expanded, British spellings made
American and punctuation dropped. A number spoken otherwise ("twenty twenty four" for
2024) still counts as wrong: the normaliser cannot know how it was said.
"""

from __future__ import annotations

import re
from typing import Iterable

_ONES = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
         "sixteen seventeen eighteen nineteen").split()
_TENS = "_ _ twenty thirty forty fifty sixty seventy eighty ninety".split()
_SCALES = ((10**9, "billion"), (10**6, "million"), (1000, "thousand"), (100, "hundred"))

# Titles a recogniser abbreviates and a reference spells out.
_ABBREVIATIONS = {"mr": "mister", "mrs": "missus", "dr": "doctor"}
# British spellings Whisper uses now and then; the references are American.
_SPELLING = {
    "colour": "color", "colours": "colors", "favourite": "favorite", "favourites": "favorites",
    "honour": "honor", "neighbour": "neighbor", "neighbours": "neighbors", "behaviour": "behavior",
    "flavour": "flavor", "humour": "humor", "labour": "labor", "harbour": "harbor", "centre": "center",
    "theatre": "theater", "metre": "meter", "metres": "meters", "realise": "realize", "realised": "realized",
    "organise": "organize", "organised": "organized", "grey": "gray", "travelling": "traveling",
}


def number_words(n: int) -> str:
    """An integer as English words: 47 -> "forty seven", 1200 -> "one thousand two hundred"."""
    if n < 0:
        return "minus " + number_words(-n)
    if n < 20:
        return _ONES[n]
    if n < 100:
        return _TENS[n // 10] + ("" if n % 10 == 0 else " " + _ONES[n % 10])
    for scale, name in _SCALES:
        if n >= scale:
            head, rest = divmod(n, scale)
            return f"{number_words(head)} {name}" + ("" if rest == 0 else " " + number_words(rest))
    raise AssertionError("unreachable")


def _spoken_number(match: re.Match) -> str:
    whole, _, fraction = match.group(0).partition(".")
    words = number_words(int(whole))
    if fraction:
        words += " point " + " ".join(_ONES[int(d)] for d in fraction)
    return f" {words} "


def normalize(text: str) -> list[str]:
    """The words of `text`, normalised for comparison (see the module docstring)."""
    t = text.lower().replace("\u2019", "'")
    t = re.sub(r"(?<=\d),(?=\d{3}\b)", "", t)  # 1,000 is one number
    t = re.sub(r"\d+(?:\.\d+)?", _spoken_number, t)
    t = re.sub(r"[^a-z']+", " ", t)  # hyphens, dashes and punctuation separate words
    words = []
    for word in t.split():
        word = word.strip("'")
        if word:
            word = _ABBREVIATIONS.get(word, word)
            words.extend(_SPELLING.get(word, word).split())
    return words


def edit_distance(reference: list[str], hypothesis: list[str]) -> int:
    """Fewest word substitutions, insertions and deletions that turn `hypothesis` into `reference`."""
    prev = list(range(len(hypothesis) + 1))
    for i, r in enumerate(reference, 1):
        cur = [i] + [0] * len(hypothesis)
        for j, h in enumerate(hypothesis, 1):
            cur[j] = min(prev[j] + 1, cur[j - 1] + 1, prev[j - 1] + (r != h))
        prev = cur
    return prev[-1]


def word_error_rate(reference: str, hypothesis: str) -> float:
    """Word edits over the reference's word count, both normalised."""
    return corpus_word_error_rate([(reference, hypothesis)])


def corpus_word_error_rate(pairs: Iterable[tuple[str, str]]) -> float:
    """Word edits over all (reference, hypothesis) pairs divided by all reference words."""
    edits = words = 0
    hypothesis_words = 0
    for reference, hypothesis in pairs:
        ref, hyp = normalize(reference), normalize(hypothesis)
        edits += edit_distance(ref, hyp)
        words += len(ref)
        hypothesis_words += len(hyp)
    if words == 0:
        return float(hypothesis_words > 0)
    return edits / words
