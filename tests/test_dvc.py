"""The DVC pipeline: stage graph, `dvc repro prepare-data` in a scratch copy (reuse, re-run), remote, metrics.

The whole pipeline, every stage for real, is in test_dvc_pipeline.py.
"""

from __future__ import annotations

import hashlib
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from tasks.training import dvc_tracks

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
    done = subprocess.run([*DVC, *args], cwd=cwd, capture_output=True, text=True, timeout=600)
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
            assert PIPELINE[stage]["params"] == [stage] and stage in params
            assert PIPELINE[stage]["metrics"] == [{metrics: {"cache": False}}]

    def test_flow_stages_depend_on_their_runner_and_the_benchmark(self):
        for stage in METRICS:
            assert "deployments/dvc_stage.py" in PIPELINE[stage]["deps"], stage
        # the BEIR collection named in params.yaml: a changed benchmark re-runs the evaluation
        assert "${evaluate-retrieval.beir_dir}" in PIPELINE["evaluate-retrieval"]["deps"]

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

    def test_training_runs_know_whether_dvc_tracks_their_csv(self, scratch: Path):
        csv = scratch / "data" / "tabular" / "breast_cancer.csv"
        md5 = hashlib.md5(csv.read_bytes()).hexdigest()
        assert dvc_tracks(csv, md5, repo=scratch)
        assert not dvc_tracks(csv, "0" * 32, repo=scratch)  # edited after the lock
        assert not dvc_tracks(scratch / "elsewhere.csv", md5, repo=scratch)

    def test_a_changed_dependency_reruns_the_stage(self, scratch: Path):
        with (scratch / "README.md").open("a") as readme:
            readme.write("\nOne more line for the knowledge base.\n")
        assert "Running stage 'prepare-data'" in dvc("repro", "prepare-data", cwd=scratch)

    def test_push_and_pull_through_the_local_remote(self, scratch: Path):
        dvc("push", cwd=scratch)
        shutil.rmtree(scratch / "data" / "tabular")
        dvc("pull", cwd=scratch)
        assert (scratch / "data" / "tabular" / "breast_cancer.csv").is_file()
        assert "up to date" in dvc("status", "prepare-data", cwd=scratch).lower()


def test_register_stage_writes_metrics_dvc_reads(scratch: Path, settings):
    metrics = scratch / "metrics" / "registry.json"
    runner = str(REPO / "deployments" / "dvc_stage.py")
    command = [sys.executable, runner, "register", "--metrics", str(metrics)]
    subprocess.run(command, cwd=REPO, check=True, capture_output=True, text=True, timeout=300)
    shown = dvc("metrics", "show", str(metrics.relative_to(scratch)), cwd=scratch)
    assert "versions" in shown
