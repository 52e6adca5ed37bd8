"""The sandbox isolates model-written code: real escape attempts, each contained, nothing left behind.

The whole module also runs as a non-root user (TestAsNonRootUser), since the API images run as uid 10001.
"""

import base64
import json
import os
import shutil
import socket
import subprocess
import sys
import threading
from pathlib import Path

import psutil
import pytest

from agents import isolation
from agents.data import dataset_files
from agents.sandbox import Limits, SandboxUnavailable, run_code
from conveyor.datasets import DatasetError

REPO = Path(__file__).resolve().parent.parent
TIGHT = Limits(cpu_s=3, wall_s=8, file_bytes=256 * 1024)
SECRET = "s3cret-signing-key-canary-5f1c"


def isolated(code: str, **kwargs):
    """run_code that fails the test unless OS isolation was really applied."""
    out = run_code(code, **kwargs)
    assert out.isolation == "bubblewrap", out
    return out


def sandbox_processes(sandbox_dir: Path) -> list[psutil.Process]:
    """Processes of this session's sandboxes (the child script or bubblewrap): started by this process, under
    a bubblewrap bound to a scratch folder in `sandbox_dir`, or working in one (a sandbox another suite runs
    on the same host is not ours)."""
    found = []
    for proc in psutil.process_iter(["cmdline"]):
        cmdline = " ".join(proc.info["cmdline"] or [])
        if "/sandbox/child.py" not in cmdline and "sandbox_child.py" not in cmdline:
            continue
        try:
            lineage = [proc, *proc.parents()]
            ours = proc.cwd().startswith(str(sandbox_dir)) or any(
                p.pid == os.getpid() or str(sandbox_dir) in " ".join(p.cmdline()) for p in lineage
            )
        except psutil.Error:  # it ended meanwhile
            continue
        if ours:
            found.append(proc)
    return found


def snapshot(folder: Path) -> dict[str, tuple[int, int]]:
    """Every file under `folder` (Prefect's own server folder aside) with its size and mtime."""
    return {
        str(p): (p.stat().st_size, p.stat().st_mtime_ns)
        for p in folder.rglob("*")
        if p.is_file() and "prefect" not in p.relative_to(folder).parts[:1]
    }


@pytest.fixture(autouse=True)
def host_unchanged(settings, monkeypatch):
    """Around every test: a secret in this process's environment, and afterwards no sandbox process left
    and the state folder exactly as before."""
    monkeypatch.setenv("CONVEYOR_SECRET_KEY", SECRET)
    isolation.check_available()  # probe once, before the snapshot
    before = snapshot(settings.state_dir)
    yield
    assert sandbox_processes(settings.sandbox_dir) == []
    assert snapshot(settings.state_dir) == before
    assert list(settings.sandbox_dir.iterdir()) == []


class TestResults:
    def test_result_stdout_and_figure_come_back_as_data(self):
        code = (
            "import pandas as pd\nimport matplotlib.pyplot as plt\n"
            "df = pd.DataFrame({'x': [1, 2, 3], 'y': [2.0, 4.0, 8.0]})\n"
            "df.plot(x='x', y='y')\nplt.savefig('line.png')\n"
            "print('rows', len(df))\nresult = {'total': df.y.sum(), 'mean': df.y.mean()}\n"
        )
        out = isolated(code)
        assert out.ok, out.error
        assert out.result == {"total": 14.0, "mean": pytest.approx(14 / 3)}
        assert out.stdout.strip() == "rows 3"
        assert [f.name for f in out.figures] == ["line.png"]
        assert base64.b64decode(out.figures[0].png_base64).startswith(b"\x89PNG")

    def test_unsaved_open_figures_are_returned(self):
        out = isolated("import matplotlib.pyplot as plt\nplt.bar(['a', 'b'], [1, 2])\n")
        assert out.ok and [f.name for f in out.figures] == ["figure_1.png"]

    def test_staged_dataset_is_readable_in_scratch(self):
        from conveyor.datasets import load

        out = isolated(
            "import pandas as pd\nresult = len(pd.read_csv('sales_2024.csv'))",
            files=dataset_files("sales_2024"),
        )
        assert out.ok and out.result == len(load("sales_2024"))

    def test_errors_report_type_and_line(self):
        out = isolated("x = 1\ny = x / 0\n")
        assert not out.ok and out.limit is None
        assert out.error.startswith("ZeroDivisionError") and out.error_line == 2

    def test_the_child_sees_only_its_own_world(self):
        out = isolated(
            "import os, socket\n"
            "result = {'uid': os.getuid(), 'host': socket.gethostname(), 'root': sorted(os.listdir('/')),\n"
            "          'proc': os.path.exists('/proc'), 'env': sorted(os.environ), 'cwd': os.getcwd()}\n"
        )
        assert out.ok, out.error
        assert (
            out.result["uid"] == 65534 and out.result["host"] == "sandbox" and out.result["cwd"] == "/scratch"
        )
        assert out.result["proc"] is False
        assert not {"etc", "home", "var", "proc", "sys", "run"} & set(out.result["root"])
        assert not any(name.startswith(("CONVEYOR_", "PREFECT_", "MLFLOW_")) for name in out.result["env"])


class TestProcesses:
    """Model code can never start another program: no shell, no daemon, no fork bomb."""

    @pytest.mark.parametrize(
        "code",
        [
            "import _posixsubprocess, os\nread, write = os.pipe()\n"
            "_posixsubprocess.fork_exec([b'/bin/sh', b'-c', b'id'], [b'/bin/sh'], True, (), None, None,"
            " -1, -1, -1, -1, -1, -1, read, write, False, False, -1, None, None, None, -1, None, False)\n",
            "import os\nos.posix_spawn('/bin/sh', ['sh', '-c', 'id'], {})\n",
            "import subprocess\nsubprocess.run(['/bin/sh', '-c', 'id'])\n",
            "import os\nos.fork()\n",
            "import pty\npty.fork()\n",
        ],
        ids=["fork_exec", "posix_spawn", "subprocess", "fork", "pty"],
    )
    def test_starting_a_process_is_refused(self, code):
        out = isolated(code)
        assert not out.ok and "Operation not permitted" in out.error, out.error

    def test_os_system_never_runs_the_shell(self):
        out = isolated(
            "import os\nstatus = os.system('echo pwned > pwned.txt')\n"
            "result = [status, os.path.exists('pwned.txt')]"
        )
        assert out.ok and out.result[0] != 0 and out.result[1] is False

    def test_ctypes_into_libc_is_contained(self):
        out = isolated(
            "import ctypes\nlibc = ctypes.CDLL(None, use_errno=True)\n"
            "result = {'fork': libc.fork(), 'system': libc.system(b'id > id.txt'),\n"
            "          'unshare_user': libc.unshare(0x10000000), 'errno': ctypes.get_errno()}\n"
        )
        assert out.ok, out.error
        assert out.result["fork"] == -1 and out.result["unshare_user"] == -1
        assert out.result["system"] != 0

    def test_fork_bomb_is_contained(self):
        out = isolated("import os\nwhile True:\n    os.fork()\n", limits=TIGHT)
        assert not out.ok and "Operation not permitted" in out.error

    def test_a_detached_daemon_cannot_be_made(self):
        out = isolated("import os\nif os.fork() == 0:\n    os.setsid()\n    import time; time.sleep(600)\n")
        assert not out.ok and "Operation not permitted" in out.error

    def test_threads_still_work(self):
        out = isolated(
            "from concurrent.futures import ThreadPoolExecutor\n"
            "with ThreadPoolExecutor(4) as pool:\n    result = sum(pool.map(lambda x: x * x, range(10)))\n"
        )
        assert out.ok and out.result == 285

    def test_signals_reach_no_host_process(self):
        out = isolated(
            f"import os, signal\nresult = {{}}\n"
            f"for name, pid in [('runner', {os.getpid()}), ('init', 1), ('everyone', -1)]:\n"
            "    try:\n        os.kill(pid, signal.SIGKILL)\n        result[name] = 'sent'\n"
            "    except OSError as exc:\n        result[name] = type(exc).__name__\n"
        )
        assert out.result["runner"] == "ProcessLookupError"  # no such pid in the sandbox's pid namespace
        assert psutil.pid_exists(os.getpid())


class TestFiles:
    @pytest.mark.parametrize("target", ["repo", "state", "tmp"])
    def test_no_writes_outside_scratch(self, settings, tmp_path, target):
        folder = {"repo": REPO, "state": settings.state_dir, "tmp": tmp_path}[target]
        victim = folder / "pwned-by-sandbox.txt"
        out = isolated(f"open({str(victim)!r}, 'w').write('owned')")
        assert not victim.exists()
        if not folder.is_relative_to("/tmp"):  # under /tmp the path may exist in the sandbox's private /tmp
            assert not out.ok and ("No such file" in out.error or "Read-only" in out.error), out.error

    def test_private_tmp_is_not_the_hosts(self, tmp_path):
        out = isolated("open('/tmp/dropped.txt', 'w').write('x')\nimport os\nresult = os.listdir('/tmp')")
        assert out.ok and "dropped.txt" in out.result
        assert not Path("/tmp/dropped.txt").exists()

    @pytest.mark.parametrize("name", ["pyproject", "state_db", "passwd", "host_tmp"])
    def test_no_reads_outside_scratch(self, settings, tmp_path, name):
        canary = tmp_path / "canary.txt"
        canary.write_text(SECRET)
        path = {
            "pyproject": REPO / "pyproject.toml",
            "state_db": settings.state_dir / "conveyor.db",
            "passwd": Path("/etc/passwd"),
            "host_tmp": canary,
        }[name]
        out = isolated(f"print(open({str(path)!r}).read())")
        assert not out.ok and "No such file" in out.error and out.stdout == ""

    def test_the_interpreter_is_read_only(self):
        target = Path(sys.prefix) / "pwned.txt"
        out = isolated(f"open({str(target)!r}, 'w').write('x')")
        assert not out.ok and "Read-only file system" in out.error and not target.exists()

    def test_no_process_environment_is_readable(self):
        out = isolated(
            f"import os\nleaks = []\n"
            f"for path in ['/proc/{os.getpid()}/environ', '/proc/{os.getppid()}/cmdline', '/proc/1/environ',"
            f" '/proc/self/environ']:\n"
            "    try:\n        leaks.append(open(path, 'rb').read().decode(errors='replace'))\n"
            "    except OSError as exc:\n        leaks.append(type(exc).__name__)\n"
            "result = leaks + [str(dict(os.environ))]\n"
        )
        assert out.ok and out.result[:4] == ["FileNotFoundError"] * 4
        assert SECRET not in str(out.result)

    def test_links_planted_in_scratch_are_not_followed_by_the_runner(self, tmp_path):
        canary = tmp_path / "secret.png"
        canary.write_text(SECRET)
        out = isolated(
            f"import os\nos.symlink({str(canary)!r}, 'leak.png')\n"
            f"os.symlink({str(canary)!r}, '__outcome__.json')\nos._exit(0)\n"
        )
        assert out.figures == [] and out.result is None
        assert SECRET not in out.model_dump_json()

    def test_a_staged_dataset_that_is_a_link_is_refused(self, tmp_path):
        link = tmp_path / "sales.csv"
        link.symlink_to("/etc/passwd")
        with pytest.raises(ValueError, match="not a regular file"):
            run_code("pass", files={"sales.csv": link})

    @pytest.mark.parametrize("name", ["../secrets", "/etc/passwd", "a/b", ""])
    def test_dataset_names_cannot_traverse(self, name):
        with pytest.raises(DatasetError):
            dataset_files(name)

    def test_staged_file_names_are_checked(self, tmp_path):
        source = tmp_path / "x.csv"
        source.write_text("a\n1\n")
        with pytest.raises(ValueError, match="invalid sandbox file name"):
            run_code("pass", files={"../x.csv": source})


class _Listener:
    """A real TCP, UDP or Unix listener on this host that records whatever reaches it."""

    def __init__(self, family: int, kind: int, address) -> None:
        self.sock = socket.socket(family, kind)
        self.sock.bind(address)
        self.address = self.sock.getsockname()
        self.received: list[bytes] = []
        if kind == socket.SOCK_STREAM:
            self.sock.listen()
        self.sock.settimeout(0.2)
        self.kind = kind
        self.stop = threading.Event()
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        while not self.stop.is_set():
            try:
                if self.kind == socket.SOCK_STREAM:
                    conn, _ = self.sock.accept()
                    self.received.append(conn.recv(100) or b"<connected>")
                    conn.close()
                else:
                    self.received.append(self.sock.recv(100))
            except OSError:
                continue

    def close(self) -> list[bytes]:
        self.stop.set()
        self.thread.join()
        self.sock.close()
        return self.received


class TestNetwork:
    @pytest.mark.parametrize("kind", ["tcp", "udp", "unix", "abstract"])
    def test_no_listener_on_the_host_is_reached(self, tmp_path, kind):
        family, sock_type, address = {
            "tcp": (socket.AF_INET, socket.SOCK_STREAM, ("127.0.0.1", 0)),
            "udp": (socket.AF_INET, socket.SOCK_DGRAM, ("127.0.0.1", 0)),
            "unix": (socket.AF_UNIX, socket.SOCK_STREAM, str(tmp_path / "api.sock")),
            "abstract": (socket.AF_UNIX, socket.SOCK_STREAM, "\0conveyor-test-abstract"),
        }[kind]
        listener = _Listener(family, sock_type, address)
        try:
            out = isolated(
                f"import socket\ns = socket.socket({int(family)}, {int(sock_type)})\n"
                f"address = {listener.address!r}\n"
                "if s.type == socket.SOCK_DGRAM:\n"
                "    for _ in range(20):\n        s.sendto(b'leak', address)\n"
                "else:\n    s.connect(address)\n    s.sendall(b'leak')\n"
            )
            import time

            time.sleep(0.5)  # let a datagram arrive if one could
        finally:
            received = listener.close()
        assert received == []
        if kind != "udp":  # a datagram to nowhere is not an error for the sender; nothing arrived
            assert not out.ok and out.error.split(":")[0] in {
                "ConnectionRefusedError",
                "FileNotFoundError",
                "OSError",
            }, out.error


class TestLimits:
    def test_infinite_loop_is_stopped_by_cpu_limit(self):
        out = isolated("while True:\n    pass\n", limits=TIGHT)
        assert not out.ok and out.limit == "cpu"

    def test_sleeping_code_is_stopped_by_wall_clock(self):
        out = isolated("import time\ntime.sleep(60)\n", limits=Limits(cpu_s=3, wall_s=3))
        assert not out.ok and out.limit == "wall" and out.duration_s < 30

    def test_ten_gigabytes_of_memory_are_refused(self):
        out = isolated("block = bytearray(10 * 1024 ** 3)\n", limits=TIGHT)
        assert not out.ok and out.limit == "memory"

    def test_a_gigabyte_of_output_is_cut(self):
        out = isolated(
            "import sys\nfor _ in range(100_000):\n    sys.stdout.write('x' * 10_000)\n", limits=TIGHT
        )
        assert not out.ok and out.limit == "output" and len(out.stdout) <= 20_000

    def test_a_big_file_in_scratch_is_cut(self):
        out = isolated(
            "with open('big.bin', 'wb') as f:\n"
            "    for _ in range(1024):\n        f.write(b'x' * (1 << 20))\n",
            limits=TIGHT,
        )
        assert not out.ok and out.limit == "output"


class TestWhereTheInterpreterLives:
    def test_a_venv_under_tmp_is_visible_inside(self, tmp_path):
        """A clone (and its .venv) under /tmp: the sandbox's private /tmp must not hide the interpreter."""
        import site
        import sysconfig
        import venv

        assert str(tmp_path).startswith("/tmp/")
        venv.create(tmp_path / "venv", with_pip=False)
        packages = Path(sysconfig.get_paths(vars={"base": str(tmp_path / "venv")})["purelib"])
        (packages / "outer.pth").write_text("\n".join(site.getsitepackages()) + "\n")
        done = subprocess.run(
            [
                str(tmp_path / "venv" / "bin" / "python"),
                "-c",
                "import sys; from agents.sandbox import run_code\n"
                "out = run_code('import sys\\nresult = sys.prefix', preload=())\n"
                "print(out.isolation, out.result, out.error)",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
            env={**os.environ, "PYTHONPATH": str(REPO)},
        )
        assert done.stdout.split() == ["bubblewrap", str(tmp_path / "venv"), "None"], (
            done.stdout + done.stderr
        )


class TestFailClosed:
    def test_no_bubblewrap_means_no_code_runs(self, monkeypatch, tmp_path):
        monkeypatch.setenv("PATH", str(tmp_path))
        isolation.check_available.cache_clear()
        try:
            with pytest.raises(SandboxUnavailable, match="CONVEYOR_SANDBOX_ISOLATION"):
                run_code("result = 1")
        finally:
            monkeypatch.undo()
            isolation.check_available.cache_clear()

    def test_user_namespaces_disabled_means_no_code_runs(self, tmp_path):
        """As in a container whose runtime forbids user namespaces: bwrap fails, nothing runs unconfined."""
        marker = tmp_path / "ran.txt"
        script = (
            "from agents.sandbox import run_code, SandboxUnavailable\n"
            f"try:\n    run_code(\"open({str(marker)!r}, 'w')\")\n"
            "except SandboxUnavailable as exc:\n    print('REFUSED', exc)\n"
        )
        # a user namespace of our own where creating more user namespaces is switched off
        done = subprocess.run(
            [
                "unshare",
                "--user",
                "--map-root-user",
                "sh",
                "-c",
                f'echo 0 > /proc/sys/user/max_user_namespaces && exec {sys.executable} -c "$0"',
                script,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert "REFUSED" in done.stdout and "CONVEYOR_SANDBOX_ISOLATION=process" in done.stdout, done.stderr
        assert not marker.exists()

    def test_a_read_only_proc_sys_as_in_containers_still_isolates(self):
        """Docker and Kubernetes mount /proc/sys read-only, where `bwrap --disable-userns` cannot work: the
        sandbox runs without it, and the seccomp filter still refuses nested user namespaces."""
        script = (
            "import json\nfrom agents import isolation\nfrom agents.sandbox import run_code\n"
            "out = run_code('import ctypes, errno\\nlibc = ctypes.CDLL(None, use_errno=True)\\n"
            "result = [libc.unshare(0x10000000), errno.errorcode[ctypes.get_errno()]]', preload=())\n"
            "disabled = isolation.can_disable_user_namespaces()\n"
            "print(json.dumps([disabled, out.isolation, out.result, out.error]))\n"
        )
        done = subprocess.run(
            [
                "unshare",  # a user namespace of our own, so that a non-root runner may mount too
                "--user",
                "--map-root-user",
                "--mount",
                "--propagation",
                "private",
                "sh",
                "-c",
                f'mount --bind -o ro /proc/sys /proc/sys && exec {sys.executable} -c "$0"',
                script,
            ],
            capture_output=True,
            text=True,
            timeout=120,
            cwd=REPO,
        )
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout.splitlines()[-1]) == [False, "bubblewrap", [-1, "EPERM"], None]

    def test_the_weaker_mode_is_explicit_and_loud(self, configure, caplog):
        configure(sandbox_isolation="process")
        out = run_code("result = 2 + 2", preload=())
        assert out.ok and out.result == 4 and out.isolation == "process"
        assert "SANDBOX ISOLATION IS OFF" in caplog.text


def _readable_mounts(paths: list[Path]) -> str:
    """Shell lines (for a private mount namespace) that make `paths` (interpreter, venv, checkout) reachable
    by other users: a folder on the way that others cannot enter (e.g. /root) is covered by a tmpfs that
    holds only those paths, bound back in place."""
    paths = [p for p in paths if not any(p != q and p.is_relative_to(q) for q in paths)]
    moves = []
    for path in paths:
        blocked = next((a for a in reversed(path.parents) if not os.stat(a).st_mode & 0o001), None)
        if blocked is not None:
            moves.append((path, blocked, Path(f"/run/conveyor-test-hold/{len(moves)}")))
    hold = " && ".join(f"mkdir -p {h} && mount --bind {p} {h}" for p, _, h in moves)
    cover = " && ".join(
        f"mount -t tmpfs -o mode=755 tmpfs {b}" for b in dict.fromkeys(b for _, b, _ in moves)
    )
    back = " && ".join(f"mkdir -p {p} && mount --bind {h} {p}" for p, _, h in moves)
    return "".join(f"{step} && " for step in (hold, cover, back) if step)


@pytest.mark.skipif(os.geteuid() != 0, reason="this run is already non-root: the battery above ran as it")
@pytest.mark.skipif(os.environ.get("CONVEYOR_SANDBOX_NESTED") == "1", reason="the nested run itself")
class TestAsNonRootUser:
    def test_the_battery_passes_as_uid_10001(self, tmp_path):
        """The API images run as uid 10001: the same tests, as that user, in a private mount namespace."""
        if shutil.which("unshare") is None or shutil.which("setpriv") is None:
            pytest.fail("util-linux unshare/setpriv are needed to run the battery as a non-root user")
        home = tmp_path / "home"
        home.mkdir()
        os.chown(home, 10001, 10001)
        tmp_path.chmod(0o755)
        command = (
            _readable_mounts([Path(os.path.realpath(p)) for p in (sys.base_prefix, sys.prefix, REPO)])
            + f"cd {REPO} && exec setpriv --reuid 10001 --regid 10001 --clear-groups --inh-caps=-all "
            f"env -i PATH=/usr/bin:/bin HOME={home} TMPDIR={home} CONVEYOR_SANDBOX_NESTED=1 "
            f"PYTHONDONTWRITEBYTECODE=1 {sys.executable} -m pytest -p no:cacheprovider -q "
            f"-k 'not TestAsNonRootUser' tests/test_sandbox.py"
        )
        done = subprocess.run(
            ["unshare", "--mount", "--propagation", "private", "sh", "-c", command],
            capture_output=True,
            text=True,
            timeout=600,
            cwd=REPO,
        )
        summary = done.stdout.strip().splitlines()[-1] if done.stdout.strip() else done.stderr[-2000:]
        assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-2000:]
        assert " passed" in summary and "failed" not in summary and "skipped" not in summary, summary
