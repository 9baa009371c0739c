"""Benchmarks of GCE Lab. Each script times the lab against a baseline measured in the same
process (interleaved repeats, medians) and prints ratios; ``python -m bench.run_all`` runs them
all and rewrites docs/BENCHMARKS.md."""
