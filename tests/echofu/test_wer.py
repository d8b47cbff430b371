"""Word error rate: the same words written two ways are not errors; wrong, missing and extra words are."""

from __future__ import annotations

import pytest

from libs.speech.wer import corpus_word_error_rate, normalize, number_words, word_error_rate


@pytest.mark.parametrize("n, words", [(0, "zero"), (7, "seven"), (47, "forty seven"), (90, "ninety"),
                                      (115, "one hundred fifteen"), (2024, "two thousand twenty four"),
                                      (1_000_000, "one million")])
def test_number_words(n, words):
    assert number_words(n) == words


def test_writing_differences_are_not_errors():
    assert normalize("Hello there, this is Test 47.") == "hello there this is test forty seven".split()
    assert word_error_rate("and mister john dashwood", "And Mr. John Dashwood.") == 0
    assert word_error_rate("he was not an ill disposed young man", "He was not an ill -disposed young man.") == 0
    assert word_error_rate("my favorite color is green", "My favourite colour is green!") == 0
    assert word_error_rate("it costs one thousand two hundred point five", "It costs 1,200.5") == 0
    assert word_error_rate("don't stop", "Don\u2019t stop.") == 0


def test_errors_are_counted_against_the_reference():
    assert word_error_rate("the bus was late again today", "the bus was eight again today") == pytest.approx(1 / 6)
    assert word_error_rate("one two three four", "one three four") == pytest.approx(1 / 4)
    assert word_error_rate("one two", "one two three four") == pytest.approx(2 / 2)
    assert word_error_rate("", "") == 0 and word_error_rate("", "anything") == 1
    # Corpus WER weighs each sentence by its length, not each sentence alike.
    assert corpus_word_error_rate([("a b c d e f g h", "a b c d e f g h"), ("x y", "z y")]) == pytest.approx(1 / 10)
