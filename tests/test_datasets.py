"""prepare's validation: a bad row names file, line and field; ids are stable; subsets are deterministic."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from stages import prepare
from stages.core import datasets

SCHEMA = datasets.Schema(inputs=("url", "text"), label="category")


def write(path: Path, lines: list[str]) -> Path:
    path.write_text("\n".join(lines) + "\n")
    return path


def row(url: str, text: str = "some text", category: str = "News") -> str:
    return json.dumps({"url": url, "text": text, "category": category})


@pytest.mark.parametrize(
    "bad_line,message",
    [
        ('{"url": "u", "text": "t"}', "line 2? field 'category' is missing"),
        ('{"url": "u", "text": "", "category": "News"}', "field 'text' must be a non-empty string"),
        ('{"url": 3, "text": "t", "category": "News"}', "field 'url' must be a non-empty string"),
        ('{"url": "u", "text": "t", "category": "News"', "not valid JSON"),
        ('["u", "t", "News"]', "expected a JSON object"),
    ],
)
def test_bad_row_names_file_line_and_field(tmp_path: Path, bad_line: str, message: str) -> None:
    path = write(tmp_path / "d.jsonl", [row("https://a"), bad_line, row("https://c")])
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load(path, SCHEMA)
    assert str(error.value).startswith(f"{path}:2: ")
    assert message.split("? ")[-1] in str(error.value)


def test_duplicate_inputs_are_rejected_with_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", [row("https://a"), row("https://b"), row("https://a", category="App")])
    with pytest.raises(datasets.DatasetError, match=r"d\.jsonl:3: duplicate inputs .* line 1"):
        datasets.assign_ids(datasets.load(path, SCHEMA), SCHEMA, path)


def test_row_ids_are_stable_under_reordering_and_appending(tmp_path: Path) -> None:
    first = write(tmp_path / "a.jsonl", [row("https://a"), row("https://b")])
    second = write(tmp_path / "b.jsonl", [row("https://c"), row("https://b"), row("https://a")])
    ids_first = {r["url"]: r["row_id"] for r in datasets.assign_ids(datasets.load(first, SCHEMA), SCHEMA, first)}
    ids_second = {r["url"]: r["row_id"] for r in datasets.assign_ids(datasets.load(second, SCHEMA), SCHEMA, second)}
    assert ids_first["https://a"] == ids_second["https://a"] and ids_first["https://b"] == ids_second["https://b"]
    assert len(set(ids_second.values())) == 3


def test_subset_is_deterministic_ordered_and_stable_when_rows_are_appended() -> None:
    rows = [{"row_id": f"{i:04d}"} for i in range(100)]
    sample = datasets.subset(rows, 10, seed=7)
    assert sample == datasets.subset(rows, 10, seed=7)
    assert [r["row_id"] for r in sample] == sorted(r["row_id"] for r in sample)
    assert sample != datasets.subset(rows, 10, seed=8)
    grown = datasets.subset(rows + [{"row_id": f"x{i}"} for i in range(5)], 10, seed=7)
    assert len({r["row_id"] for r in sample} & {r["row_id"] for r in grown}) >= 5
    assert datasets.subset(rows, None, seed=0) == rows


def test_prepare_stage_reports_bad_row_and_leaves_previous_output(tmp_path: Path, monkeypatch, capsys) -> None:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("defaults: []\n")
    write(tmp_path / "d.jsonl", [row("https://a"), '{"url": "https://b", "text": "t", "category": ""}'])
    params = {
        "env": {"name": "dev", "subset": {"rows": None, "seed": 0}},
        "use_cases": {"uc": {"dataset": "d.jsonl", "data": {"inputs": ["url", "text"], "label": "category"}}},
    }
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    out = tmp_path / "prepared.jsonl"
    out.write_text("previous output\n")
    monkeypatch.chdir(tmp_path)
    assert prepare.main(["--use-case", "uc", "--out", str(out)]) == 1
    assert "d.jsonl:2: field 'category' (the label) is empty" in capsys.readouterr().err
    assert out.read_text() == "previous output\n"
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".prepared")] == []


CHAT = datasets.Schema(inputs=("chat_history", "question"), label="answer", lists=("chat_history",))
TURN = {"inputs": {"question": "Hi?"}, "outputs": {"answer": "Hello."}}


def chat_row(history: object, question: str = "And then?") -> str:
    return json.dumps({"chat_history": history, "question": question, "answer": "Then this."})


def test_a_list_column_may_be_empty_and_keeps_ids_stable(tmp_path: Path) -> None:
    path = write(tmp_path / "c.jsonl", [chat_row([]), chat_row([TURN])])
    rows = datasets.assign_ids(datasets.load(path, CHAT), CHAT, path)
    assert [row["chat_history"] for row in rows] == [[], [TURN]]
    assert rows[0]["row_id"] != rows[1]["row_id"]  # the history is part of the inputs
    again = write(tmp_path / "d.jsonl", [chat_row([TURN])])
    assert datasets.assign_ids(datasets.load(again, CHAT), CHAT, again)[0]["row_id"] == rows[1]["row_id"]


@pytest.mark.parametrize(
    "bad_line,message",
    [
        (chat_row("Hi?"), "field 'chat_history' must be a JSON list, got 'Hi?'"),
        (chat_row(None), "field 'chat_history' must be a JSON list, got None"),
        (chat_row([], question=""), "field 'question' must be a non-empty string"),
    ],
)
def test_a_list_column_that_is_not_a_list_names_file_line_and_field(
    tmp_path: Path, bad_line: str, message: str
) -> None:
    path = write(tmp_path / "c.jsonl", [chat_row([]), bad_line])
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load(path, CHAT)
    assert str(error.value).startswith(f"{path}:2: {message}")


def test_a_list_column_must_be_an_input() -> None:
    with pytest.raises(datasets.DatasetError, match=r"data.lists: history not among the inputs"):
        datasets.Schema(inputs=("question",), label="answer", lists=("history",))
