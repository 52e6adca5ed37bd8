"""Flow `platform`: the end-to-end run behind `make run` (data, knowledge, retrieval, training, agents).

Indexing, evaluation and training run the same flow calls as the DVC stages (`dvc repro`), built by
conveyor/pipeline.py from `params.yaml`: the two cannot disagree.
"""

from __future__ import annotations

import sys

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, ValidationError

from conveyor import pipeline, tracking
from conveyor.registry import PromotionDecision
from conveyor.settings import ConfigurationError, get_settings
from flows.evaluate_retrieval import evaluate_retrieval
from flows.index_documents import IndexReport, index_documents
from flows.run_agent_task import EXAMPLE_TASK, AgentRunSummary, run_agent_task
from flows.train_model import TrainModelParams, train_model
from flows.train_router import train_router
from flows.train_tabular import TrainTabularParams, train_tabular
from tasks.data_prep import prepare_data


class PlatformOptions(BaseModel):
    """Which steps the end-to-end run covers; what they run is params.yaml's (conveyor/pipeline.py)."""

    evaluate: bool = True
    train: bool = True
    agent_task: str | None = EXAMPLE_TASK


class PlatformSummary(BaseModel):
    data_reused: bool
    indexed: dict[str, str]
    retrieval: dict[str, float]
    trained: dict[str, str]
    agent_report: str | None


@flow(name="platform", log_prints=True)
def platform(options: PlatformOptions | None = None) -> PlatformSummary:
    """Prepare data, index the knowledge domains, evaluate retrieval, train and register, run agents."""
    options = options or PlatformOptions()
    settings = get_settings()
    logger = get_run_logger()
    logger.info("MLflow tracking at %s", tracking.check_reachable())
    params = pipeline.load_params()

    data = prepare_data(settings.data_dir)
    indexed = {
        run["domain"]: index_documents(**run) for run in pipeline.index_runs(params, settings.data_dir)
    }
    retrieval = {}
    if options.evaluate:
        retrieval = evaluate_retrieval(**pipeline.evaluate_run(params, settings.benchmarks_dir))
    trained = {}
    if options.train:
        trained["train-tabular"] = train_tabular(params.train.tabular)
        trained["train-model"] = train_model(params.train.model)
        trained["train-router"] = train_router()  # its input is agents/router_training.jsonl, not params.yaml
    agent_run = run_agent_task(task=options.agent_task) if options.agent_task else None

    summary = PlatformSummary(
        data_reused=data.reused,
        indexed={domain: _indexed(report) for domain, report in indexed.items()},
        retrieval={k: float(v) for k, v in retrieval.items() if isinstance(v, int | float)},
        trained={name: _promotion(result.decision) for name, result in trained.items()},
        agent_report=_agent_run(agent_run) if agent_run is not None else None,
    )
    create_markdown_artifact(key="platform-summary", markdown=_markdown(summary), description="make run")
    return summary


def _indexed(report: IndexReport) -> str:
    work = (
        "nothing to embed (unchanged)"
        if report.chunks_embedded == 0
        else f"{report.chunks_embedded} chunks embedded"
    )
    return (
        f"{report.added} added, {report.updated} updated, {report.deleted} deleted, "
        f"{report.unchanged} unchanged; {work}; {report.rows} rows, table version {report.table_version}"
    )


def _promotion(decision: PromotionDecision) -> str:
    champion = (
        f"champion v{decision.champion_version} {decision.champion_value:.4f}"
        if decision.champion_version
        else "no champion"
    )
    verdict = "promoted to @champion" if decision.promoted else "kept as @challenger"
    challenger = f"{decision.metric}={decision.challenger_value:.4f}"
    return f"{decision.name} v{decision.version} {challenger} ({champion}): {verdict}"


def _agent_run(run: AgentRunSummary) -> str:
    steps = ", ".join(f"{step} {state}" for step, state in run.steps.items())
    return f"{run.plan_method} plan ({steps}); report {run.report}"


def _markdown(summary: PlatformSummary) -> str:
    lines = [
        "# Conveyor platform run",
        "",
        f"- data: {'unchanged, reused by DVC' if summary.data_reused else 'rebuilt'}",
    ]
    lines += [f"- index `{domain}`: {report}" for domain, report in summary.indexed.items()]
    if summary.retrieval:
        lines.append(
            "- retrieval: " + ", ".join(f"{k} {v:.4f}" for k, v in summary.retrieval.items() if "@" in k)
        )
    lines += [f"- {name}: {result}" for name, result in summary.trained.items()]
    if summary.agent_report:
        lines.append(f"- agent task: {summary.agent_report}")
    return "\n".join(lines)


def preflight(options: PlatformOptions) -> None:
    """Check settings, the tracking store, params.yaml and the input files before any run starts."""
    settings = get_settings()
    tracking.check_reachable()
    params = pipeline.load_params()
    if options.evaluate:
        pipeline.evaluate_run(params, settings.benchmarks_dir)
    if options.train:
        for model, section in [(TrainTabularParams, "tabular"), (TrainModelParams, "model")]:
            try:
                model.model_validate(getattr(params.train, section))
            except ValidationError as exc:
                raise ConfigurationError(f"{pipeline.PARAMS_FILE} train.{section}: {exc}") from None


def main() -> None:
    options = PlatformOptions()
    try:
        preflight(options)
    except ConfigurationError as exc:
        print(f"conveyor: {exc}", file=sys.stderr)
        raise SystemExit(2) from None
    summary = platform(options)
    settings = get_settings()
    print(_markdown(summary))
    print(
        "\nWhere to look:\n"
        f"  state folder   {settings.state_dir}\n"
        f"  Prefect UI     make up, then http://127.0.0.1:{settings.prefect_port}/runs (runs, artifacts)\n"
        f"  MLflow UI      make up, then http://127.0.0.1:{settings.mlflow_port} (experiments, registry)\n"
        f"  chat API       make up, then http://{settings.api_host}:{settings.api_port}/ (docs at /docs)"
    )


if __name__ == "__main__":
    main()
