"""Data agent: answers questions about a dataset with pandas code run in the sandbox; numbers come from it."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Final

import pandas as pd

from agents import memory
from agents.base import Agent, AgentRequest, AgentResult, save_figures
from agents.codegen import write_code
from agents.llm import LLMUnavailable
from agents.sandbox import SandboxUnavailable, run_code
from conveyor import datasets

NAME: Final = "data"
CSV_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]*\.csv")
CHART_WORDS = re.compile(r"\b(chart|plot|graph|visuali[sz]\w*|figure|histogram)\b", re.IGNORECASE)
SYSTEM = (
    "You write short Python scripts with pandas. The data is the CSV file named below in the current "
    "folder. Put every number of the answer in a dict named `result` (plain int/float/str values or "
    "`.to_dict()`). When a chart is asked for, draw it with matplotlib and call plt.savefig('chart.png'). "
    "Reply with one ```python block only.\n\nExample. Question: What is the average price per shop in "
    "orders.csv? Draw a chart.\n```python\nimport pandas as pd\nimport matplotlib.pyplot as plt\n"
    "df = pd.read_csv('orders.csv')\nby_shop = df.groupby('shop')['price'].mean().round(2)\n"
    "result = {'average_price_by_shop': by_shop.to_dict(), 'orders': len(df)}\n"
    "by_shop.plot(kind='bar', title='Average price by shop')\nplt.tight_layout()\n"
    "plt.savefig('chart.png')\n```"
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


def describe_for_prompt(dataset_id: str) -> str:
    frame = datasets.load(dataset_id)
    columns = ", ".join(f"{name} ({dtype})" for name, dtype in frame.dtypes.astype(str).items())
    categories = {
        name: sorted(map(str, frame[name].dropna().unique()))[:8]
        for name in frame.columns
        if not pd.api.types.is_numeric_dtype(frame[name]) and frame[name].nunique() <= 8
    }
    values = "".join(f"\nValues of {name}: {', '.join(v)}" for name, v in categories.items())
    # No sample rows: the small model copies their numbers into code instead of computing.
    return f"File: {dataset_id}.csv ({len(frame)} rows)\nColumns: {columns}{values}"


def computes_from_data(dataset_id: str, chart: bool):
    """A check for generated code: it reads the CSV, sets `result`, and saves a chart when asked."""

    def check(code: str, run) -> str | None:
        if f"{dataset_id}.csv" not in code or "read_csv" not in code:
            return f"the code must load the data with pd.read_csv('{dataset_id}.csv') and compute from it"
        if run is not None and not run.result:
            return "the code must put the computed numbers in a dict named `result`"
        if chart and run is not None and not run.figures:
            return "the code must draw the chart and call plt.savefig('chart.png')"
        return None

    return check


def profile_code(dataset_id: str, chart: bool) -> str:
    """Deterministic analysis used when the model's code keeps failing: stats, a group total, a chart."""
    return f'''import pandas as pd
import matplotlib.pyplot as plt
df = pd.read_csv("{dataset_id}.csv")
numeric = df.select_dtypes("number")
groups = [c for c in df.columns if c not in numeric and 1 < df[c].nunique() <= 20]
target = "revenue" if "revenue" in numeric else numeric.columns[-1]
result = {{"rows": int(len(df)), "columns": list(df.columns),
          "totals": {{c: float(numeric[c].sum()) for c in numeric}},
          "means": {{c: round(float(numeric[c].mean()), 4) for c in numeric}}}}
if groups:
    by_group = df.groupby(groups[0])[target].sum().sort_values(ascending=False)
    result[f"{{target}}_by_{{groups[0]}}"] = {{str(k): round(float(v), 2) for k, v in by_group.items()}}
    if {chart}:
        by_group.plot(kind="bar", title=f"{{target}} by {{groups[0]}}")
        plt.tight_layout()
        plt.savefig("chart.png")
'''


def format_value(value) -> str:
    if isinstance(value, float):
        return f"{value:,.4g}" if abs(value) < 1000 else f"{value:,.2f}"
    if isinstance(value, dict):
        items = list(value.items())
        shown = ", ".join(f"{k}: {format_value(v)}" for k, v in items[:12])
        return "{" + shown + (", ..." if len(items) > 12 else "") + "}"
    if isinstance(value, list):
        return "[" + ", ".join(format_value(v) for v in value[:12]) + (", ...]" if len(value) > 12 else "]")
    return str(value)


def render_answer(dataset_id: str, result: object, fallback: bool) -> str:
    """The answer, written from the executed code's `result` only."""
    how = (
        "a standard profile (the generated code failed)"
        if fallback
        else "pandas code executed in the sandbox"
    )
    lines = [f"Computed from `{dataset_id}.csv` with {how}:"]
    items = result.items() if isinstance(result, dict) else [("result", result)]
    lines += [f"- **{key}**: {format_value(value)}" for key, value in items]
    return "\n".join(lines)


def analyze(request: DataRequest) -> AgentResult:
    """Write pandas code for the question, run it (repairing it from errors), answer from its `result`."""
    try:
        dataset_id = (
            datasets.validate_id(request.dataset)
            if request.dataset
            else find_dataset(f"{request.instruction}\n{request.context}")
        )
        files, description = dataset_files(dataset_id), describe_for_prompt(dataset_id)
    except (datasets.DatasetError, DatasetMissing) as exc:
        return AgentResult(agent=NAME, answer=f"Cannot analyse: {exc}", ok=False, error=str(exc))
    chart = bool(CHART_WORDS.search(request.instruction))
    examples = memory.examples_for_prompt(NAME, request.instruction)
    messages = [
        {"role": "system", "content": SYSTEM + examples},
        {"role": "user", "content": f"{description}\nQuestion: {request.instruction}"},
    ]
    code, run, errors = "", None, []
    try:
        attempt = write_code(
            messages, "data", files=files, max_tokens=350, check=computes_from_data(dataset_id, chart)
        )
        code, run, errors = attempt.code, attempt.run, attempt.errors
        if not attempt.ok:
            run = None
    except LLMUnavailable as exc:
        errors = [f"LLM unavailable: {exc}"]
    except SandboxUnavailable as exc:
        return AgentResult(agent=NAME, answer=f"Cannot run the analysis: {exc}", ok=False, error=str(exc))
    fallback = run is None
    if run is None:
        code = profile_code(dataset_id, chart)
        try:
            run = run_code(code, files=files)
        except SandboxUnavailable as exc:
            return AgentResult(agent=NAME, answer=f"Cannot run the analysis: {exc}", ok=False, error=str(exc))
    if not run.ok:
        return AgentResult(
            agent=NAME,
            answer=f"The analysis failed: {run.failure()}",
            ok=False,
            error=run.failure(),
            data={"dataset": dataset_id, "code": code, "errors": errors},
        )
    return AgentResult(
        agent=NAME,
        answer=render_answer(dataset_id, run.result, fallback),
        figures=save_figures(run.figures),
        data={
            "dataset": dataset_id,
            "code": code,
            "result": run.result,
            "fallback": fallback,
            "errors": errors,
            "stdout": run.stdout[:2000],
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
