"""Flow `platform`: the end-to-end run behind `make run` (data, knowledge, retrieval, training, agents)."""

from __future__ import annotations

import sys
from pathlib import Path

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel

from conveyor import tracking
from conveyor.registry import PromotionDecision
from conveyor.settings import ConfigurationError, get_settings
from flows.evaluate_retrieval import evaluate_retrieval
from flows.index_documents import IndexReport, index_documents
from flows.run_agent_task import EXAMPLE_TASK, AgentRunSummary, run_agent_task
from flows.train_model import train_model
from flows.train_tabular import train_tabular
from tasks.data_prep import prepare_data


class PlatformOptions(BaseModel):
    """What the end-to-end run covers."""

    benchmark: str | None = "cranfield"
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
    """Prepare data, index every knowledge domain, evaluate retrieval, train and register, run agents."""
    options = options or PlatformOptions()
    settings = get_settings()
    logger = get_run_logger()
    logger.info("MLflow tracking at %s", tracking.check_reachable())

    data = prepare_data(settings.data_dir)
    indexed = {
        folder.name: index_documents(domain=folder.name, source=str(folder))
        for folder in sorted(Path(data.knowledge_dir).iterdir())
        if folder.is_dir()
    }
    retrieval = {}
    if options.benchmark:
        retrieval = evaluate_retrieval(beir_dir=str(benchmark_dir(options.benchmark)))
    trained = {}
    if options.train:
        trained["train-tabular"] = train_tabular()
        trained["train-model"] = train_model()
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


def benchmark_dir(name: str) -> Path:
    """A BEIR collection under CONVEYOR_BENCHMARKS_DIR, or a ConfigurationError naming the missing file."""
    beir_dir = get_settings().benchmarks_dir / name
    if not (beir_dir / "corpus.jsonl").is_file():
        raise ConfigurationError(f"missing {beir_dir / 'corpus.jsonl'} (set CONVEYOR_BENCHMARKS_DIR)")
    return beir_dir


def preflight(options: PlatformOptions) -> None:
    """Check settings, the tracking store and the input files before any run starts."""
    get_settings()
    tracking.check_reachable()
    if options.benchmark:
        benchmark_dir(options.benchmark)


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
