"""Federated benchmark: seconds per round and test accuracy of FedAvg vs centralized vs single sites.

Runs the real `federated-training` flow (SuperLink + SuperNode processes) and prints one JSON line per
seed and a summary line. `python -m bench.bench_federated --rounds 10 --sites 3 --seeds 42 7`
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time

from flows.federated_training import FederatedParams, federated_training


def measure(params: FederatedParams) -> dict[str, float]:
    started = time.perf_counter()
    summary = federated_training(params)
    seconds = [r["seconds"] for r in summary.rounds]
    base = summary.baselines
    return {
        "seed": params.seed,
        "fedavg_accuracy": round(summary.test_accuracy, 4),
        "centralized_accuracy": round(base["centralized_accuracy"], 4),
        "site_mean_accuracy": round(base["site_mean_accuracy"], 4),
        "site_best_accuracy": round(base["site_best_accuracy"], 4),
        "gap_to_centralized_points": round(100 * (base["centralized_accuracy"] - summary.test_accuracy), 2),
        "round_seconds_median": round(statistics.median(seconds), 2),
        "round_seconds_max": round(max(seconds), 2),
        "flow_seconds": round(time.perf_counter() - started, 1),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--sites", type=int, default=3)
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--local-epochs", type=int, default=5)
    parser.add_argument(
        "--alpha", type=float, default=0.5, help="Dirichlet label skew (smaller = more non-IID)"
    )
    parser.add_argument("--strategy", choices=["fedavg", "fedprox"], default="fedavg")
    parser.add_argument("--seeds", type=int, nargs="+", default=[42])
    args = parser.parse_args(argv or [])
    results = []
    for seed in args.seeds:
        params = FederatedParams(
            sites=args.sites,
            rounds=args.rounds,
            local_epochs=args.local_epochs,
            dirichlet_alpha=args.alpha,
            strategy=args.strategy,
            seed=seed,
            model_name="bench-federated",
        )
        results.append(measure(params))
        print(json.dumps(results[-1]))  # noqa: T201
    keys = [k for k in results[0] if k != "seed"]
    summary = {f"mean_{k}": round(statistics.mean(r[k] for r in results), 4) for k in keys}
    summary |= {"sites": args.sites, "rounds": args.rounds, "alpha": args.alpha, "seeds": args.seeds}
    summary["within_2_points_of_centralized"] = summary["mean_gap_to_centralized_points"] <= 2.0
    summary["beats_mean_single_site"] = summary["mean_fedavg_accuracy"] > summary["mean_site_mean_accuracy"]
    print(json.dumps(summary))  # noqa: T201


if __name__ == "__main__":
    main(sys.argv[1:])
