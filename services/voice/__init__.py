"""The voice service: text-to-speech, voice profiles, speech recognition and person models (EchOfU)."""
