"""Benchmarks: each `bench_*.py` module prints its figures from `main()`; run them with `make bench`.

An entry package: importing it applies the process switches before the benchmarks' heavy imports.
"""

from conveyor import runtime

runtime.configure()
