"""Data agent: the model picks what to measure in a dataset; sandboxed pandas code computes and labels it."""

from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Final

import pandas as pd

from agents.analysis import (
    Analysis,
    AnalysisSpec,
    analysis_code,
    column_roles,
    default_spec,
    render,
    spec_schema,
)
from agents.base import Agent, AgentRequest, AgentResult, save_figures
from agents.llm import LLMUnavailable, StructuredOutputError, get_llm
from agents.sandbox import SandboxUnavailable, run_code
from conveyor import datasets, prompts

NAME: Final = "data"
log = logging.getLogger(__name__)
CSV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.csv")
CHART_WORDS = re.compile(r"\b(chart|plot|graph|visuali[sz]\w*|figure|histogram)\b", re.IGNORECASE)
SYSTEM = (
    "You choose how to analyse a CSV dataset to answer a question. Reply with JSON: `measure`, the numeric "
    "column the question is about; `aggregation`: sum for totals, mean for averages or typical values, count "
    "for how many rows; `group_by`: the category column whose groups to compare, or null; `date`: the date "
    "column when the question asks about time, trends or months, or for a general report, else null; "
    "`period`: week, month or quarter."
)


class DataRequest(AgentRequest):
    dataset: str | None = None


class DatasetMissing(ValueError):
    """The request names no dataset the catalog knows."""


def find_dataset(text: str) -> str:
    """The dataset id named in `text` (a known id, or a `name.csv` that the catalog validates)."""
    known = [d.id for d in datasets.list_datasets()]
    for candidate in CSV_NAME.findall(text):
        if datasets.validate_id(candidate) in known:
            return datasets.validate_id(candidate)
    for dataset_id in sorted(known, key=len, reverse=True):
        if re.search(rf"\b{re.escape(dataset_id)}\b", text):
            return dataset_id
    raise DatasetMissing(f"no known dataset is named (known: {', '.join(known) or 'none'})")


def dataset_files(dataset_id: str) -> dict[str, Path]:
    return {f"{datasets.validate_id(dataset_id)}.csv": datasets.dataset_path(dataset_id)}


def describe_for_prompt(dataset_id: str, frame: pd.DataFrame | None = None) -> str:
    """The dataset's file, size, columns and few-valued categories (`frame`: the dataset, when loaded)."""
    frame = datasets.load(dataset_id) if frame is None else frame
    columns = ", ".join(f"{name} ({dtype})" for name, dtype in frame.dtypes.astype(str).items())
    categories = {
        name: sorted(map(str, frame[name].dropna().unique()))[:8]
        for name in frame.columns
        if not pd.api.types.is_numeric_dtype(frame[name]) and frame[name].nunique() <= 8
    }
    values = "".join(f"\nValues of {name}: {', '.join(v)}" for name, v in categories.items())
    # No sample rows: the small model copies their numbers into code instead of computing.
    return f"File: {dataset_id}.csv ({len(frame)} rows)\nColumns: {columns}{values}"


def choose_spec(
    instruction: str, dataset_id: str, frame: pd.DataFrame, roles: dict[str, list[str]]
) -> tuple[AnalysisSpec, str]:
    """The model's choice of what to measure (limited to the dataset's `roles` columns), or the default spec
    when the model is unavailable; returns the spec and how it was chosen ("llm" or "default")."""
    messages = [
        {"role": "system", "content": prompts.system_prompt(NAME, SYSTEM).text},
        {"role": "user", "content": f"{describe_for_prompt(dataset_id, frame)}\nQuestion: {instruction}"},
    ]
    try:
        return get_llm("data").structured(messages, spec_schema(roles), max_tokens=80), "llm"
    except (LLMUnavailable, StructuredOutputError) as exc:
        log.warning("data agent: default analysis of %s (%s)", dataset_id, exc)
        return default_spec(roles), "default"


def analyze(request: DataRequest) -> AgentResult:
    """Measure what the question asks (the model picks columns), compute it in the sandbox, report the
    labelled findings and charts."""
    try:
        dataset_id = (
            datasets.validate_id(request.dataset)
            if request.dataset
            else find_dataset(f"{request.instruction}\n{request.context}")
        )
        frame = datasets.load(dataset_id)
        roles = column_roles(frame)
    except (datasets.DatasetError, DatasetMissing) as exc:
        return AgentResult(agent=NAME, answer=f"Cannot analyse: {exc}", ok=False, error=str(exc))
    if not roles["measures"]:
        return AgentResult(
            agent=NAME, answer=f"{dataset_id} has no numeric column", ok=False, error="no measure"
        )
    spec, method = choose_spec(request.instruction, dataset_id, frame, roles)
    code = analysis_code(f"{dataset_id}.csv", spec, chart=bool(CHART_WORDS.search(request.instruction)))
    try:
        run = run_code(code, files=dataset_files(dataset_id))
    except SandboxUnavailable as exc:
        return AgentResult(agent=NAME, answer=f"Cannot run the analysis: {exc}", ok=False, error=str(exc))
    if not run.ok:
        return AgentResult(
            agent=NAME,
            answer=f"The analysis failed: {run.failure()}",
            ok=False,
            error=run.failure(),
            data={"dataset": dataset_id, "spec": spec.model_dump(), "spec_method": method, "code": code},
        )
    analysis = Analysis.model_validate(run.result)
    chosen = "the model chose" if method == "llm" else "model unavailable, default choice"
    how = f"{chosen}: {spec.aggregation} of {spec.measure}" + "".join(
        f", {name} {value}" for name, value in (("by", spec.group_by), ("over", spec.date)) if value
    )
    return AgentResult(
        agent=NAME,
        answer=render(dataset_id, analysis, how),
        figures=save_figures(run.figures),
        data={
            "dataset": dataset_id,
            "spec": spec.model_dump(),
            "spec_method": method,
            "code": code,
            "result": analysis.model_dump(),
            "charts": [c.model_dump() for c in run.charts],
            "isolation": run.isolation,
        },
    )


AGENT = Agent(
    name=NAME,
    description=(
        "Computes numbers or charts from a named CSV dataset (sales_2024.csv, breast_cancer.csv) "
        "with pandas. "
        "Example: 'Average revenue per region in sales_2024.csv'"
    ),
    request=DataRequest,
    run=analyze,
)
