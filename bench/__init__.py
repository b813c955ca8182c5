"""ZBrain's benchmark suite; see bench/run.py."""
