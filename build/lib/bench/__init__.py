"""Benchmarks: each `bench_*.py` module prints its figures from `main()`; run them with `make bench`."""
