import json

from promptflow.core import tool

from stages.core.sandbox import run_python

MARKER = "@@test-results@@"  # the harness's last line: MARKER + JSON

# Runs in the sandbox: define the function, then each test on its own, so one failing assert does not hide
# the others. Prints one line of results; anything the code printed before it is ignored.
HARNESS = """
import json
_tests = {tests}
_namespace = {{"__name__": "solution"}}
try:
    exec(compile({code}, "solution.py", "exec"), _namespace)
    _loaded = None
except BaseException as exc:
    _loaded = f"{{type(exc).__name__}}: {{exc}}"
_failures = []
for _test in _tests:
    if _loaded:
        _failures.append(_loaded)
        continue
    try:
        exec(compile(_test, "test", "exec"), _namespace)
        _failures.append(None)
    except BaseException as exc:
        _failures.append(f"{{_test}} -> {{type(exc).__name__}}: {{exc}}")
print()
print({marker!r} + json.dumps(_failures))
"""


def harness(code: str, tests: list[str]) -> str:
    """The program the sandbox runs: the generated code and the tests, as string literals (never spliced)."""
    return HARNESS.format(code=repr(code), tests=repr(list(tests)), marker=MARKER)


def failures_from(stdout: str, count: int) -> list[str | None] | None:
    """Per-test failure (None = passed) from the harness's result line; None if there is no such line."""
    lines = [line for line in stdout.splitlines() if line.startswith(MARKER)]
    if not lines:
        return None
    failures = json.loads(lines[-1][len(MARKER) :])
    return failures if isinstance(failures, list) and len(failures) == count else None


@tool
def run_tests(code: str, tests: list, timeout_s: float = 5, memory_mb: int = 256) -> dict:
    """Run the row's tests against the generated code in the sandbox; all must pass for the row to pass."""
    result = run_python(harness(code, tests), timeout_s=timeout_s, memory_mb=memory_mb)
    failures = failures_from(result.stdout, len(tests)) if result.status == "ok" else None
    if failures is None:  # crashed, timed out or printed no results: every test fails
        error = result.error or "the test harness printed no results"
        return {"passed": False, "tests_passed": 0, "tests_total": len(tests), "status": result.status,
                "error": error}  # fmt: skip
    passed = sum(failure is None for failure in failures)
    first = next((failure for failure in failures if failure), None)
    return {"passed": passed == len(tests), "tests_passed": passed, "tests_total": len(tests), "status": "ok",
            "error": first}  # fmt: skip
