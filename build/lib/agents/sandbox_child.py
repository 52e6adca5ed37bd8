"""Sandbox child: confine this process (no network, limits, scratch-only files), then run the code."""

from __future__ import annotations

import ctypes
import json
import os
import resource
import sys
import sysconfig
import traceback
from pathlib import Path

CLONE_NEWNET = 0x40000000
NOBODY = 65534
WRITE_EVENTS = {
    "os.remove",
    "os.rename",
    "os.replace",
    "os.mkdir",
    "os.rmdir",
    "os.symlink",
    "os.link",
    "os.chmod",
    "os.chown",
    "os.truncate",
    "os.utime",
    "shutil.rmtree",
    "shutil.copyfile",
    "shutil.move",
    "os.chdir",
}
LIST_EVENTS = {"os.listdir", "os.scandir", "glob.glob"}
BLOCKED_PREFIXES = (
    "socket.",
    "subprocess.",
    "os.system",
    "os.exec",
    "os.posix_spawn",
    "os.spawn",
    "os.fork",
    "os.forkpty",
    "os.kill",
    "os.killpg",
    "pty.",
    "ctypes.dlopen",
    "ctypes.dlsym",
    "ctypes.cdata",
    "urllib.",
    "http.",
    "ftplib.",
    "smtplib.",
    "webbrowser.",
)


def isolate_network() -> str:
    """A fresh network namespace has no interfaces: every connection fails. Needs root."""
    if os.geteuid() != 0:
        return "audit-hook"
    libc = ctypes.CDLL(None, use_errno=True)
    return "namespace" if libc.unshare(CLONE_NEWNET) == 0 else "audit-hook"


def apply_limits(limits: dict) -> None:
    for name, value in (
        ("RLIMIT_CPU", limits["cpu_s"]),
        ("RLIMIT_AS", limits["memory_bytes"]),
        ("RLIMIT_FSIZE", limits["file_bytes"]),
        ("RLIMIT_NPROC", limits["processes"]),
        ("RLIMIT_NOFILE", 256),
        ("RLIMIT_CORE", 0),
    ):
        hard = value + 1 if name == "RLIMIT_CPU" else value  # SIGXCPU first, SIGKILL a second later
        resource.setrlimit(getattr(resource, name), (value, hard))


def world_readable(path: str) -> bool:
    """Whether another user can reach `path` (every parent folder searchable, the path itself readable)."""
    parts = Path(path).parts
    for depth in range(1, len(parts) + 1):
        mode = os.stat(Path(*parts[:depth])).st_mode
        if not mode & 0o001 or (depth == len(parts) and not mode & 0o004):
            return False
    return True


def drop_privileges(roots: list[str]) -> str:
    """Become `nobody` when root, unless the interpreter's own files would become unreadable."""
    if os.geteuid() != 0 or not all(world_readable(r) for r in roots if os.path.isdir(r)):
        return str(os.geteuid())
    os.setgroups([])
    os.setgid(NOBODY)
    os.setuid(NOBODY)
    return "nobody"


def read_roots() -> list[str]:
    paths = sysconfig.get_paths()
    roots = {paths[k] for k in ("stdlib", "platstdlib", "purelib", "platlib")} | set(sys.path[1:])
    roots |= {"/usr/share/zoneinfo", "/usr/share/fonts", "/dev/null", "/dev/urandom"}
    return sorted(os.path.realpath(r) for r in roots if r and os.path.exists(r))


def install_guard(scratch: str, roots: list[str]) -> None:
    """An audit hook that refuses network, processes, native loading and files outside scratch."""
    readable = [scratch, *roots]

    def inside(path, roots: list[str]) -> bool:
        if isinstance(path, int) or path is None:
            return True
        real = os.path.realpath(os.fsdecode(path))
        return any(real == root or real.startswith(root.rstrip("/") + "/") for root in roots)

    def guard(event: str, args: tuple) -> None:
        if event.startswith(BLOCKED_PREFIXES):
            raise PermissionError(f"sandbox: {event} is not allowed")
        if event == "open":
            path, mode, flags = args
            writing = (isinstance(mode, str) and any(c in mode for c in "wax+")) or (flags or 0) & 0o3
            if not inside(path, [scratch] if writing else readable):
                raise PermissionError(f"sandbox: no access to {path!r} outside the scratch folder")
        elif event in WRITE_EVENTS and not all(inside(a, [scratch]) for a in args[:2] if isinstance(a, str)):
            raise PermissionError(f"sandbox: {event} outside the scratch folder")
        elif event in LIST_EVENTS and args and not inside(args[0] or ".", readable):
            raise PermissionError(f"sandbox: {event} outside the scratch folder")

    sys.addaudithook(guard)


def to_json(value):
    """numpy/pandas values as plain JSON."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def save_open_figures(scratch: Path) -> None:
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None or any(scratch.glob("*.png")):
        return
    for number in plt.get_fignums():
        plt.figure(number).savefig(scratch / f"figure_{number}.png", dpi=80)


def main() -> None:
    config = json.loads(sys.argv[1])
    scratch = Path(config["scratch"])
    network = isolate_network()
    for module in config["preload"]:
        __import__(module)  # trusted imports before confinement (they read the interpreter's files)
    roots = read_roots()
    apply_limits(config["limits"])
    user = drop_privileges(roots)
    os.chdir(scratch)
    sys.path[:] = [p for p in sys.path if p]
    install_guard(str(scratch.resolve()), roots)
    outcome: dict = {"network": network, "user": user}
    namespace = {"__name__": "__main__"}
    try:
        exec(compile(config["code"], "<agent-code>", "exec"), namespace)
        save_open_figures(scratch)
        if "result" in namespace:
            outcome["result"] = json.loads(json.dumps(namespace["result"], default=to_json))
    except BaseException as exc:  # the code under test may raise anything, SystemExit included
        frames = [f for f in traceback.extract_tb(exc.__traceback__) if f.filename == "<agent-code>"]
        outcome["error"] = {
            "type": type(exc).__name__,
            "message": str(exc)[:2000],
            "line": frames[-1].lineno if frames else None,
        }
        traceback.print_exception(exc, file=sys.stderr)
    with open(scratch / "__outcome__.json", "w") as handle:
        json.dump(outcome, handle)
    sys.stdout.flush()
    os._exit(1 if "error" in outcome else 0)


if __name__ == "__main__":
    main()
