"""Run model-written Python in a confined child process; results and figures come back as data."""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from pydantic import BaseModel, Field

from conveyor.settings import get_settings

CHILD = Path(__file__).with_name("sandbox_child.py")
SAFE_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,99}$")
SHOWN_OUTPUT_CHARS = 20_000
NOBODY = 65534


class Limits(BaseModel):
    cpu_s: int = Field(20, ge=1)
    wall_s: float = Field(60.0, gt=0)
    memory_bytes: int = Field(2 << 30, ge=256 << 20)
    file_bytes: int = Field(
        8 << 20, ge=1024, description="Largest file (stdout included) the code may write."
    )
    processes: int = Field(64, ge=1)


class Figure(BaseModel):
    name: str
    png_base64: str

    def save(self, folder: Path) -> Path:
        target = folder / self.name
        target.write_bytes(base64.b64decode(self.png_base64))
        return target


class SandboxResult(BaseModel):
    ok: bool
    result: object | None = None
    stdout: str = ""
    stderr: str = ""
    error: str | None = None
    error_line: int | None = None
    limit: str | None = Field(None, description="cpu, memory, wall or output when a limit stopped the code")
    figures: list[Figure] = []
    network: str = ""
    user: str = ""
    duration_s: float = 0.0

    def failure(self) -> str:
        """One line for a repair prompt or a report."""
        where = f" (line {self.error_line})" if self.error_line else ""
        return f"{self.error}{where}" if self.error else "ok"


def _read(path: Path, limit: int) -> str:
    with path.open("rb") as handle:
        return handle.read(limit).decode("utf-8", "replace")


def _stage(scratch: Path, files: dict[str, Path]) -> None:
    for name, source in files.items():
        if not SAFE_NAME.match(name) or ".." in name:
            raise ValueError(f"invalid sandbox file name {name!r}")
        shutil.copyfile(source, scratch / name)


def _confine_ownership(scratch: Path, mpl_cache: Path) -> None:
    if os.geteuid() == 0:
        for path in [scratch, *scratch.iterdir()]:
            os.chown(path, NOBODY, NOBODY)
    mpl_cache.mkdir(parents=True, exist_ok=True)


def _diagnose(
    returncode: int, outcome: dict, output_size: int, limits: Limits, timed_out: bool
) -> tuple[str | None, str | None]:
    """(limit, error) from how the child ended."""
    error = outcome.get("error") or {}
    if timed_out:
        return "wall", f"stopped after {limits.wall_s:.0f} s of wall-clock time"
    if returncode in (-signal.SIGXCPU, -signal.SIGKILL) and not outcome:
        return "cpu", f"stopped after {limits.cpu_s} s of CPU time"
    if error.get("type") == "MemoryError":
        return "memory", f"MemoryError: exceeded the {limits.memory_bytes >> 20} MiB memory limit"
    if output_size >= limits.file_bytes or returncode == -signal.SIGXFSZ:
        return "output", f"output exceeded {limits.file_bytes} bytes"
    if error:
        return None, f"{error['type']}: {error['message']}"
    if returncode != 0:
        return None, f"the process ended with code {returncode}"
    return None, None


def run_code(
    code: str,
    files: dict[str, Path] | None = None,
    limits: Limits | None = None,
    preload: tuple[str, ...] = ("numpy", "pandas", "matplotlib.pyplot"),
) -> SandboxResult:
    """Run `code` in a child process with no network, resource limits and a scratch working folder.

    Args:
        code: Python source; a top-level `result` variable (JSON-able) is returned, PNGs written are figures.
        files: name -> file copied into the scratch folder first (e.g. a dataset CSV).
        limits: CPU seconds, wall seconds, address space, largest file/output, processes.
    """
    limits = limits or Limits()
    settings = get_settings()
    mpl_cache = settings.state_dir / "sandbox" / "matplotlib"
    scratch = Path(tempfile.mkdtemp(prefix="conveyor-sandbox-"))
    try:
        _stage(scratch, files or {})
        _confine_ownership(scratch, mpl_cache)
        config = {
            "scratch": str(scratch),
            "code": code,
            "preload": list(preload),
            "limits": limits.model_dump(exclude={"wall_s"}),
        }
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(scratch),
            "LANG": "C.UTF-8",
            "MPLBACKEND": "Agg",
            "MPLCONFIGDIR": str(mpl_cache),
            "OMP_NUM_THREADS": "1",
            "OPENBLAS_NUM_THREADS": "1",
            "MKL_NUM_THREADS": "1",
        }
        started = time.monotonic()
        with (scratch / ".stdout").open("wb") as out, (scratch / ".stderr").open("wb") as err:
            child = subprocess.Popen(
                [sys.executable, "-I", str(CHILD), json.dumps(config)],
                cwd=scratch,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=err,
                start_new_session=True,
            )
            timed_out = False
            try:
                child.wait(timeout=limits.wall_s)
            except subprocess.TimeoutExpired:
                timed_out = True
            finally:
                _kill_group(child)
        duration = time.monotonic() - started
        return _collect(scratch, child.returncode, limits, timed_out, duration)
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _kill_group(child: subprocess.Popen) -> None:
    """Kill the child and anything it started (its own session/process group)."""
    try:
        os.killpg(child.pid, signal.SIGKILL)
    except (ProcessLookupError, PermissionError):
        pass
    child.wait()


def _collect(
    scratch: Path, returncode: int, limits: Limits, timed_out: bool, duration: float
) -> SandboxResult:
    outcome_file = scratch / "__outcome__.json"
    try:
        outcome = json.loads(outcome_file.read_text()) if outcome_file.is_file() else {}
    except json.JSONDecodeError:
        outcome = {}
    stdout = _read(scratch / ".stdout", SHOWN_OUTPUT_CHARS)
    stderr = _read(scratch / ".stderr", SHOWN_OUTPUT_CHARS)
    output_size = max((scratch / name).stat().st_size for name in (".stdout", ".stderr"))
    limit, error = _diagnose(returncode, outcome, output_size, limits, timed_out)
    figures = [
        Figure(name=p.name, png_base64=base64.b64encode(p.read_bytes()).decode())
        for p in sorted(scratch.glob("*.png"))
        if p.stat().st_size <= limits.file_bytes
    ]
    return SandboxResult(
        ok=error is None,
        result=outcome.get("result"),
        stdout=stdout,
        stderr=stderr[-4000:],
        error=error,
        error_line=(outcome.get("error") or {}).get("line"),
        limit=limit,
        figures=figures,
        network=outcome.get("network", ""),
        user=outcome.get("user", ""),
        duration_s=round(duration, 3),
    )
