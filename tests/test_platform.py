"""`make run`'s entry point: bad configuration stops before any run with one message naming the setting.

That the platform flow runs the DVC stages' flow calls is checked on real runs in test_dvc_pipeline.py.
"""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parent.parent  # not `from conftest import`: a second import makes a 2nd state


def run_platform(cwd: Path = REPO, **env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.end_to_end"],
        cwd=cwd,
        env=os.environ | env,
        capture_output=True,
        text=True,
        timeout=300,
    )


@pytest.mark.parametrize(
    ("env", "named"),
    [
        ({"CONVEYOR_LLM_BACKEND": "telepathy"}, "CONVEYOR_LLM_BACKEND"),
        ({"CONVEYOR_BENCHMARKS_DIR": "/nonexistent"}, "/nonexistent/cranfield/corpus.jsonl"),
        (
            {"CONVEYOR_MLFLOW_TRACKING_URI": "http://127.0.0.1:9", "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "0"},
            "CONVEYOR_MLFLOW_TRACKING_URI",
        ),
    ],
)
def test_bad_configuration_stops_with_one_clear_message(env, named):
    done = run_platform(**env)
    assert done.returncode == 2
    assert named in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "Beginning flow run" not in done.stderr + done.stdout


@pytest.mark.parametrize(
    ("section", "broken", "named"),
    [
        ("train", {"tabular": {"forest": {"n_estimator": 3}}}, "train.tabular"),
        ("train", {"model": {"epoch": 3}}, "train.model"),
        ("index", {"domain": ["python"]}, "index.domain"),
    ],
)
def test_a_broken_params_yaml_stops_before_any_run(tmp_path, section, broken, named):
    """The platform reads the repository's params.yaml (as `dvc repro` does): here a copy's, with a typo."""
    for package in ["conveyor", "flows", "tasks", "agents"]:
        shutil.copytree(REPO / package, tmp_path / package, ignore=shutil.ignore_patterns("__pycache__"))
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params[section] = {**params[section], **broken}
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    done = run_platform(cwd=tmp_path, CONVEYOR_BENCHMARKS_DIR=str(REPO / "data" / "benchmarks"))
    assert done.returncode == 2, done.stderr[-2000:]
    assert f"{tmp_path / 'params.yaml'}" in done.stderr and named in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
    assert "Beginning flow run" not in done.stderr + done.stdout
