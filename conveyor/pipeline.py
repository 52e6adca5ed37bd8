"""The pipeline's one definition and DVC's view of it, for `dvc repro` and the `platform` flow alike.

`params.yaml` says which knowledge domains are indexed, which BEIR collection is evaluated and how both
models are trained; the DVC stages (deployments/dvc_stage.py) and the `platform` flow (`make run`) both run
the flow calls built here from it, so the two cannot disagree. DVC answers in JSON (`dvc status --json`) or
through its file system API, never as scraped text.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from conveyor import runtime
from conveyor.settings import ConfigurationError

REPO = Path(__file__).resolve().parent.parent
PARAMS_FILE = REPO / "params.yaml"


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)  # a mistyped key is an error


class IndexParams(_Section):
    domains: list[str] = Field(min_length=1, description="Folders of <data_dir>/knowledge, one domain each.")


class EvaluateParams(_Section):
    collection: str = Field(description="A BEIR-layout folder under the benchmarks folder.")
    split: str = Field(description="Which qrels/<split>.tsv judges the run.")


class TrainParams(_Section):
    """Each training flow's `params` (TrainTabularParams, TrainModelParams): the flows validate them."""

    tabular: dict[str, Any]
    model: dict[str, Any]


class PipelineParams(_Section):
    index: IndexParams
    evaluate_retrieval: EvaluateParams = Field(alias="evaluate-retrieval")
    train: TrainParams


def load_params(path: Path = PARAMS_FILE) -> PipelineParams:
    """params.yaml, checked: a missing file, bad YAML or a mistyped key is a ConfigurationError naming it."""
    try:
        return PipelineParams.model_validate(yaml.safe_load(path.read_text()))
    except (OSError, yaml.YAMLError, ValidationError) as exc:
        raise ConfigurationError(f"{path}: {exc}") from None


def index_runs(params: PipelineParams, data_dir: Path) -> list[dict[str, Any]]:
    """The `index-documents` calls of the index stage: one per domain, dropping documents gone from disk."""
    knowledge = data_dir.resolve() / "knowledge"
    return [
        {"domain": domain, "source": str(knowledge / domain), "delete_missing": True}
        for domain in params.index.domains
    ]


def evaluate_run(params: PipelineParams, benchmarks_dir: Path) -> dict[str, Any]:
    """The `evaluate-retrieval` call of its stage; a ConfigurationError if the collection is missing."""
    beir_dir = benchmarks_dir.resolve() / params.evaluate_retrieval.collection
    if not (beir_dir / "corpus.jsonl").is_file():
        raise ConfigurationError(f"missing {beir_dir / 'corpus.jsonl'} (set CONVEYOR_BENCHMARKS_DIR)")
    return {"beir_dir": str(beir_dir), "split": params.evaluate_retrieval.split}


def reproduce(stage: str, repo: Path = REPO) -> bool:
    """`dvc repro STAGE` (that stage only): True when it ran, False when `dvc status` found no change."""
    changed = json.loads(_dvc(repo, "status", "--json", stage))  # {} when the stage is up to date
    _dvc(repo, "repro", "--single-item", stage)
    return bool(changed)


def _dvc(repo: Path, *args: str) -> str:
    """DVC's CLI in the repository (its Python API resolves paths from the working directory); the stages'
    commands (`python ...`) run this environment's Python."""
    done = subprocess.run(
        [sys.executable, "-m", "dvc", *args],
        cwd=repo,
        env=runtime.with_tools(os.environ),
        capture_output=True,
        text=True,
    )
    if done.returncode != 0:
        raise ConfigurationError(f"`dvc {' '.join(args)}` in {repo} failed: {done.stderr.strip()[-800:]}")
    return done.stdout


def locked_md5(path: Path, repo: Path = REPO) -> str | None:
    """The md5 that `dvc.lock` pins for this file (in a locked output), or None when DVC doesn't track it."""
    from dvc.api import DVCFileSystem
    from dvc.exceptions import NotDvcRepoError

    path, repo = path.resolve(), repo.resolve()
    if not path.is_relative_to(repo):
        return None
    try:
        info = DVCFileSystem(str(repo)).info(path.relative_to(repo).as_posix())
    except (FileNotFoundError, NotDvcRepoError):
        return None
    return info.get("dvc_info", {}).get("md5")
