"""Sandbox child: set the resource limits, then run the code and write its outcome into scratch.

Isolation is the job of the operating system around this process (agents/isolation.py), not of Python:
this script only applies the rlimits and carries results back.
"""

from __future__ import annotations

import json
import os
import resource
import sys
import traceback
from pathlib import Path


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


def to_json(value):
    """numpy/pandas values as plain JSON."""
    if hasattr(value, "to_dict"):
        return value.to_dict()
    if hasattr(value, "tolist"):
        return value.tolist()
    if hasattr(value, "item"):
        return value.item()
    return str(value)


def describe_axes(ax) -> dict:
    """What a reader sees of one chart: its labels, and the most marks one series draws on it."""
    lines = [len(line.get_xdata()) for line in ax.get_lines()]
    return {
        "title": ax.get_title() or (ax.figure._suptitle.get_text() if ax.figure._suptitle else ""),
        "xlabel": ax.get_xlabel(),
        "ylabel": ax.get_ylabel(),
        "x_tick_labels": sum(bool(t.get_text().strip()) for t in ax.get_xticklabels()),
        "bars": len(ax.patches),
        "line_points": max(lines, default=0),
        "scatter_points": max((len(c.get_offsets()) for c in ax.collections), default=0),
    }


def record_saved_charts(charts: list) -> None:
    """Describe each figure the code saves (once drawn, so tick labels exist), even if it closes it."""
    from matplotlib.figure import Figure

    savefig = Figure.savefig

    def recording(figure, *args, **kwargs):
        saved = savefig(figure, *args, **kwargs)
        charts.extend(describe_axes(ax) for ax in figure.get_axes())
        return saved

    setattr(Figure, "savefig", recording)  # noqa: B010 (a method replaced on purpose)


def save_open_figures(scratch: Path) -> None:
    plt = sys.modules.get("matplotlib.pyplot")
    if plt is None or any(scratch.glob("*.png")):
        return
    for number in plt.get_fignums():
        plt.figure(number).savefig(scratch / f"figure_{number}.png", dpi=80)


def main() -> None:
    config = json.loads(sys.argv[1])
    scratch = Path(config["scratch"])
    os.chdir(scratch)
    for module in config["preload"]:
        __import__(module)  # before the limits: library start-up is not the code's budget
    charts: list[dict] = []
    if "matplotlib.pyplot" in sys.modules:
        record_saved_charts(charts)
    apply_limits(config["limits"])
    # The scratch folder last: files there (an earlier step's modules) import, without shadowing the library.
    sys.path[:] = [*(p for p in sys.path if p), str(scratch)]
    outcome: dict = {"charts": charts}
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
