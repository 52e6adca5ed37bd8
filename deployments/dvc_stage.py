"""Run one stage of `dvc.yaml` with its `params.yaml` section and write the stage's metrics file.

The flows read this repository's `data/` (the stages' declared deps), whatever CONVEYOR_DATA_DIR says;
state (MLflow, LanceDB, Prefect) goes where the settings say (CONVEYOR_HOME, PREFECT_API_URL).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parent.parent


def index(params: dict[str, Any]) -> dict[str, Any]:
    from flows.index_documents import index_documents

    reports = {}
    for domain in params["domains"]:
        source = str(REPO / params["source_root"] / domain)
        report = index_documents(domain=domain, source=source, delete_missing=True)
        reports[domain] = report.model_dump(mode="json")
    return reports


def evaluate(params: dict[str, Any]) -> dict[str, Any]:
    from flows.evaluate_retrieval import evaluate_retrieval

    return evaluate_retrieval(beir_dir=str((REPO / params["beir_dir"]).resolve()), split=params["split"])


def train(params: dict[str, Any]) -> dict[str, Any]:
    """Both training flows, called as a deployment would: Prefect validates the JSON into their params."""
    from flows.train_model import train_model
    from flows.train_tabular import train_tabular

    tabular = train_tabular(params["tabular"])
    neural = train_model(params["model"])
    return {"tabular": tabular.model_dump(mode="json"), "model": neural.model_dump(mode="json")}


def register(params: dict[str, Any]) -> dict[str, Any]:
    """The registry as it stands after training: each model's versions and which one holds each alias."""
    from conveyor import tracking

    client = tracking.client()
    registry = {}
    for name in params["models"]:
        versions = client.search_model_versions(f"name = '{name}'")
        # aliases come with the registered model: search_model_versions leaves ModelVersion.aliases empty
        aliases = client.get_registered_model(name).aliases if versions else {}
        registry[name] = {"versions": len(versions), **{f"{a}_version": int(n) for a, n in aliases.items()}}
    return registry


STAGES = {"index": index, "evaluate-retrieval": evaluate, "train": train, "register": register}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("stage", choices=list(STAGES))
    parser.add_argument("--metrics", type=Path, required=True, help="JSON file `dvc metrics show` reads")
    args = parser.parse_args(argv)
    os.environ["CONVEYOR_DATA_DIR"] = str(REPO / "data")  # before the first get_settings()
    from conveyor.settings import reset_settings

    reset_settings()
    params = yaml.safe_load((REPO / "params.yaml").read_text())[args.stage]
    result = STAGES[args.stage](params)
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    print(f"{args.stage}: metrics in {args.metrics}")


if __name__ == "__main__":
    main()
