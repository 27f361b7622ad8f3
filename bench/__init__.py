"""Benchmarks: `make bench-*` prints measured figures against a real mesh."""
