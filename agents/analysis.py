"""A dataset analysis whose numbers are computed and labelled by code: the model only picks what to measure.

The model chooses an `AnalysisSpec` among the dataset's own columns (a schema-constrained choice, so it cannot
name a column that does not exist); `ANALYSIS_SCRIPT` runs in the sandbox on the CSV and returns findings
whose labels are built from the spec ("total revenue by region"), never written by the model. Charts are
aggregated by construction: at most `MAX_MARKS` bars or points, titled, with the measure on the y axis.
"""

from __future__ import annotations

import json
from typing import Any, Literal

import pandas as pd
from pydantic import BaseModel, Field, create_model

from agents.sandbox import Chart

MAX_MARKS = 20  # bars or points one chart series may draw, and tick labels on an axis
Aggregation = Literal["sum", "mean", "count"]
Period = Literal["week", "month", "quarter"]


class AnalysisSpec(BaseModel):
    measure: str = Field(description="The numeric column to measure.")
    aggregation: Aggregation = "sum"
    group_by: str | None = Field(None, description="A category column to compare groups by, or null.")
    date: str | None = Field(None, description="A date column to follow the measure over time, or null.")
    period: Period = "month"


class Finding(BaseModel):
    label: str
    value: float | int | str
    unit: str = ""


class Analysis(BaseModel):
    """What the script returns: labelled findings and the tables they come from."""

    findings: list[Finding]
    tables: dict[str, dict[str, float]] = {}

    def value(self, label: str) -> float | int | str:
        return next(f.value for f in self.findings if f.label == label)


def unreadable(chart: Chart) -> str | None:
    """Why a chart would not read well (too many bars, points or tick labels; no title; no measure on the
    y axis), or None. Scatter plots may show every row."""
    marks = max(chart.bars, chart.line_points)
    if marks > MAX_MARKS or chart.x_tick_labels > MAX_MARKS:
        return (
            f"the chart {chart.title or '(untitled)'!r} draws {marks} bars/points with {chart.x_tick_labels} "
            f"x labels: aggregate first (totals by group, or per month with resample), at most {MAX_MARKS}"
        )
    if not chart.title.strip() or not chart.ylabel.strip():
        return "give every chart a title and a y-axis label naming the measure and its unit"
    return None


def column_roles(frame: pd.DataFrame) -> dict[str, list[str]]:
    """Numeric measures, category columns (text with 2 to 50 values, or numbers with 2 to 10) and date
    columns of a dataset."""
    numeric = [c for c in frame.columns if pd.api.types.is_numeric_dtype(frame[c])]
    dates = [
        c
        for c in frame.columns
        if c not in numeric
        and pd.to_datetime(frame[c].head(50), errors="coerce", format="mixed").notna().all()
    ]
    categories = [
        c for c in frame.columns if c not in dates and 2 <= frame[c].nunique() <= (10 if c in numeric else 50)
    ]
    return {"measures": numeric, "categories": categories, "dates": dates}


def spec_schema(roles: dict[str, list[str]]) -> type[AnalysisSpec]:
    """`AnalysisSpec` whose column fields accept only this dataset's columns of the right kind."""

    def one_of(columns: list[str], optional: bool) -> Any:
        if not columns:
            return (None, None)  # the dataset has no such column: only null is accepted
        choice: Any = Literal[tuple(columns)]
        return (choice | None, None) if optional else (choice, ...)

    return create_model(
        "AnalysisSpec",
        __base__=AnalysisSpec,
        measure=one_of(roles["measures"], optional=False),
        group_by=one_of(roles["categories"], optional=True),
        date=one_of(roles["dates"], optional=True),
    )


def default_spec(roles: dict[str, list[str]]) -> AnalysisSpec:
    """The spec used when no model chooses: the last measure that is not a category, the first category
    and the first date."""
    measures = [c for c in roles["measures"] if c not in roles["categories"]] or roles["measures"]
    return AnalysisSpec(
        measure=measures[-1],
        group_by=next(iter(roles["categories"]), None),
        date=next(iter(roles["dates"]), None),
    )


def analysis_code(file_name: str, spec: AnalysisSpec, chart: bool) -> str:
    """The script the sandbox runs for `spec` on `file_name` (its `result` is an `Analysis`)."""
    config = {"file": file_name, "chart": chart, "max_marks": MAX_MARKS, **spec.model_dump()}
    return f"import json\n\nCONFIG = json.loads({json.dumps(json.dumps(config))})\n{ANALYSIS_SCRIPT}"


# Runs in the sandbox: plain pandas and matplotlib, reading CONFIG; every label is built here.
ANALYSIS_SCRIPT = """
import matplotlib.pyplot as plt
import numpy as np
import pandas as pd

df = pd.read_csv(CONFIG["file"])
measure, how, group, date = CONFIG["measure"], CONFIG["aggregation"], CONFIG["group_by"], CONFIG["date"]
what = {"sum": f"total {measure}", "mean": f"average {measure}", "count": "number of rows"}[how]
findings, tables = [{"label": "rows", "value": len(df)}], {}


def add(label, value, unit=""):
    value = round(float(value), 2) if isinstance(value, (int, float, np.number)) else str(value)
    findings.append({"label": label, "value": value, "unit": unit})


def aggregate(grouped):
    return grouped.size() if how == "count" else grouped[measure].agg(how)


def bar_chart(series, title, xlabel):
    fig, ax = plt.subplots(figsize=(8, 4.5))
    series.plot(kind="bar", ax=ax, color="#2b6cb0")
    ax.set(title=title, xlabel=xlabel, ylabel=what)
    ax.tick_params(axis="x", labelrotation=30)
    fig.tight_layout()
    fig.savefig(f"chart_{len(tables)}.png", dpi=90)


add(f"{what} over all rows", len(df) if how == "count" else df[measure].agg(how))
if group:
    by_group = aggregate(df.groupby(group)).sort_values(ascending=False)
    tables[f"{what} by {group}"] = {str(k): round(float(v), 2) for k, v in by_group.items()}
    add(f"largest {group} by {what}", by_group.index[0])
    add(f"{what} of the largest {group}", by_group.iloc[0])
    add(f"smallest {group} by {what}", by_group.index[-1])
    add(f"{what} of the smallest {group}", by_group.iloc[-1])
    if how != "mean":
        add(f"share of the largest {group} in {what}", 100 * by_group.iloc[0] / by_group.sum(), "%")
    if CONFIG["chart"]:
        shown = by_group.head(CONFIG["max_marks"])
        more = " (largest shown)" if len(by_group) > len(shown) else ""
        bar_chart(shown, f"{what.capitalize()} by {group}{more}", group)
if date:
    when = pd.to_datetime(df[date], errors="coerce")
    dated = df.assign(_when=when).dropna(subset=["_when"]).set_index("_when").sort_index()
    periods = {"week": "W-MON", "month": "MS", "quarter": "QS", "year": "YS"}
    period = CONFIG["period"]
    series = aggregate(dated.resample(periods[period]))
    while len(series) > CONFIG["max_marks"] and period != "year":  # coarser until a chart stays readable
        period = list(periods)[list(periods).index(period) + 1]
        series = aggregate(dated.resample(periods[period]))
    fmt = {"year": "%Y", "quarter": "%Y-%m", "month": "%Y-%m", "week": "%Y-%m-%d"}[period]
    tables[f"{what} per {period}"] = {k.strftime(fmt): round(float(v), 2) for k, v in series.items()}
    add("first date", dated.index[0].date())
    add("last date", dated.index[-1].date())
    add(f"{what} in the first {period} ({series.index[0].strftime(fmt)})", series.iloc[0])
    add(f"{what} in the last {period} ({series.index[-1].strftime(fmt)})", series.iloc[-1])
    if series.iloc[0]:
        change = 100 * (series.iloc[-1] / series.iloc[0] - 1)
        add(f"change of {what} from the first to the last {period}", change, "%")
    add(f"{period} with the highest {what}", series.idxmax().strftime(fmt))
    add(f"highest {what} in one {period}", series.max())
    add(f"{period} with the lowest {what}", series.idxmin().strftime(fmt))
    add(f"lowest {what} in one {period}", series.min())
    if len(series) > 2:
        slope = np.polyfit(np.arange(len(series)), series.to_numpy(float), 1)[0]
        add(f"trend of {what} per {period} (least-squares slope)", slope)
    daily = aggregate(dated.resample("D")).loc[lambda s: s.index.isin(dated.index.normalize())]
    q1, q3 = daily.quantile([0.25, 0.75])
    high = daily[daily > q3 + 1.5 * (q3 - q1)].sort_values(ascending=False)
    add(f"outlier days (daily {what} above Q3 + 1.5 IQR)", len(high))
    if len(high):
        add(f"day with the highest {what}", high.index[0].date())
        add(f"{what} on that day", high.iloc[0])
    if CONFIG["chart"]:
        fig, ax = plt.subplots(figsize=(8, 4.5))
        ax.plot(series.index.strftime(fmt), series.to_numpy(), marker="o", color="#2b6cb0")
        ax.set(title=f"{what.capitalize()} per {period}", xlabel=period, ylabel=what)
        ax.tick_params(axis="x", labelrotation=45)
        fig.tight_layout()
        fig.savefig(f"chart_{len(tables)}.png", dpi=90)
elif how != "count":
    q1, q3 = df[measure].quantile([0.25, 0.75])
    add(f"outlier rows ({measure} above Q3 + 1.5 IQR)", int((df[measure] > q3 + 1.5 * (q3 - q1)).sum()))
numeric = df.select_dtypes("number").loc[:, lambda f: f.nunique() > 1]
if numeric.shape[1] > 1:
    pairs = numeric.corr().where(np.triu(np.ones((numeric.shape[1],) * 2, dtype=bool), k=1)).stack()
    (a, b), r = pairs.abs().idxmax(), pairs[pairs.abs().idxmax()]
    add(f"strongest correlation between numeric columns ({a} and {b}, Pearson r)", r)
result = {"findings": findings, "tables": tables}
"""


def render(dataset_id: str, analysis: Analysis, how: str) -> str:
    """Markdown of the findings and tables, every number with its label."""
    lines = [f"Computed from `{dataset_id}.csv` by pandas code executed in the sandbox ({how}):", ""]
    lines += [
        f"- **{f.label}**: {_number(f.value)}{' ' + f.unit if f.unit else ''}" for f in analysis.findings
    ]
    for title, table in analysis.tables.items():
        lines += ["", f"| {title.split(' by ')[-1].split(' per ')[-1]} | {title} |", "|---|---:|"]
        lines += [f"| {key} | {_number(value)} |" for key, value in table.items()]
    return "\n".join(lines)


def _number(value: float | int | str) -> str:
    return f"{value:,.2f}".rstrip("0").rstrip(".") if isinstance(value, float) else str(value)
