"""The sandbox contains model-written code: network, files, CPU, memory, processes, output and wall clock."""

import base64

import pytest

from agents.data import dataset_files
from agents.sandbox import Limits, run_code
from conveyor.datasets import DatasetError

TIGHT = Limits(cpu_s=3, wall_s=8, file_bytes=256 * 1024)


class TestResults:
    def test_result_stdout_and_figure_come_back_as_data(self, settings):
        code = (
            "import pandas as pd\nimport matplotlib.pyplot as plt\n"
            "df = pd.DataFrame({'x': [1, 2, 3], 'y': [2.0, 4.0, 8.0]})\n"
            "df.plot(x='x', y='y')\nplt.savefig('line.png')\n"
            "print('rows', len(df))\nresult = {'total': df.y.sum(), 'mean': df.y.mean()}\n"
        )
        out = run_code(code)
        assert out.ok, out.error
        assert out.result == {"total": 14.0, "mean": pytest.approx(14 / 3)}
        assert out.stdout.strip() == "rows 3"
        assert [f.name for f in out.figures] == ["line.png"]
        assert base64.b64decode(out.figures[0].png_base64).startswith(b"\x89PNG")

    def test_unsaved_open_figures_are_returned(self, settings):
        out = run_code("import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [1, 2])\n")
        assert out.ok and [f.name for f in out.figures] == ["figure_1.png"]

    def test_staged_dataset_is_readable_in_scratch(self, settings):
        out = run_code(
            "import pandas as pd\nresult = len(pd.read_csv('sales_2024.csv'))",
            files=dataset_files("sales_2024"),
        )
        from conveyor.datasets import load

        assert out.ok and out.result == len(load("sales_2024"))

    def test_errors_report_type_and_line(self, settings):
        out = run_code("x = 1\ny = x / 0\n")
        assert not out.ok and out.limit is None
        assert out.error.startswith("ZeroDivisionError") and out.error_line == 2


class TestContainment:
    def test_no_network(self, settings):
        out = run_code("import socket\ns = socket.socket()\ns.connect(('127.0.0.1', 4200))\n")
        assert not out.ok and "socket" in out.error
        assert out.network in {"namespace", "audit-hook"}

    def test_no_network_through_urllib(self, settings):
        out = run_code("import urllib.request\nurllib.request.urlopen('http://127.0.0.1:4200/api/health')\n")
        assert not out.ok and "PermissionError" in out.error

    @pytest.mark.parametrize("path", ["/etc/passwd", "pyproject.toml", "../../../../etc/hostname"])
    def test_no_reads_outside_scratch(self, settings, path):
        from pathlib import Path

        target = str(Path(path).resolve()) if path == "pyproject.toml" else path
        out = run_code(f"print(open({target!r}).read())")
        assert not out.ok and "PermissionError" in out.error and out.stdout == ""

    def test_no_writes_outside_scratch(self, settings, tmp_path):
        victim = tmp_path / "victim.txt"
        out = run_code(f"open({str(victim)!r}, 'w').write('owned')")
        assert not out.ok and not victim.exists()

    def test_no_secrets_in_environment(self, settings, monkeypatch):
        monkeypatch.setenv("CONVEYOR_LLM_API_KEY", "sk-secret-value")
        out = run_code("import os\nresult = dict(os.environ)")
        assert out.ok and "sk-secret-value" not in str(out.result)
        assert not any(k.startswith("CONVEYOR_") for k in out.result)

    def test_infinite_loop_is_stopped_by_cpu_limit(self, settings):
        out = run_code("while True:\n    pass\n", limits=TIGHT)
        assert not out.ok and out.limit == "cpu"

    def test_sleeping_code_is_stopped_by_wall_clock(self, settings):
        out = run_code("import time\ntime.sleep(60)\n", limits=Limits(cpu_s=3, wall_s=3))
        assert not out.ok and out.limit == "wall" and out.duration_s < 30

    def test_fork_bomb_is_contained(self, settings):
        out = run_code("import os\nwhile True:\n    os.fork()\n", limits=TIGHT)
        assert not out.ok and "fork" in out.error

    def test_subprocess_is_refused(self, settings):
        out = run_code("import subprocess\nsubprocess.run(['cat', '/etc/passwd'])\n")
        assert not out.ok and "subprocess" in out.error

    def test_huge_output_is_cut(self, settings):
        out = run_code("while True:\n    print('x' * 10000)\n", limits=TIGHT)
        assert not out.ok and out.limit == "output" and len(out.stdout) <= 20_000

    def test_memory_limit(self, settings):
        out = run_code("block = bytearray(6 * 1024 ** 3)\n", limits=TIGHT)
        assert not out.ok and out.limit == "memory"

    def test_native_code_loading_is_refused(self, settings):
        out = run_code("import ctypes\nctypes.CDLL('libc.so.6').system(b'id')\n")
        assert not out.ok and "ctypes" in out.error


class TestInputs:
    @pytest.mark.parametrize("name", ["../secrets", "/etc/passwd", "a/b", ""])
    def test_dataset_names_cannot_traverse(self, settings, name):
        with pytest.raises(DatasetError):
            dataset_files(name)

    def test_staged_file_names_are_checked(self, settings, tmp_path):
        source = tmp_path / "x.csv"
        source.write_text("a\n1\n")
        with pytest.raises(ValueError, match="invalid sandbox file name"):
            run_code("pass", files={"../x.csv": source})
