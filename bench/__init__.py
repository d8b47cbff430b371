"""talkserve's benchmarks: `python -m bench.run_all` runs them all and rewrites bench/results/."""
