"""Dataset preparation through DVC: rebuilds `data/` only when its inputs changed."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from prefect import get_run_logger, task
from prefect.cache_policies import NONE
from pydantic import BaseModel

from conveyor import pipeline
from conveyor.settings import ConfigurationError


class PreparedData(BaseModel):
    stage: str
    reused: bool
    knowledge_dir: str
    tabular_dir: str


@task(name="prepare-data", cache_policy=NONE, retries=0)
def prepare_data(data_dir: Path, stage: str = "prepare-data") -> PreparedData:
    """Run the DVC stage that builds the datasets; DVC skips it when nothing it depends on changed."""
    logger = get_run_logger()
    repo = pipeline.REPO
    if (repo / "dvc.yaml").is_file() and (repo / ".dvc").is_dir() and data_dir.resolve() == repo / "data":
        reused = not pipeline.reproduce(stage)
        how = f"dvc repro {stage}"
    else:  # a data folder outside the repo (tests, custom CONVEYOR_DATA_DIR): build it directly
        command = [sys.executable, str(repo / "data" / "prepare.py"), "--out", str(data_dir)]
        done = subprocess.run(command, capture_output=True, text=True)
        how = " ".join(command[1:])
        if done.returncode != 0:
            raise ConfigurationError(f"preparing data failed ({how}): {done.stderr.strip()[-800:]}")
        reused = False
    logger.info("data %s (%s)", "unchanged: DVC reused it" if reused else "rebuilt", how)
    for needed in (data_dir / "knowledge", data_dir / "tabular"):
        if not needed.is_dir():
            raise ConfigurationError(f"missing data folder {needed} after `{how}`")
    return PreparedData(
        stage=stage,
        reused=reused,
        knowledge_dir=str(data_dir / "knowledge"),
        tabular_dir=str(data_dir / "tabular"),
    )
