"""`python -m deployments.dvc_stage STAGE`: one stage of `dvc.yaml` (the flow calls that conveyor/pipeline.py
builds from `params.yaml`), its result written as the stage's metrics file.

Run from the repository root, it runs that repository's code and reads its `data/` and `data/benchmarks/`
(the stages' declared deps), whatever is installed and whatever CONVEYOR_DATA_DIR and CONVEYOR_BENCHMARKS_DIR
say; state (MLflow, LanceDB, Prefect) goes where the settings say (CONVEYOR_HOME, PREFECT_API_URL).
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path
from typing import Any

from conveyor import pipeline, runtime
from conveyor.pipeline import PipelineParams
from conveyor.settings import get_settings, reset_settings


def index(params: PipelineParams) -> dict[str, Any]:
    from flows.index_documents import index_documents

    runs = pipeline.index_runs(params, get_settings().data_dir)
    return {run["domain"]: index_documents(**run).model_dump(mode="json") for run in runs}


def evaluate(params: PipelineParams) -> dict[str, Any]:
    from flows.evaluate_retrieval import evaluate_retrieval

    return evaluate_retrieval(**pipeline.evaluate_run(params, get_settings().benchmarks_dir))


def train(params: PipelineParams) -> dict[str, Any]:
    """Both training flows, called as a deployment would: Prefect validates the JSON into their params."""
    from flows.train_model import train_model
    from flows.train_tabular import train_tabular

    tabular = train_tabular(params.train.tabular)
    neural = train_model(params.train.model)
    return {"tabular": tabular.model_dump(mode="json"), "model": neural.model_dump(mode="json")}


def register(trained: Path) -> dict[str, Any]:
    """The registry after training: each trained model's versions and which version holds each alias."""
    from conveyor import tracking

    client = tracking.client()
    registry = {}
    for result in json.loads(trained.read_text()).values():
        name = result["decision"]["name"]
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
    parser.add_argument("--trained", type=Path, help="register: the train stage's metrics file")
    args = parser.parse_args(argv)
    if args.stage == "register" and args.trained is None:
        parser.error("register needs --trained")
    data = pipeline.REPO / "data"
    os.environ |= {"CONVEYOR_DATA_DIR": str(data), "CONVEYOR_BENCHMARKS_DIR": str(data / "benchmarks")}
    reset_settings()  # before the first get_settings()
    runtime.configure()  # before the stage imports its flow (and prefect)
    run = STAGES[args.stage]
    result = run(args.trained) if run is register else run(pipeline.load_params())
    args.metrics.parent.mkdir(parents=True, exist_ok=True)
    args.metrics.write_text(json.dumps(result, indent=2, sort_keys=True, default=str) + "\n")
    print(f"{args.stage}: metrics in {args.metrics}")


if __name__ == "__main__":
    main()
