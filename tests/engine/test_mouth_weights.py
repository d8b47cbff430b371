"""The mouth's action weights: closures never push the lips across each other."""

from __future__ import annotations

import numpy as np

from libs.talkface.api import MouthTrack
from libs.talkface.motion import mouth_weights


def test_press_and_f_v_together_close_the_lips_once():
    """Press and F/V each bring the lips fully together at weight 1. A portrait caught
    mid-word rests pressed (press_rest); an F/V or an M/B/P on top must not add up to
    more than one closure, or the lower lip is drawn above the upper one and the warp
    folds there (showing a sliver of the portrait's teeth through closed lips)."""
    grid = np.linspace(0.0, 1.0, 11, dtype=np.float32)
    press, fv = (a.ravel() for a in np.meshgrid(grid, grid))
    n = len(press)
    track = MouthTrack(np.zeros(n, np.float32), np.zeros(n, np.float32), press, np.zeros(n, np.float32), 25.0, fv=fv)
    for emotion in ((0.0, 0.0, 0.0), (0.0, 0.0, 0.5)):
        w = mouth_weights(track, n, jaw_rest=-0.15, press_rest=1.0, emotion=emotion)
        assert (w["press"] + w["fv"] <= 1.0 + 1e-6).all()
        # an M/B/P still closes as far as it did: the F/V gives way to it, not the press
        assert (w["press"] >= press - 1e-6).all()
