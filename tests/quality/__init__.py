"""Quality tests of the talkface engine: its audio side, and its output judged by the analysis pass."""
