"""Dataset catalog: built-in CSVs, versioned uploads, summaries, and refusal of unsafe ids."""

import subprocess
import sys
from pathlib import Path

import pytest

from conveyor import datasets

REPO = Path(__file__).resolve().parent.parent


class TestCatalog:
    def test_builtin_datasets_are_listed(self):
        ids = {d.id for d in datasets.list_datasets()}
        assert {"sales_2024", "breast_cancer"} <= ids

    def test_summary_counts_rows_and_missing_values(self):
        summary = datasets.summary("sales_2024.csv")
        frame = datasets.load("sales_2024")
        assert summary["rows"] == len(frame) > 1000
        assert summary["columns"]["revenue"]["stats"]["mean"] == pytest.approx(frame["revenue"].mean())
        assert summary["columns"]["region"]["missing"] == 0


class TestUploads:
    def test_each_upload_is_a_new_version(self):
        first = datasets.save_upload("uploaded", b"a,b\n1,2\n3,4\n")
        second = datasets.save_upload("uploaded", b"a,b\n5,6\n")
        assert (first.version, second.version) == (1, 2)
        assert datasets.load("uploaded").shape == (1, 2)
        assert datasets.load("uploaded", version=1).shape == (2, 2)

    @pytest.mark.parametrize("bad_id", ["../etc/passwd", "/abs", "a/b", "..", "", "x" * 80])
    def test_path_like_ids_are_refused(self, bad_id):
        with pytest.raises(datasets.DatasetError):
            datasets.dataset_path(bad_id)

    def test_unreadable_upload_is_refused_and_nothing_is_stored(self):
        with pytest.raises(datasets.DatasetError):
            datasets.save_upload("broken", b"\x00\x01\x02")
        with pytest.raises(datasets.DatasetNotFound):
            datasets.dataset_path("broken")

    def test_oversized_upload_is_refused(self):
        with pytest.raises(datasets.DatasetError, match="limit"):
            datasets.save_upload("big", b"a\n" + b"1\n" * 100, max_bytes=50)


class TestPreparation:
    def test_every_build_is_byte_identical(self, tmp_path):
        """Rebuilding the data (as DVC runs it) must not change a file, or every re-index re-embeds it."""
        builds = [tmp_path / "first", tmp_path / "second"]
        for out in builds:
            subprocess.run([sys.executable, "data/prepare.py", "--out", str(out)], cwd=REPO, check=True)
        first, second = (
            {p.relative_to(out): p.read_bytes() for p in out.rglob("*") if p.is_file()} for out in builds
        )
        assert first.keys() == second.keys()
        assert [name for name in first if first[name] != second[name]] == []
        assert {"knowledge", "tabular"} <= {name.parts[0] for name in first}
