"""The media service: fetch remote inputs, probe, normalise audio, mux and join clips."""
