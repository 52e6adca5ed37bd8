"""`make run`'s entry point: bad configuration stops before any run with one message naming the setting."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent  # not `from conftest import`: a second import makes a 2nd state


def run_platform(**env: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "flows.platform"],
        cwd=REPO,
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
