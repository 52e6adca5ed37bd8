"""Write code with the LLM, check it parses, run it in the sandbox and repair it from the error."""

from __future__ import annotations

import ast
import re
from collections.abc import Callable
from pathlib import Path

from pydantic import BaseModel, ValidationError

from agents.llm import get_llm
from agents.sandbox import Limits, SandboxResult, run_code
from conveyor.settings import LLMRole

# Appended to the code when it runs: every top-level `test_*` function is called, as pytest would; it prints
# one `conveyor-tests:` line of JSON (which passed, which failed and why), and a failing test fails the run
# with its name and line, so the repair prompt says which check broke.
SUITE_LINE = "conveyor-tests: "
TEST_RUNNER = """

def _conveyor_run_tests():
    import json
    import traceback
    tests = [(n, f) for n, f in list(globals().items()) if n.startswith("test_") and callable(f)]
    passed, failed = [], []
    for name, test in tests:
        try:
            test()
        except Exception as exc:
            frames = traceback.extract_tb(exc.__traceback__)
            lines = [f.lineno for f in frames if f.filename == "<agent-code>"]
            error = f"{type(exc).__name__}: {exc}"[:500]
            failed.append({"name": name, "line": lines[-1] if lines else None, "error": error})
        else:
            passed.append(name)
    if tests:
        print("conveyor-tests: " + json.dumps({"passed": passed, "failed": failed}))
    if failed:
        named = "; ".join(f"{f['name']} (line {f['line'] or '?'}): {f['error']}" for f in failed)
        raise AssertionError(f"{len(passed)} of {len(tests)} test functions passed; failed tests: {named}")
    if tests:
        print(f"{len(tests)} test functions passed")


_conveyor_run_tests()
"""
LINE = re.compile(r"\(line (\d+)\)")
FENCE = re.compile(r"```(?:python|py)?\s*\n(.*?)(?:```|$)", re.DOTALL)


class FailedTest(BaseModel):
    name: str
    line: int | None = None
    error: str


class SuiteResults(BaseModel):
    """What the test runner reported: the test functions that passed, and those that failed with why."""

    passed: list[str] = []
    failed: list[FailedTest] = []

    def summary(self) -> str:
        total = len(self.passed) + len(self.failed)
        failing = "; ".join(f"{f.name}: {f.error}" for f in self.failed)
        return f"{len(self.passed)} of {total} test functions pass" + (
            f"; failing: {failing}" if failing else ""
        )


def suite_results(stdout: str) -> SuiteResults | None:
    """The runner's report in a run's output; None when the script defined no test function, stopped
    before the runner, or its output was cut."""
    for line in reversed(stdout.splitlines()):
        if line.startswith(SUITE_LINE):
            try:
                return SuiteResults.model_validate_json(line.removeprefix(SUITE_LINE))
            except ValidationError:
                return None
    return None


def only_asserts_failed(run: SandboxResult) -> bool:
    """The run's test functions ran and the failing ones failed an assert (what they checked came out
    wrong), as opposed to the script itself breaking."""
    results = suite_results(run.stdout)
    return bool(
        results and results.failed and all(f.error.startswith("AssertionError") for f in results.failed)
    )


class CodeAttempt(BaseModel):
    code: str
    parses: bool
    run: SandboxResult | None = None
    attempts: int = 1
    errors: list[str] = []
    ok: bool = False


def extract_code(text: str) -> str:
    """The first fenced block, or the whole reply when the model wrote bare code."""
    blocks = FENCE.findall(text)
    return (max(blocks, key=len) if blocks else text).strip()


def syntax_error(code: str) -> str | None:
    try:
        ast.parse(code)
    except SyntaxError as exc:
        return f"SyntaxError: {exc.msg} (line {exc.lineno})"
    return None


def quote_lines(problem: str, code: str) -> str:
    """`problem` with each "(line N)" it names followed by that line of `code`: a repair sees what failed."""
    lines = code.splitlines()

    def quoted(match: re.Match) -> str:
        number = int(match.group(1))
        return f"(line {number}: {lines[number - 1].strip()})" if 0 < number <= len(lines) else match.group(0)

    return LINE.sub(quoted, problem)


def complete_lines(code: str) -> str | None:
    """The longest run of `code`'s first lines that parses (a reply cut off at the token limit loses only
    its unfinished end), or None."""
    lines = code.splitlines()
    for end in range(len(lines) - 1, 0, -1):
        if syntax_error(candidate := "\n".join(lines[:end]).rstrip()) is None:
            return candidate
    return None


def explain_asserts(code: str) -> str:
    """`code` with each one-line `assert a == b` that has no message given one showing both values (lines keep
    their numbers), so a failing test says what the code returned instead of a bare AssertionError."""
    try:
        tree = ast.parse(code)
    except SyntaxError:
        return code
    lines = code.splitlines()
    for node in [n for n in ast.walk(tree) if isinstance(n, ast.Assert) and n.msg is None]:
        test = node.test
        if not (isinstance(test, ast.Compare) and len(test.ops) == 1 and isinstance(test.ops[0], ast.Eq)):
            continue
        line = lines[node.lineno - 1].encode()  # offsets count UTF-8 bytes
        left, right = (ast.get_source_segment(code, side) for side in (test.left, test.comparators[0]))
        if node.lineno == node.end_lineno and node.end_col_offset is not None and left and right:
            message = f', repr({left}) + " != " + repr({right})'.encode()
            end = node.end_col_offset
            lines[node.lineno - 1] = (line[:end] + message + line[end:]).decode()
    return "\n".join(lines)


def run_script(
    code: str, files: dict[str, Path] | None = None, limits: Limits | None = None
) -> SandboxResult:
    """Run `code` in the sandbox with its test functions (asserts explained, see TEST_RUNNER)."""
    return run_code(explain_asserts(code) + TEST_RUNNER, files=files, limits=limits)


def write_code(
    messages: list[dict],
    role: LLMRole,
    files: dict[str, Path] | None = None,
    execute: bool = True,
    max_repairs: int = 2,
    max_tokens: int = 400,
    limits: Limits | None = None,
    check: Callable[[str, SandboxResult | None], str | None] | None = None,
    repair_note: str = "",
    keep_failed_asserts: bool = False,
) -> CodeAttempt:
    """Generate code; while it fails to parse, run or pass `check`, show the model why and ask for a fix.
    With `keep_failed_asserts`, a run whose only failures are asserts of test functions is returned as it
    is (the code under test, not the tests, may be what is wrong)."""
    llm = get_llm(role)
    history = list(messages)
    errors: list[str] = []
    attempt = 0
    while True:
        attempt += 1
        reply = llm.complete(history, max_tokens=max_tokens, temperature=0.1)
        code = extract_code(reply)
        problem = syntax_error(code)
        if problem and (llm.count_tokens(reply) or 0) >= max_tokens - 2:  # cut off: keep its whole lines
            code = complete_lines(code) or code
            problem = syntax_error(code)
        run = None
        settled = False
        if problem is None and execute:
            run = run_script(code, files=files, limits=limits)
            problem = None if run.ok else quote_lines(run.failure(), code)
            settled = keep_failed_asserts and only_asserts_failed(run)
        if check and (problem is None or settled) and (found := check(code, run)):
            problem, settled = found, False
        if problem:
            errors.append(problem)
        if problem is None or settled or attempt > max_repairs:
            return CodeAttempt(
                code=code,
                parses=syntax_error(code) is None,
                run=run,
                attempts=attempt,
                errors=errors,
                ok=problem is None,
            )
        history += [
            {"role": "assistant", "content": f"```python\n{code}\n```"},
            {
                "role": "user",
                "content": f"That code failed with: {problem[:600]}\n{repair_note}"
                f"Return the whole corrected code in one ```python block.",
            },
        ]
