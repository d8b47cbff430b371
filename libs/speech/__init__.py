"""Speech synthesis for talkserve: espeak-ng text-to-speech with phoneme timing."""

from libs.speech.espeak import Speech, SpeechError, synthesize, to_arpabet, write_wav

__all__ = ["Speech", "SpeechError", "synthesize", "to_arpabet", "write_wav"]
