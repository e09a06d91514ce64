"""Benchmarks of tunelab against its peers, each run as ``python -m bench.<name>``; they print
ratios, since a ratio taken in one run on one machine is what can be compared across machines."""
