"""Build the datasets the flows use (a DVC stage): knowledge-base documents and tabular CSVs.

Every output is derived from files in this repository or from packages in the environment, with
fixed seeds, so `dvc repro` rebuilds the same bytes on any machine:
- knowledge/conveyor: this project's own documentation (Markdown).
- knowledge/python: reference text of Python standard-library modules and of the pandas API used by
  the data and code agents (rendered with pydoc; PSF and BSD licensed), with code examples.
- knowledge/ml-datasets: the descriptions that scikit-learn ships with its bundled datasets.
- tabular/sales_2024.csv: synthetic daily sales (seeded generator below).
- tabular/breast_cancer.csv: the Wisconsin diagnostic breast-cancer data bundled with scikit-learn.
"""

from __future__ import annotations

import argparse
import importlib
import pydoc
import re
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
from sklearn import datasets as sk_datasets

REPO = Path(__file__).resolve().parent.parent
MEMORY_ADDRESS = re.compile(r" at 0x[0-9a-f]+")
PROJECT_DOCS = ["README.md", "docs"]
PYTHON_REFERENCE = [
    "json",
    "csv",
    "pathlib",
    "collections",
    "itertools",
    "functools",
    "re",
    "datetime",
    "statistics",
    "random",
    "math",
    "string",
    "textwrap",
    "argparse",
    "logging",
    "dataclasses",
    "subprocess",
    "shutil",
    "glob",
    "heapq",
    "bisect",
    "sqlite3",
    "hashlib",
    "zipfile",
    "tempfile",
]
PANDAS_REFERENCE = [
    "pandas.read_csv",
    "pandas.DataFrame.groupby",
    "pandas.DataFrame.agg",
    "pandas.DataFrame.pivot_table",
    "pandas.DataFrame.describe",
    "pandas.DataFrame.sort_values",
    "pandas.DataFrame.merge",
    "pandas.DataFrame.resample",
    "pandas.DataFrame.plot",
    "pandas.Series.value_counts",
    "pandas.to_datetime",
    "pandas.DataFrame.fillna",
    "pandas.DataFrame.rolling",
    "matplotlib.pyplot.savefig",
]
SKLEARN_DATASETS = ["load_iris", "load_wine", "load_breast_cancer", "load_diabetes", "load_digits"]
REGIONS = ["North", "South", "East", "West"]
PRODUCTS = {
    "Laptop": ("Electronics", 950.0),
    "Headphones": ("Electronics", 120.0),
    "Monitor": ("Electronics", 240.0),
    "Desk": ("Furniture", 310.0),
    "Chair": ("Furniture", 180.0),
    "Notebook": ("Office", 4.5),
    "Pen set": ("Office", 12.0),
    "Printer paper": ("Office", 28.0),
}


def copy_project_docs(out: Path) -> None:
    for name in PROJECT_DOCS:
        source = REPO / name
        for path in sorted(source.rglob("*.md")) if source.is_dir() else [source]:
            if path.is_file():
                target = out / path.relative_to(REPO)
                target.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(path, target)


def render_reference(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for name in PYTHON_REFERENCE:
        text = pydoc.render_doc(importlib.import_module(name), renderer=pydoc.plaintext)
        (out / f"{name}.txt").write_text(without_addresses(text), encoding="utf-8")
    for dotted in PANDAS_REFERENCE:
        text = f"{dotted}\n\n" + pydoc.plaintext.document(pydoc.locate(dotted))
        (out / f"{dotted}.txt").write_text(without_addresses(text), encoding="utf-8")


def without_addresses(text: str) -> str:
    """Drop object addresses from reprs (`<object at 0x7f...>`) so every build is byte-identical."""
    return MEMORY_ADDRESS.sub("", text)


def describe_sklearn_datasets(out: Path) -> None:
    out.mkdir(parents=True, exist_ok=True)
    for loader in SKLEARN_DATASETS:
        bunch = getattr(sk_datasets, loader)()
        (out / f"{loader.removeprefix('load_')}.rst").write_text(bunch.DESCR, encoding="utf-8")


def make_sales(seed: int = 2024, days: int = 366) -> pd.DataFrame:
    """Synthetic daily sales for 2024 with regional, weekly and seasonal effects."""
    rng = np.random.default_rng(seed)
    dates = pd.date_range("2024-01-01", periods=days, freq="D")
    rows = []
    for date in dates:
        season = 1.0 + 0.25 * np.sin(2 * np.pi * (date.day_of_year - 80) / 366)
        weekend = 0.7 if date.day_of_week >= 5 else 1.0
        for region_index, region in enumerate(REGIONS):
            for product, (category, price) in PRODUCTS.items():
                if rng.random() < 0.55:
                    continue
                mean_units = (3 + 2 * region_index) * season * weekend * (40 / (price**0.5))
                units = int(rng.poisson(max(mean_units, 0.5))) + 1
                unit_price = round(price * rng.uniform(0.9, 1.1), 2)
                channel = "online" if rng.random() < 0.45 else "store"
                rows.append((date.date().isoformat(), region, product, category, channel, units, unit_price))
    frame = pd.DataFrame(
        rows, columns=["date", "region", "product", "category", "channel", "units", "unit_price"]
    )
    frame["revenue"] = (frame["units"] * frame["unit_price"]).round(2)
    return frame


def export_breast_cancer() -> pd.DataFrame:
    bunch = sk_datasets.load_breast_cancer(as_frame=True)
    frame = bunch.frame.rename(columns=lambda c: c.replace(" ", "_"))
    return frame.rename(columns={"target": "malignant"}).assign(malignant=lambda f: 1 - f["malignant"])


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=REPO / "data")
    args = parser.parse_args(argv)
    knowledge, tabular = args.out / "knowledge", args.out / "tabular"
    for folder in (knowledge, tabular):
        shutil.rmtree(folder, ignore_errors=True)
    copy_project_docs(knowledge / "conveyor")
    render_reference(knowledge / "python")
    describe_sklearn_datasets(knowledge / "ml-datasets")
    tabular.mkdir(parents=True)
    make_sales().to_csv(tabular / "sales_2024.csv", index=False)
    export_breast_cancer().to_csv(tabular / "breast_cancer.csv", index=False)
    documents = sum(1 for p in knowledge.rglob("*") if p.is_file())
    print(f"prepared {documents} documents and 2 tables under {args.out}")


if __name__ == "__main__":
    main()
