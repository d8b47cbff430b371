"""What a speech recogniser returns: the text, its words with their times, and which recogniser heard it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class Word:
    """One recognised word and where it was heard, in seconds."""

    text: str
    start_s: float
    end_s: float


@dataclass
class Transcript:
    """What was recognised in a recording: `text` as the recogniser writes it (Whisper with
    case and punctuation, PocketSphinx as lower-case words), `words` with their times."""

    text: str
    words: list[Word] = field(default_factory=list)
    duration_s: float = 0.0
    engine: str = ""
