"""Code agent: writes Python grounded on retrieved code examples, checks it parses, runs and repairs it."""

from __future__ import annotations

import ast
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Final

from pydantic import Field, StringConstraints

from agents import memory
from agents.analysis import unreadable
from agents.base import Agent, AgentRequest, AgentResult, save_figures
from agents.codegen import write_code
from agents.data import DatasetMissing, dataset_files, describe_for_prompt, find_dataset
from agents.llm import LLMUnavailable
from agents.sandbox import SandboxResult, SandboxUnavailable
from conveyor import prompts

NAME: Final = "code"
ModuleName = Annotated[str, StringConstraints(pattern=r"^[a-z][a-z0-9_]{0,29}$")]
CODE_DOMAIN = "python"
log = logging.getLogger(__name__)
SYSTEM = (
    "You are a careful Python programmer. Write a complete, runnable script for the task using only the "
    "standard library, pandas and matplotlib. A chart shows aggregated values (totals by group, or per "
    "month with resample), at most 20 bars or points, with a title and a y-axis label naming the measure; "
    "save it with plt.savefig('chart.png'). The script must "
    "end by running the code on the task's example and printing the result, e.g.\n"
    "```python\ndef double(n):\n    return 2 * n\n\nprint(double(21))\n```\n"
    "Reply with one ```python block."
)

TESTS_SYSTEM = (
    "You are a careful Python programmer writing tests. The modules listed in the task are files in the "
    "current folder: import what you test from them exactly as shown, never define or copy their functions. "
    "Define `test_...` functions that check results with assert statements, on values the requirements "
    "state, at most four asserts each; do not call them yourself, they are run for you. For example:\n"
    "```python\nfrom geometry import area  # area(width, height)\n\n\ndef test_area():\n"
    "    assert area(2, 3) == 6\n```\nReply with one ```python block."
)


class CodeRequest(AgentRequest):
    execute: bool = True
    max_repairs: int = 2
    modules: dict[ModuleName, str] = Field({}, description="Earlier steps' modules the code may import.")


def module_files(modules: dict[str, str], folder: Path) -> dict[str, Path]:
    """`modules` written as `<name>.py` files in `folder`, for the sandbox to copy next to the code."""
    for name, source in modules.items():
        (folder / f"{name}.py").write_text(source)
    return {f"{name}.py": folder / f"{name}.py" for name in modules}


def definitions(source: str) -> list[ast.FunctionDef | ast.ClassDef]:
    """The top-level functions and classes `source` defines (none when it does not parse)."""
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return []
    return [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.ClassDef)]


def defined_names(source: str) -> set[str]:
    return {node.name for node in definitions(source)}


def _arguments(node: ast.FunctionDef) -> str:
    return ", ".join(a.arg for a in node.args.args if a.arg != "self")


def _usage(module: str, node: ast.FunctionDef | ast.ClassDef) -> str:
    """How the code imports and calls a top-level function or class of `module`."""
    if isinstance(node, ast.FunctionDef):
        return f"from {module} import {node.name}  # {node.name}({_arguments(node)})"
    methods = [m for m in node.body if isinstance(m, ast.FunctionDef)]
    init = next((_arguments(m) for m in methods if m.name == "__init__"), "")
    calls = [f"{node.name}({init}).{m.name}({_arguments(m)})" for m in methods if not m.name.startswith("_")]
    return f"from {module} import {node.name}  # " + (", ".join(calls) or f"{node.name}({init})")


def describe_modules(modules: dict[str, str]) -> str:
    """How to import and call what each module defines at top level, for the prompt."""
    lines = [
        _usage(name, node)
        for name, source in modules.items()
        for node in definitions(source)
        if not node.name.startswith("_")
    ]
    if not lines:
        return ""
    usage = "\n".join(lines)
    intro = "Modules in the current folder; import and call them exactly like this, do not copy their code"
    return f"\n\n{intro}:\n```python\n{usage}\n```"


def reference_examples(task: str, k: int = 3) -> tuple[str, list[dict]]:
    """Passages from the code domain of the knowledge base, as prompt text and as sources."""
    from conveyor import gateway

    try:
        passages = gateway.search(task, domains=[CODE_DOMAIN], k=k)
    except Exception as exc:  # no code domain indexed yet: write code without examples
        log.warning("no code examples retrieved: %s", exc)
        return "", []
    sources = [
        {"n": i, "doc_id": p.doc_id, "domain": p.domain, "title": p.title, "text": p.text[:600]}
        for i, p in enumerate(passages, start=1)
    ]
    text = "\n\n".join(f"Reference {s['n']} ({s['title'] or s['doc_id']}):\n{s['text']}" for s in sources)
    return f"\n\nReference documentation:\n{text}", sources


def tests_modules(modules: dict[str, str]) -> Callable[[str, SandboxResult | None], str | None]:
    """The check of a test script for `modules`: it imports their functions instead of copying them and
    defines test functions (which the runner runs)."""
    provided = set().union(*map(defined_names, modules.values()))

    def check(code: str, run: SandboxResult | None) -> str | None:
        defined = defined_names(code)
        if copied := sorted(defined & provided):
            return f"the script defines {', '.join(copied)} itself: import them from the modules instead"
        if not any(name.startswith("test_") for name in defined):
            return "the script defines no test_ function: check the modules in test_ functions with assert"
        return shows_output(code, run)

    return check


def shows_output(code: str, run: SandboxResult | None) -> str | None:
    """A script that ran must show something (printed output, a result or a chart), and its charts must
    read well (aggregated, titled, labelled)."""
    if run is None:
        return None
    if not (run.stdout.strip() or run.result is not None or run.figures):
        return "the script ran but printed nothing: call the code on an example and print the result"
    return next(filter(None, map(unreadable, run.charts)), None)


def write(request: CodeRequest) -> AgentResult:
    """Write code for the task; with `execute`, run it in the sandbox and repair it from its error."""
    references, sources = reference_examples(request.instruction)
    try:
        dataset_id = find_dataset(f"{request.instruction}\n{request.context}")
        files, data_note = (
            dataset_files(dataset_id),
            "\n\nData available in the current folder:\n" + describe_for_prompt(dataset_id),
        )
    except DatasetMissing:
        files, data_note = {}, ""
    modules_note = describe_modules(request.modules)
    data_note += modules_note
    context = f"\n\nEarlier results:\n{request.context[:1500]}" if request.context else ""
    messages = [
        {
            "role": "system",
            "content": (
                prompts.system_prompt("code-tests", TESTS_SYSTEM)
                if request.modules
                else prompts.system_prompt(NAME, SYSTEM)
            ).text
            + references[:2400]
            + memory.examples_for_prompt(NAME, request.instruction),
        },
        {"role": "user", "content": f"Task: {request.instruction}{data_note}{context}"},
    ]
    try:
        with tempfile.TemporaryDirectory(prefix="conveyor-modules-") as folder:
            attempt = write_code(
                messages,
                "code",
                files=files | module_files(request.modules, Path(folder)),
                execute=request.execute,
                max_repairs=request.max_repairs,
                max_tokens=600,  # a whole script with its demo or tests: 400 cut some mid-line
                check=tests_modules(request.modules) if request.modules else shows_output,
                repair_note=modules_note.strip() + "\n" if modules_note else "",
            )
    except LLMUnavailable as exc:
        return AgentResult.without_llm(
            NAME, exc, f"The language model is unavailable: {exc}", sources=sources
        )
    except SandboxUnavailable as exc:
        return AgentResult(agent=NAME, ok=False, error=str(exc), sources=sources, answer=f"Not run: {exc}")
    run = attempt.run
    if attempt.ok:
        status = "it ran in the sandbox and showed output" if run else "it parses"
    else:
        status = f"still failing: {attempt.errors[-1]}"
    repairs = f" after {attempt.attempts - 1} repair(s)" if attempt.attempts > 1 else ""
    printed = f"\n\nOutput:\n```\n{run.stdout.strip()[:1500]}\n```" if run and run.stdout.strip() else ""
    return AgentResult(
        agent=NAME,
        ok=attempt.ok,
        error=None if attempt.ok else attempt.errors[-1],
        sources=sources,
        answer=f"```python\n{attempt.code}\n```\n\nChecked: {status}{repairs}.{printed}",
        figures=save_figures(run.figures) if run else [],
        data={
            "code": attempt.code,
            "parses": attempt.parses,
            "executed": run is not None,
            "run_ok": bool(run and run.ok),
            "attempts": attempt.attempts,
            "errors": attempt.errors,
            "stdout": run.stdout[:2000] if run else "",
            "result": run.result if run else None,
            "charts": [c.model_dump() for c in run.charts] if run else [],
            "isolation": run.isolation if run else None,
        },
    )


AGENT = Agent(
    name=NAME,
    description=(
        "Writes or fixes program code: functions, scripts, regexes, classes, tests. "
        "Example: 'Write a Python function that reverses a string'"
    ),
    request=CodeRequest,
    run=write,
)
