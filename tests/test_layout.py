"""Layout rules read from the source: MLflow is imported only by its two doors."""

import ast
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PACKAGES = ("conveyor", "agents", "serving", "flows", "tasks")
MLFLOW_DOORS = {"conveyor/tracking.py", "conveyor/registry.py"}


def imports_mlflow(source: str) -> bool:
    """Whether any import in `source` (module level, in a function, under TYPE_CHECKING) names mlflow."""
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            names = [node.module]
        else:
            continue
        if any(name.split(".")[0] == "mlflow" for name in names):
            return True
    return False


class TestMlflowDoors:
    @pytest.mark.parametrize(
        "source",
        [
            "import mlflow",
            "import os, mlflow.pyfunc as pyfunc",
            "from mlflow.exceptions import MlflowException",
            "def f():\n    import mlflow\n",
            "if TYPE_CHECKING:\n    from mlflow.pyfunc import PyFuncModel\n",
        ],
    )
    def test_every_form_of_import_is_seen(self, source):
        assert imports_mlflow(source)

    @pytest.mark.parametrize(
        "source", ["import mlflowish", "from conveyor import tracking", "from . import mlflow"]
    )
    def test_other_modules_are_not_mistaken_for_mlflow(self, source):
        assert not imports_mlflow(source)

    def test_only_tracking_and_registry_import_mlflow(self):
        sources = [path for package in PACKAGES for path in sorted((REPO / package).rglob("*.py"))]
        assert len(sources) > 50  # the packages were found
        offenders = [
            relative
            for path in sources
            if (relative := path.relative_to(REPO).as_posix()) not in MLFLOW_DOORS
            and imports_mlflow(path.read_text())
        ]
        assert not offenders, (
            f"mlflow imported outside {sorted(MLFLOW_DOORS)} (use conveyor.tracking): {offenders}"
        )
