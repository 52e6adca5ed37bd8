"""OS isolation for model-written code: a bubblewrap command line and a seccomp filter against new processes.

The child runs in new user/pid/net/ipc/uts/cgroup namespaces as uid 65534, on a read-only empty root holding
a read-only view of /usr, the interpreter and its site-packages, a private /tmp and /dev, and one writable
scratch folder. No /proc is mounted and no host process is visible. The seccomp filter refuses fork, vfork,
clone without CLONE_THREAD (threads still work), ptrace, namespace, keyring, BPF and io_uring calls: the code
can never start another program, so no shell, daemon or fork bomb exists to escape the limits.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from conveyor.settings import get_settings

log = logging.getLogger(__name__)

SANDBOX_UID = 65534
SCRATCH = "/scratch"
CLONE_THREAD = 0x00010000
DENIED_SYSCALLS = (
    "fork",
    "vfork",
    "ptrace",
    "process_vm_readv",
    "process_vm_writev",
    "unshare",
    "setns",
    "mount",
    "umount2",
    "pivot_root",
    "chroot",
    "keyctl",
    "add_key",
    "request_key",
    "bpf",
    "perf_event_open",
    "userfaultfd",
    "io_uring_setup",
    "io_uring_enter",
    "io_uring_register",
    "kexec_load",
    "init_module",
    "finit_module",
)
SETTING_HINT = (
    "install bubblewrap (Debian package `bubblewrap`) and allow unprivileged user namespaces "
    "(containers: see docs/agents.md), or on a trusted single-user machine set "
    "CONVEYOR_SANDBOX_ISOLATION=process to run model code without OS isolation"
)


class SandboxUnavailable(RuntimeError):
    """OS isolation cannot be set up here; model code is refused rather than run unconfined."""


@functools.cache
def seccomp_program() -> bytes:
    """The BPF program (libseccomp via pyseccomp) for the current architecture."""
    import pyseccomp as seccomp

    denied = seccomp.ERRNO(errno.EPERM)
    rules = seccomp.SyscallFilter(defaction=seccomp.ALLOW)
    for name in DENIED_SYSCALLS:
        try:
            rules.add_rule(denied, name)
        except (RuntimeError, ValueError, OSError):  # not a syscall on this architecture (fork on arm64)
            continue
    rules.add_rule(denied, "clone", seccomp.Arg(0, seccomp.MASKED_EQ, CLONE_THREAD, 0))
    rules.add_rule(seccomp.ERRNO(errno.ENOSYS), "clone3")  # flags are behind a pointer: make libc use clone
    with tempfile.TemporaryFile() as out:  # libseccomp writes to a file descriptor
        rules.export_bpf(out)
        out.seek(0)
        return out.read()


def _seccomp_fd() -> int:
    """A pipe holding the filter, for `bwrap --add-seccomp-fd` (it is a few hundred bytes: no blocking)."""
    read, write = os.pipe()
    os.write(write, seccomp_program())
    os.close(write)
    return read


def interpreter_roots() -> list[str]:
    """What the child reads: the interpreter's install, the venv and its site-packages; not the project."""
    project = Path(__file__).resolve().parents[1]
    candidates = {sys.prefix, sys.base_prefix, os.path.dirname(os.path.realpath(sys.executable))}
    candidates |= {p for p in sys.path if "site-packages" in p or "dist-packages" in p}
    roots = set()
    for path in candidates:
        real = os.path.realpath(path)
        if path and os.path.isdir(real) and not Path(project).is_relative_to(real) and real != "/usr":
            roots.add(real)
    return sorted(roots)


@functools.cache
def can_disable_user_namespaces() -> bool:
    """`bwrap --disable-userns` writes the sandbox's own `/proc/sys/user/max_user_namespaces`, which container
    runtimes mount read-only; there the seccomp filter (no unshare, setns or new processes) is what stops
    nested user namespaces."""
    import psutil

    return not any(
        part.mountpoint == "/proc/sys" and "ro" in part.opts.split(",")
        for part in psutil.disk_partitions(all=True)
    )


def bwrap_command(scratch: Path, child: Path, extra: list[str] | None = None) -> tuple[list[str], int]:
    """The bwrap argv (ending with the child interpreter) and the seccomp fd to pass to it."""
    bwrap = shutil.which("bwrap") or "bwrap"
    argv = [
        bwrap,
        "--unshare-user",
        "--unshare-pid",
        "--unshare-net",
        "--unshare-ipc",
        "--unshare-uts",
        "--unshare-cgroup-try",
        *(["--disable-userns"] if can_disable_user_namespaces() else []),
        "--uid",
        str(SANDBOX_UID),
        "--gid",
        str(SANDBOX_UID),
        "--hostname",
        "sandbox",
        "--die-with-parent",
        "--new-session",
        "--cap-drop",
        "ALL",
        "--clearenv",
        "--ro-bind",
        "/usr",
        "/usr",
    ]
    for link in ("bin", "lib", "lib64", "sbin"):
        if os.path.islink(f"/{link}"):
            argv += ["--symlink", os.readlink(f"/{link}"), f"/{link}"]
    # /dev and /tmp first: a venv that lives under /tmp is then bound on top of the private /tmp, not hidden
    argv += ["--dev", "/dev", "--tmpfs", "/tmp"]
    for root in interpreter_roots():
        argv += ["--ro-bind", root, root]
    fd = _seccomp_fd()
    argv += [
        "--bind",
        str(scratch),
        SCRATCH,
        "--ro-bind",
        str(child),
        "/sandbox/child.py",
        "--remount-ro",
        "/",
        "--chdir",
        SCRATCH,
        "--add-seccomp-fd",
        str(fd),
        *(extra or []),
        sys.executable,
        "-I",
        "/sandbox/child.py",
    ]
    return argv, fd


@functools.cache
def check_available() -> None:
    """Start one trivial sandbox; raise SandboxUnavailable with bwrap's reason when it cannot."""
    if shutil.which("bwrap") is None:
        raise SandboxUnavailable(f"model code refused: `bwrap` is not installed; {SETTING_HINT}")
    with tempfile.TemporaryDirectory(prefix="conveyor-sandbox-probe-") as probe:
        argv, fd = bwrap_command(Path(probe), Path(__file__).with_name("sandbox_child.py"))
        argv[-2:] = ["-c", "pass"]
        try:
            done = subprocess.run(argv, pass_fds=(fd,), env={}, capture_output=True, text=True, timeout=30)
        finally:
            os.close(fd)
    if done.returncode != 0:
        reason = (done.stderr.strip().splitlines() or [f"exit code {done.returncode}"])[-1]
        raise SandboxUnavailable(
            f"model code refused: bubblewrap cannot isolate here ({reason}); {SETTING_HINT}"
        )


def isolation_mode() -> str:
    """`bubblewrap`, or `process` (rlimits only) when a trusted machine opted out; logs the opt-out loudly."""
    mode = get_settings().sandbox_isolation
    if mode == "process":
        log.warning(
            "SANDBOX ISOLATION IS OFF (CONVEYOR_SANDBOX_ISOLATION=process): model-written code runs as this "
            "user with resource limits only; it can read files, reach the network and start programs"
        )
        return mode
    check_available()
    return mode
