"""BEIR-layout collections: queries.jsonl, qrels/*.tsv (graded), corpus.jsonl read by conveyor.loaders."""

from __future__ import annotations

import csv
import json
from pathlib import Path


def read_queries(beir_dir: Path) -> dict[str, str]:
    """query id -> text."""
    queries = {}
    with (beir_dir / "queries.jsonl").open(encoding="utf-8") as lines:
        for line in lines:
            if line.strip():
                record = json.loads(line)
                queries[str(record["_id"])] = record["text"]
    return queries


def read_qrels(beir_dir: Path, split: str = "test") -> dict[str, dict[str, int]]:
    """query id -> {doc id: grade}, from qrels/<split>.tsv (header row `query-id corpus-id score`)."""
    path = beir_dir / "qrels" / f"{split}.tsv"
    if not path.is_file():
        raise FileNotFoundError(f"{path} not found (BEIR layout: qrels/{split}.tsv)")
    qrels: dict[str, dict[str, int]] = {}
    with path.open(encoding="utf-8") as rows:
        reader = csv.reader(rows, delimiter="\t")
        for row in reader:
            if len(row) < 3 or row[0] == "query-id":
                continue
            qrels.setdefault(row[0], {})[row[1]] = int(float(row[2]))
    return qrels


def validate_layout(beir_dir: Path) -> None:
    """FileNotFoundError naming what a BEIR directory lacks."""
    missing = [name for name in ("corpus.jsonl", "queries.jsonl") if not (beir_dir / name).is_file()]
    if missing:
        raise FileNotFoundError(f"{beir_dir} is not a BEIR directory: missing {', '.join(missing)}")
