"""math_coding and code_generation: their flow code, their flows through FlowSession (the function entry's LLM
contract included) and their pipelines end to end on a stub LLM scripted with right and wrong answers."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from conftest import CANNED_CODE, REPO, Reproduced, StubLLM
from test_flows import load

from stages import engine
from stages.llm import connections

MATH = "use_cases/math_coding/flows"
CODE = "use_cases/code_generation/flows"


def dataset(relative: str) -> list[dict]:
    """A use case's dataset (pulled from the examples remote by `make data` / the project fixture)."""
    path = REPO / relative
    if not path.is_file():
        pytest.fail(f"{relative} is not pulled: run `make data` (dvc pull -r examples)")
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


# --- flow code as plain functions ---


@pytest.mark.parametrize(
    "stdout,number",
    [("84\n", 84.0), ("The answer is 1,331 dollars.\n", 1331.0), ("-4.5\n2.5e3\n", 2500.0), ("none\n", None)],
)
def test_math_answer_is_the_last_number_printed(stdout: str, number: float | None) -> None:
    assert load(f"{MATH}/solve/execute.py").last_number(stdout) == number


def test_math_execute_turns_crashes_and_timeouts_into_invalid_rows() -> None:
    execute = load(f"{MATH}/solve/execute.py").execute
    ok = execute("Program:\n```python\nprint(3 * 45 - 28)\n```")
    assert ok["answer"] == 107.0 and ok["valid"] and ok["status"] == "ok" and ok["error"] is None
    crash = execute("print(apples)")
    assert crash["answer"] is None and not crash["valid"] and crash["status"] == "error"
    assert crash["error"] == "NameError: name 'apples' is not defined"
    looping = execute("while True:\n    pass", timeout_s=1)
    assert looping["status"] == "timeout" and not looping["valid"] and looping["error"].startswith("timed out")
    silent = execute("x = 1")
    assert silent["status"] == "ok" and not silent["valid"] and silent["error"] == "the program printed no number"


def test_math_grade_tolerance_and_metrics() -> None:
    close_enough = load(f"{MATH}/evaluate/grade.py").close_enough
    assert close_enough(29.2, 29.200000000000003, 1e-4, 1e-6) and close_enough(84, 84.0, 1e-4, 1e-6)
    assert not close_enough(84, 85.0, 1e-4, 1e-6) and not close_enough(84, None, 1e-4, 1e-6)
    assert not close_enough(1, True, 1e-4, 1e-6) and not close_enough(1, float("nan"), 1e-4, 1e-6)
    grades = [{"correct": True, "status": "ok"}, {"correct": False, "status": "error"},
              {"correct": False, "status": "timeout"}, {"correct": False, "status": "ok"}]  # fmt: skip
    metrics = load(f"{MATH}/evaluate/aggregate.py").math_metrics(grades)
    assert metrics == {"accuracy": 0.25, "execution_error_rate": 0.25, "timeout_rate": 0.25}


@pytest.mark.parametrize(
    "answer,code,valid",
    [("    return a + b\n", "def add(a, b):\n    return a + b", True),
     ("```python\ndef add(a, b):\n    return a + b\n```", "def add(a, b):\n    return a + b", True),
     ("return a +", "def add(a, b):\nreturn a +", False),
     ("```python\ndef plus(a, b):\n    return a + b\n```", "def add(a, b):\ndef plus(a, b):\n    return a + b", False)],
)  # fmt: skip
def test_code_assemble_from_a_body_or_a_whole_function(answer: str, code: str, valid: bool) -> None:
    assert load(f"{CODE}/generate/generate.py").assemble("def add(a, b):", answer) == (code, valid)


def test_code_tests_run_one_by_one_in_the_sandbox() -> None:
    run_tests = load(f"{CODE}/evaluate/run_tests.py").run_tests
    tests = ["assert add(2, 3) == 5", "assert add(-1, 1) == 0", "assert add(1, 1) == 3"]
    partial = run_tests("def add(a, b):\n    print('noise')\n    return a + b", tests)
    assert partial["tests_passed"] == 2 and not partial["passed"] and partial["status"] == "ok"
    assert partial["error"] == "assert add(1, 1) == 3 -> AssertionError: "
    assert run_tests("def add(a, b):\n    return a + b", tests[:2])["passed"]
    broken = run_tests("def add(a, b) return", tests)
    assert broken["tests_passed"] == 0 and broken["status"] == "ok" and broken["error"].startswith("SyntaxError")
    exits = run_tests("import os\nos._exit(3)", tests)
    assert exits["status"] == "error" and exits["tests_passed"] == 0
    hangs = run_tests("def add(a, b):\n    while True:\n        pass", tests, timeout_s=1)
    assert hangs["status"] == "timeout" and hangs["tests_total"] == 3 and hangs["tests_passed"] == 0
    escapes = run_tests(f"def add(a, b):\n    return open({str(REPO / 'README.md')!r}).read()", ["add(1, 2)"])
    assert not escapes["passed"] and "PermissionError" in escapes["error"]

    metrics = load(f"{CODE}/evaluate/aggregate.py").code_metrics([partial, broken, hangs])
    assert metrics == {"pass_rate": 0.0, "assert_pass_rate": round(2 / 9, 4), "execution_error_rate": round(1 / 3, 4)}


# --- the flows through the flow engine (in this process), on a stub LLM ---


@pytest.fixture
def configured(tmp_path: Path) -> Iterator[None]:
    """prompt flow configured under tmp_path; the environment is restored afterwards."""
    saved = dict(os.environ)
    engine.configure(tmp_path)
    try:
        yield
    finally:
        os.environ.clear()
        os.environ.update(saved)


def stub_connection(stub: StubLLM) -> connections.Connection:
    return connections.Connection(name="local", type="openai", api="completion", model="gemma-3-270m",
                                  base_url=stub.base_url, api_key="unused", request_timeout_s=10)  # fmt: skip


CANNED = CANNED_CODE  # the answers the session's reproduced project got too


@pytest.fixture
def canned_stub(stub_llm: StubLLM) -> StubLLM:
    stub_llm.script(CANNED)
    return stub_llm


def test_math_flow_runs_each_row_to_an_outcome(configured: None, canned_stub: StubLLM) -> None:
    binding = engine.LLMBinding(stub_connection(canned_stub), node="write_code", prompt="solve_v2.jinja2",
                                     params={"temperature": 0, "max_tokens": 48})  # fmt: skip
    session = engine.FlowSession(REPO / MATH / "solve", binding)
    right = session.run("a", {"question": "A baker makes 12 muffins per tray and bakes 7 trays. How many?"})
    refused = session.run("b", {"question": "How many seconds are there in 2.5 hours?"})
    garbage = session.run("c", {"question": "What is the answer to an unscripted question?"})
    assert right.error is None and right.outputs["answer"] == 84.0 and right.outputs["valid"]
    assert refused.error is None and refused.outputs["status"] == "error" and "os.system" in refused.outputs["error"]
    assert garbage.error is None and not garbage.outputs["valid"] and garbage.outputs["answer"] is None
    sent = canned_stub.requests()[-1]["body"]
    assert sent["prompt"].startswith("# Each math question") and sent["max_tokens"] == 48


def test_function_entry_gets_the_llm_prompt_and_params(configured: None, canned_stub: StubLLM) -> None:
    binding = engine.LLMBinding(stub_connection(canned_stub), prompt="generate_v2.prompty",
                                     params={"temperature": 0, "max_tokens": 77})  # fmt: skip
    session = engine.FlowSession(REPO / CODE / "generate", binding)
    assert session.kind is engine.FlowKind.FLEX
    result = session.run("r", {"task": "Return the sum of two numbers.", "signature": "def add(a, b):"})
    assert result.error is None and result.outputs["valid"] and result.outputs["code"].startswith("def add(a, b):")
    sent = canned_stub.requests()[-1]["body"]
    assert sent["prompt"].startswith('def larger(a, b):\n    """Return the larger')  # the variant's prompty
    assert sent["max_tokens"] == 77 and sent["model"] == "gemma-3-270m" and sent["stop"][0] == "\n\n\n"
    # The injected parameters are not flow inputs, and without a binding the entry says what is missing.
    unbound = engine.FlowSession(REPO / CODE / "generate").run("r", {"task": "t", "signature": "def f():"})
    assert "no model_config" in unbound.error


# --- the pipelines, end to end ---


def test_pipelines_score_scripted_answers_exactly(reproduced_build: Reproduced) -> None:
    # The session's project was reproduced with CANNED answers for the code use cases (tests/conftest.py).
    stages = {f"{stage}@{uc}" for uc in ("math_coding", "code_generation") for stage in ("prepare", "run",
              "evaluate", "report")}  # fmt: skip
    assert stages <= set(reproduced_build.ran)
    data = reproduced_build.root / "data"

    math_rows = len(dataset("use_cases/math_coding/data/problems.jsonl"))
    run = json.loads((data / "math_coding/run/summary.json").read_text())
    # Unscripted rows get a label word from the stub: a NameError in the sandbox, an invalid row, never a run error.
    assert run["rows"] == math_rows and run["errors"] == 0 and run["invalid_answers"] == math_rows - 3
    metrics = json.loads((data / "math_coding/eval/metrics.json").read_text())
    assert metrics["accuracy"] == round(2 / math_rows, 4) and metrics["rows"] == math_rows
    assert metrics["execution_error_rate"] == round((math_rows - 3) / math_rows, 4) and metrics["timeout_rate"] == 0
    report = (data / "math_coding/report/report.csv").read_text()
    assert "print(2 ** 10)" in report and "1024.0" in report

    tasks = dataset("use_cases/code_generation/data/tasks.jsonl")
    run = json.loads((data / "code_generation/run/summary.json").read_text())
    assert run["rows"] == len(tasks) and run["errors"] == 0
    metrics = json.loads((data / "code_generation/eval/metrics.json").read_text())
    asserts = sum(len(task["tests"]) for task in tasks)
    assert metrics["pass_rate"] == round(2 / len(tasks), 4) and metrics["rows"] == len(tasks)
    assert metrics["assert_pass_rate"] == round((3 + 3 + 2) / asserts, 4)
    assert metrics["execution_error_rate"] == round(1 / len(tasks), 4)
    rows = [json.loads(line) for line in (data / "code_generation/eval/rows/v1.jsonl").read_text().splitlines()]
    fib = next(row for row in rows if row["signature"] == "def fib(n):")
    assert fib["eval"]["status"] == "error" and not fib["eval"]["passed"]
    assert "code_generation" in (data / "code_generation/report/report.html").read_text()
