"""Code agent: writes Python grounded on retrieved code examples, checks it parses, runs and repairs it."""

from __future__ import annotations

import ast
import logging
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Annotated, Final

from pydantic import BaseModel, Field, StringConstraints

from agents import memory
from agents.analysis import unreadable
from agents.base import Agent, AgentRequest, AgentResult, save_figures
from agents.codegen import (
    SUITE_LINE,
    CodeAttempt,
    FailedTest,
    SuiteResults,
    extract_code,
    run_script,
    suite_results,
    syntax_error,
    write_code,
)
from agents.data import DatasetMissing, dataset_files, describe_for_prompt, find_dataset
from agents.llm import LLMUnavailable, get_llm
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

# A failing function is written again from the asserts on it, not debugged: asked to correct a shown bug
# (`to_f` missing its +32, `c < 0` for "0 or below"), both models gave the same code back; asked for a
# function meeting the asserts, the 1.5B wrote `to_f` right at once, and `classify` right only in some
# drafts at temperature 0.9 (1 of 6 tried). So: one careful draft, then freer ones, each run against the
# tests; a draft is kept only when more tests pass and none that passed fails.
FIX_SYSTEM = (
    "You are a careful Python programmer. Write the function the user asks for so that every assert they "
    "list holds. Reply with the function alone in one ```python block."
)
FIX_TEMPERATURES = (0.1, 0.9, 0.9)


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


class ModuleFixes(BaseModel):
    """The modules after rewriting the functions failing tests showed wrong, the test run on them, and what
    each rewrite did."""

    modules: dict[str, str]
    results: SuiteResults
    run: SandboxResult | None = None
    notes: list[str] = []


def _called(node: ast.AST) -> set[str]:
    """Names of the functions called anywhere in `node` (`f(...)` and `module.f(...)`)."""
    calls = [n.func for n in ast.walk(node) if isinstance(n, ast.Call)]
    return {
        c.id if isinstance(c, ast.Name) else c.attr for c in calls if isinstance(c, ast.Name | ast.Attribute)
    }


def top_level_function(source: str, name: str) -> ast.FunctionDef | None:
    return next((n for n in definitions(source) if n.name == name and isinstance(n, ast.FunctionDef)), None)


def failing_functions(code: str, failed: list[FailedTest], modules: dict[str, str]) -> list[tuple[str, str]]:
    """(module, function) for each top-level module function called in a failing assert of `code`, in test
    order."""
    asserts = {n.lineno: n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Assert)}
    found: list[tuple[str, str]] = []
    for failure in failed:
        if failure.line not in asserts or not failure.error.startswith("AssertionError"):
            continue
        for name in sorted(_called(asserts[failure.line].test)):
            found += [(m, name) for m, source in modules.items() if top_level_function(source, name)]
    return list(dict.fromkeys(found))


def asserts_on(code: str, function: str) -> list[str]:
    """Every assert of `code` that calls `function`: what a new version of it must meet."""
    asserts = [n for n in ast.walk(ast.parse(code)) if isinstance(n, ast.Assert)]
    return [ast.get_source_segment(code, n) or "" for n in asserts if function in _called(n.test)]


def replace_function(source: str, name: str, reply: str) -> str | None:
    """`source` with its top-level function `name` replaced by the one of that name in `reply` (and the
    reply's imports added); None when either has no such function."""
    old, new = top_level_function(source, name), top_level_function(reply, name)
    if old is None or new is None:
        return None
    start = min([old.lineno, *(d.lineno for d in old.decorator_list)]) - 1
    lines = source.splitlines()
    imports = [
        segment
        for n in ast.parse(reply).body
        if isinstance(n, ast.Import | ast.ImportFrom)
        and (segment := ast.get_source_segment(reply, n) or "") not in lines
    ]
    body = (ast.get_source_segment(reply, new) or "").splitlines()
    return "\n".join([*imports, *lines[:start], *body, *lines[old.end_lineno :]]) + "\n"


def fix_modules(
    code: str,
    modules: dict[str, str],
    results: SuiteResults,
    requirements: str,
    files: dict[str, Path],
    folder: Path,
) -> ModuleFixes:
    """Have the model write again each module function that a failing assert of the test script `code`
    calls, from every assert on it; a new version is kept only when the script then passes more tests and
    none that passed before fails."""
    fixed = ModuleFixes(modules=dict(modules), results=results)
    system = prompts.system_prompt("code-fix", FIX_SYSTEM).text
    for module, function in failing_functions(code, results.failed, modules):
        node = top_level_function(fixed.modules[module], function)
        checks = "\n".join(asserts_on(code, function))
        prompt = f"Requirements: {requirements[:1200]}\n\nWrite `{function}({node and _arguments(node)})`. "
        prompt += "These must hold:\n"
        prompt += f"```python\n{checks}\n```"
        for temperature in FIX_TEMPERATURES:
            reply = get_llm("code").complete(
                [{"role": "system", "content": system}, {"role": "user", "content": prompt}],
                max_tokens=400,
                temperature=temperature,
            )
            candidate = replace_function(fixed.modules[module], function, extract_code(reply))
            if candidate is None or syntax_error(candidate):
                continue
            trial = fixed.modules | {module: candidate}
            run = run_script(code, files=files | module_files(trial, folder))
            after = suite_results(run.stdout)
            if after is not None and set(fixed.results.passed) < set(after.passed):
                fixed.modules, fixed.results, fixed.run = trial, after, run
                fixed.notes.append(f"`{module}.{function}` written again from its asserts: {after.summary()}")
                break
        else:
            fixed.notes.append(f"`{module}.{function}` kept: no new version passed more tests")
    return fixed


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
                keep_failed_asserts=bool(request.modules),  # a failing test may show a module's bug
            )
            results = suite_results(attempt.run.stdout) if attempt.run else None
            fixes = (
                fix_modules(attempt.code, request.modules, results, request.context, files, Path(folder))
                if request.modules and results and results.failed
                else None
            )
    except LLMUnavailable as exc:
        return AgentResult.without_llm(
            NAME, exc, f"The language model is unavailable: {exc}", sources=sources
        )
    except SandboxUnavailable as exc:
        return AgentResult(agent=NAME, ok=False, error=str(exc), sources=sources, answer=f"Not run: {exc}")
    return reported(attempt, fixes, request.modules, sources)


def reported(
    attempt: CodeAttempt, fixes: ModuleFixes | None, modules: dict[str, str], sources: list[dict]
) -> AgentResult:
    """The code agent's result: the code, how it was checked, its output, the test results and the modules
    the tests led to fix."""
    run = (fixes.run if fixes else None) or attempt.run
    results = fixes.results if fixes else suite_results(run.stdout) if run else None
    ok = attempt.ok or bool(fixes and not fixes.results.failed)
    error = None if ok else fixes.results.summary() if fixes else attempt.errors[-1]
    if ok:
        status = "it ran in the sandbox and showed output" if run else "it parses"
    else:
        status = f"still failing: {error}"
    repairs = f" after {attempt.attempts - 1} repair(s)" if attempt.attempts > 1 else ""
    stdout = (
        "\n".join(line for line in run.stdout.splitlines() if not line.startswith(SUITE_LINE)) if run else ""
    )
    sections = [f"```python\n{attempt.code}\n```\n\nChecked: {status}{repairs}."]
    if results:
        sections.append(f"Test results (run in the sandbox): {results.summary()}.")
    if fixes:
        sections += fixes.notes
        sections += [
            f"Fixed `{name}.py`:\n```python\n{source}\n```"
            for name, source in fixes.modules.items()
            if source != modules[name]
        ]
    if stdout.strip():
        sections.append(f"Output:\n```\n{stdout.strip()[:1500]}\n```")
    return AgentResult(
        agent=NAME,
        ok=ok,
        error=error,
        sources=sources,
        answer="\n\n".join(sections),
        figures=save_figures(run.figures) if run else [],
        data={
            "code": attempt.code,
            "parses": attempt.parses,
            "executed": run is not None,
            "run_ok": bool(run and run.ok),
            "attempts": attempt.attempts,
            "errors": attempt.errors,
            "stdout": stdout[:2000],
            "result": run.result if run else None,
            "charts": [c.model_dump() for c in run.charts] if run else [],
            "isolation": run.isolation if run else None,
            "tests": results.model_dump() if results else None,
            "fixed_modules": {n: src for n, src in fixes.modules.items() if src != modules[n]}
            if fixes
            else {},
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
