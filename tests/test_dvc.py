"""The DVC pipeline: stage graph, `dvc repro prepare-data` in a scratch copy (reuse, re-run; the CLI and
DVC's Python API), which files a lock pins, remote, metrics.

The whole pipeline, every stage for real, is in test_dvc_pipeline.py; its code deps in
test_pipeline_definition.py.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from conveyor import runtime
from conveyor.pipeline import locked_md5, reproduce
from conveyor.settings import ConfigurationError

REPO = Path(__file__).resolve().parent.parent
PIPELINE = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
DVC = [sys.executable, "-m", "dvc"]
METRICS = {
    "index": "metrics/index.json",
    "evaluate-retrieval": "metrics/retrieval.json",
    "train": "metrics/train.json",
    "register": "metrics/registry.json",
}


def dvc(*args: str, cwd: Path) -> str:
    env = runtime.with_tools(os.environ)  # the stages' `python` is this environment's
    done = subprocess.run([*DVC, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"dvc {' '.join(args)}:\n{done.stdout}\n{done.stderr}"
    return done.stdout


@pytest.fixture(scope="module")
def scratch(tmp_path_factory) -> Path:
    """A copy of what `prepare-data` needs, as its own git + DVC repository with a local remote."""
    root = tmp_path_factory.mktemp("dvc-scratch")
    for name in ["dvc.yaml", "params.yaml", ".dvcignore", "README.md", "data/prepare.py", "data/__init__.py"]:
        (root / name).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy(REPO / name, root / name)
    shutil.copytree(REPO / "docs", root / "docs") if (REPO / "docs").is_dir() else (root / "docs").mkdir()
    subprocess.run(["git", "init", "-q"], cwd=root, check=True)
    dvc("init", "-q", cwd=root)
    dvc("remote", "add", "-d", "local", str(root.parent / f"{root.name}-remote"), cwd=root)
    return root


class TestPipeline:
    def test_stages_run_in_order(self):
        assert list(PIPELINE) == ["prepare-data", "index", "evaluate-retrieval", "train", "register"]
        assert PIPELINE["prepare-data"]["outs"] == ["data/knowledge", "data/tabular"]
        assert "data/knowledge" in PIPELINE["index"]["deps"] and "data/tabular" in PIPELINE["train"]["deps"]
        assert METRICS["index"] in PIPELINE["evaluate-retrieval"]["deps"]
        assert METRICS["train"] in PIPELINE["register"]["deps"]

    def test_every_stage_reads_its_params_section_and_writes_metrics(self):
        params = yaml.safe_load((REPO / "params.yaml").read_text())
        for stage, metrics in METRICS.items():
            assert PIPELINE[stage]["metrics"] == [{metrics: {"cache": False}}]
        for stage in ["index", "evaluate-retrieval", "train"]:
            assert PIPELINE[stage]["params"] == [stage] and stage in params
        # register reads which models train registered from train's metrics, not from a list of its own
        assert "params" not in PIPELINE["register"] and "register" not in params
        assert f"--trained {METRICS['train']}" in PIPELINE["register"]["cmd"]

    def test_flow_stages_depend_on_their_runner_and_the_benchmark(self):
        for stage in METRICS:
            assert "deployments/dvc_stage.py" in PIPELINE[stage]["deps"], stage
            assert PIPELINE[stage]["cmd"].startswith(f"python -m deployments.dvc_stage {stage} "), stage
        # the BEIR collection named in params.yaml: a changed benchmark re-runs the evaluation
        assert "data/benchmarks/${evaluate-retrieval.collection}" in PIPELINE["evaluate-retrieval"]["deps"]

    def test_the_repository_pipeline_is_valid(self):
        listed = dvc("stage", "list", cwd=REPO)
        assert all(stage in listed for stage in PIPELINE)


class TestRepro:
    def test_first_run_builds_the_data(self, scratch: Path):
        out = dvc("repro", "prepare-data", cwd=scratch)
        assert "Running stage 'prepare-data'" in out
        assert any((scratch / "data" / "knowledge").rglob("*.md"))
        assert (scratch / "data" / "tabular" / "sales_2024.csv").is_file()

    def test_second_run_skips_the_unchanged_stage(self, scratch: Path):
        out = dvc("repro", "prepare-data", cwd=scratch)
        assert "Running stage" not in out
        assert "didn't change" in out or "up to date" in out
        assert json.loads(dvc("status", "--json", "prepare-data", cwd=scratch)) == {}
        assert reproduce("prepare-data", repo=scratch) is False  # what the platform flow calls

    def test_training_runs_know_whether_dvc_tracks_their_csv(self, scratch: Path):
        csv = scratch / "data" / "tabular" / "breast_cancer.csv"
        locked = locked_md5(csv, repo=scratch)
        assert locked == hashlib.md5(csv.read_bytes()).hexdigest()
        csv.write_text(csv.read_text() + "\n")  # edited after the lock: the lock still pins the old bytes
        assert locked_md5(csv, repo=scratch) == locked != hashlib.md5(csv.read_bytes()).hexdigest()
        assert locked_md5(scratch / "README.md", repo=scratch) is None  # in git, not a DVC output
        assert locked_md5(scratch.parent / "elsewhere.csv", repo=scratch) is None
        assert json.loads(dvc("status", "--json", "prepare-data", cwd=scratch)) == {
            "prepare-data": [{"changed outs": {"data/tabular": "modified"}}]
        }

    def test_a_changed_dependency_reruns_the_stage(self, scratch: Path):
        with (scratch / "README.md").open("a") as readme:
            readme.write("\nOne more line for the knowledge base.\n")
        assert reproduce("prepare-data", repo=scratch) is True
        assert "Running stage" not in dvc("repro", "prepare-data", cwd=scratch)

    def test_a_failing_stage_is_a_configuration_error_naming_it(self, scratch: Path):
        with pytest.raises(ConfigurationError, match="dvc status --json no-such-stage"):
            reproduce("no-such-stage", repo=scratch)

    def test_push_and_pull_through_the_local_remote(self, scratch: Path):
        dvc("push", cwd=scratch)
        shutil.rmtree(scratch / "data" / "tabular")
        dvc("pull", cwd=scratch)
        assert (scratch / "data" / "tabular" / "breast_cancer.csv").is_file()
        assert "up to date" in dvc("status", "prepare-data", cwd=scratch).lower()


def test_register_stage_writes_metrics_dvc_reads(scratch: Path, settings):
    trained = scratch / "metrics" / "train.json"
    trained.parent.mkdir(exist_ok=True)
    trained.write_text(json.dumps({"tabular": {"decision": {"name": "never-trained"}}}))
    metrics = scratch / "metrics" / "registry.json"
    command = [sys.executable, "-m", "deployments.dvc_stage", "register"]
    command += ["--trained", str(trained), "--metrics", str(metrics)]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True, timeout=300)
    shown = json.loads(dvc("metrics", "show", "--json", str(metrics.relative_to(scratch)), cwd=scratch))
    assert shown[""]["data"]["metrics/registry.json"]["data"] == {"never-trained": {"versions": 0}}
