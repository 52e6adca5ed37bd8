"""Run model-written Python under OS isolation (bubblewrap + seccomp); results and figures come back."""

from __future__ import annotations

import base64
import contextlib
import errno
import json
import os
import re
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import psutil
from pydantic import BaseModel, Field, ValidationError

from agents.isolation import SCRATCH, SandboxUnavailable, bwrap_command, isolation_mode
from conveyor.settings import get_settings

__all__ = ["Chart", "Figure", "Limits", "SandboxResult", "SandboxUnavailable", "run_code"]

CHILD = Path(__file__).with_name("sandbox_child.py")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
SHOWN_OUTPUT_CHARS = 20_000
OUTCOME = "__outcome__.json"


class Limits(BaseModel):
    cpu_s: int = Field(20, ge=1)
    wall_s: float = Field(60.0, gt=0)
    memory_bytes: int = Field(2 << 30, ge=256 << 20)
    file_bytes: int = Field(
        8 << 20, ge=1024, description="Largest file (stdout included) the code may write."
    )
    processes: int = Field(64, ge=1, description="Tasks (threads) of the sandbox user.")


class Figure(BaseModel):
    name: str
    png_base64: str

    def save(self, folder: Path) -> Path:
        target = folder / self.name
        target.write_bytes(base64.b64decode(self.png_base64))
        return target


class Chart(BaseModel):
    """One saved chart as the code drew it (read from matplotlib in the sandbox, before any PNG)."""

    title: str = ""
    xlabel: str = ""
    ylabel: str = ""
    x_tick_labels: int = 0
    bars: int = 0
    line_points: int = 0
    scatter_points: int = 0


class SandboxResult(BaseModel):
    ok: bool
    result: object | None = None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    error_line: int | None = None
    limit: str | None = Field(None, description="cpu, memory, wall or output when a limit stopped the code")
    figures: list[Figure] = []
    charts: list[Chart] = []
    isolation: str = Field("", description="bubblewrap, or process when isolation was switched off")
    duration_s: float = 0.0

    def failure(self) -> str:
        """One line for a repair prompt or a report."""
        where = f" (line {self.error_line})" if self.error_line else ""
        return f"{self.error}{where}" if self.error else "ok"


def _charts(reported: object, most: int = 20) -> list[Chart]:
    """The charts the child described; the code could have rewritten that file, so anything odd is dropped."""
    try:
        return [Chart.model_validate(c) for c in reported][:most] if isinstance(reported, list) else []
    except ValidationError:
        return []


def _read_regular(path: Path, limit: int) -> bytes | None:
    """A file the child left, never following a link it planted (it could point at a host secret)."""
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    with os.fdopen(fd, "rb") as handle:
        if not stat.S_ISREG(os.fstat(handle.fileno()).st_mode):
            return None
        return handle.read(limit)


def _stage(scratch: Path, files: dict[str, Path]) -> None:
    """Copy the given files into scratch; names are plain and sources must be regular files, not links."""
    for name, source in files.items():
        if not SAFE_NAME.match(name) or ".." in name:
            raise ValueError(f"invalid sandbox file name {name!r}")
        if Path(source).is_symlink() or not Path(source).is_file():
            raise ValueError(f"refusing to stage {name!r}: {source} is not a regular file")
        shutil.copyfile(source, scratch / name, follow_symlinks=False)


def _signal_of(returncode: int) -> int | None:
    """The signal that ended the child: negative from Popen, 128+N as bubblewrap passes it on."""
    if returncode < 0:
        return -returncode
    return returncode - 128 if returncode > 128 else None


def _diagnose(
    returncode: int, outcome: dict, output_size: int, limits: Limits, timed_out: bool
) -> tuple[str | None, str | None]:
    """(limit, error) from how the child ended."""
    error = outcome.get("error") or {}
    ended_by = _signal_of(returncode)
    if timed_out:
        return "wall", f"stopped after {limits.wall_s:.0f} s of wall-clock time"
    if ended_by in (signal.SIGXCPU, signal.SIGKILL) and not outcome:
        return "cpu", f"stopped after {limits.cpu_s} s of CPU time"
    if error.get("type") == "MemoryError":
        return "memory", f"MemoryError: exceeded the {limits.memory_bytes >> 20} MiB memory limit"
    too_large = f"[Errno {errno.EFBIG}]" in error.get("message", "")  # Python ignores SIGXFSZ: EFBIG
    if output_size >= limits.file_bytes or ended_by == signal.SIGXFSZ or too_large:
        return "output", f"output exceeded {limits.file_bytes} bytes"
    if error:
        return None, f"{error['type']}: {error['message']}"
    if returncode != 0:
        return None, f"the process ended with code {returncode}"
    return None, None


def _child_env() -> dict[str, str]:
    """The child's whole environment: nothing inherited, so no secret of the host process reaches it."""
    return {
        "PATH": "/usr/bin:/bin",
        "HOME": SCRATCH,
        "LANG": "C.UTF-8",
        "MPLBACKEND": "Agg",
        "MPLCONFIGDIR": "/tmp/matplotlib",
        "OMP_NUM_THREADS": "1",
        "OPENBLAS_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    }


def _launch(mode: str, scratch: Path, config: dict, out, err) -> tuple[subprocess.Popen, int | None]:
    env = _child_env()
    if mode == "bubblewrap":
        argv, fd = bwrap_command(scratch, CHILD, [arg for k, v in env.items() for arg in ("--setenv", k, v)])
        config = config | {"scratch": SCRATCH}
        pass_fds: tuple[int, ...] = (fd,)
    else:
        argv, fd, pass_fds = [sys.executable, "-I", str(CHILD)], None, ()
        env = env | {"HOME": str(scratch), "MPLCONFIGDIR": str(scratch / ".matplotlib")}
    child = subprocess.Popen(
        [*argv, json.dumps(config)],
        cwd=scratch,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=out,
        stderr=err,
        pass_fds=pass_fds,
        start_new_session=True,
    )
    return child, fd


def run_code(
    code: str,
    files: dict[str, Path] | None = None,
    limits: Limits | None = None,
    preload: tuple[str, ...] = ("numpy", "pandas", "matplotlib.pyplot"),
) -> SandboxResult:
    """Run `code` isolated from the host, with resource limits and a private scratch folder.

    Args:
        code: Python source; a top-level `result` variable (JSON-able) is returned, PNGs written are figures.
        files: name -> regular file copied into the scratch folder first (e.g. a dataset CSV).
        limits: CPU seconds, wall seconds, address space, largest file/output, processes.

    Raises:
        SandboxUnavailable: no OS isolation here and the setting does not allow running without it.
    """
    limits = limits or Limits()
    mode = isolation_mode()
    run_dir = Path(tempfile.mkdtemp(prefix="conveyor-sandbox-", dir=get_settings().sandbox_dir))
    scratch = run_dir / "scratch"
    scratch.mkdir()
    try:
        _stage(scratch, files or {})
        config = {
            "scratch": str(scratch),
            "code": code,
            "preload": list(preload),
            "limits": limits.model_dump(exclude={"wall_s"}),
        }
        started = time.monotonic()
        with (run_dir / "stdout").open("wb") as out, (run_dir / "stderr").open("wb") as err:
            child, fd = _launch(mode, scratch, config, out, err)
            if fd is not None:
                os.close(fd)
            timed_out = False
            try:
                child.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(child)
        duration = time.monotonic() - started
        return _collect(run_dir, child.returncode, limits, timed_out, duration, mode)
    finally:
        shutil.rmtree(run_dir, ignore_errors=True)


def _kill_group(child: subprocess.Popen) -> None:
    """Kill the child's process group and every process under it (the code runs in a session of its own
    inside bubblewrap), and wait until all are gone: nothing outlives `run_code`."""
    try:
        inner = psutil.Process(child.pid).children(recursive=True)
    except psutil.NoSuchProcess:
        inner = []
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    for process in inner:
        with contextlib.suppress(psutil.NoSuchProcess, psutil.AccessDenied):
            process.kill()
    child.wait()
    psutil.wait_procs(inner, timeout=30)


def _collect(
    run_dir: Path, returncode: int, limits: Limits, timed_out: bool, duration: float, mode: str
) -> SandboxResult:
    scratch = run_dir / "scratch"
    try:
        outcome = json.loads(_read_regular(scratch / OUTCOME, 1 << 20) or b"{}")
    except (json.JSONDecodeError, UnicodeDecodeError):
        outcome = {}
    outcome = outcome if isinstance(outcome, dict) else {}
    stdout, stderr = (
        (_read_regular(run_dir / name, SHOWN_OUTPUT_CHARS) or b"").decode("utf-8", "replace")
        for name in ("stdout", "stderr")
    )
    output_size = max((run_dir / name).stat().st_size for name in ("stdout", "stderr"))
    limit, error = _diagnose(returncode, outcome, output_size, limits, timed_out)
    figures = []
    for path in sorted(scratch.glob("*.png")):
        data = _read_regular(path, limits.file_bytes + 1)
        if data and len(data) <= limits.file_bytes:
            figures.append(Figure(name=path.name, png_base64=base64.b64encode(data).decode()))
    return SandboxResult(
        ok=error is None,
        result=outcome.get("result"),
        stdout=stdout,
        stderr=stderr[-4000:],
        error=error,
        error_line=(outcome.get("error") or {}).get("line"),
        limit=limit,
        figures=figures,
        charts=_charts(outcome.get("charts")),
        isolation=mode,
        duration_s=round(duration, 3),
    )
