"""Sandbox benchmark: start-up overhead of OS isolation (bubblewrap + seccomp) per run, next to no isolation.

`process` mode (resource limits only) is a bare `python -I` child, which is what the pre-bubblewrap sandbox
started too; the difference is what isolation costs. Prints one JSON line per measurement.
`python -m bench.bench_sandbox [--runs 20]`
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import time

from agents.sandbox import run_code
from conveyor.settings import reset_settings

CASES = {"empty": ((), "pass"), "pandas+matplotlib": (("numpy", "pandas", "matplotlib.pyplot"), "x = 1")}


def time_runs(mode: str, preload: tuple[str, ...], code: str, runs: int) -> list[float]:
    os.environ["CONVEYOR_SANDBOX_ISOLATION"] = mode
    reset_settings()
    run_code(code, preload=preload)  # warm the page cache and the isolation probe
    seconds = []
    for _ in range(runs):
        started = time.perf_counter()
        out = run_code(code, preload=preload)
        seconds.append(time.perf_counter() - started)
        assert out.ok and out.isolation == mode, out
    return seconds


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args(argv or [])
    saved = os.environ.get("CONVEYOR_SANDBOX_ISOLATION")
    try:
        for case, (preload, code) in CASES.items():
            medians = {}
            for mode in ("process", "bubblewrap"):
                seconds = time_runs(mode, preload, code, args.runs)
                medians[mode] = statistics.median(seconds)
                print(
                    json.dumps(
                        {
                            "case": case,
                            "mode": mode,
                            "runs": args.runs,
                            "median_ms": round(medians[mode] * 1000, 1),
                            "p95_ms": round(sorted(seconds)[int(0.95 * (len(seconds) - 1))] * 1000, 1),
                        }
                    ),
                    flush=True,
                )
            overhead = (medians["bubblewrap"] - medians["process"]) * 1000
            print(json.dumps({"case": case, "isolation_overhead_ms": round(overhead, 1)}), flush=True)
    finally:
        if saved is None:
            os.environ.pop("CONVEYOR_SANDBOX_ISOLATION", None)
        else:
            os.environ["CONVEYOR_SANDBOX_ISOLATION"] = saved
        reset_settings()


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
