"""prepare's validation: a bad row names file, line and field; ids are stable; subsets are deterministic."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO

from stages import prepare
from stages.data import datasets

SCHEMA = datasets.Schema(inputs=("url", "text"), label="category")
LIMIT = 64 * 1024  # max_row_bytes


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
        datasets.load(path, SCHEMA, LIMIT)
    assert str(error.value).startswith(f"{path}:2: ")
    assert message.split("? ")[-1] in str(error.value)


def test_duplicate_inputs_are_rejected_with_both_lines(tmp_path: Path) -> None:
    path = write(tmp_path / "d.jsonl", [row("https://a"), row("https://b"), row("https://a", category="App")])
    with pytest.raises(datasets.DatasetError, match=r"d\.jsonl:3: duplicate inputs .* line 1"):
        datasets.assign_ids(datasets.load(path, SCHEMA, LIMIT), SCHEMA, path)


def test_row_ids_are_stable_under_reordering_and_appending(tmp_path: Path) -> None:
    first = write(tmp_path / "a.jsonl", [row("https://a"), row("https://b")])
    second = write(tmp_path / "b.jsonl", [row("https://c"), row("https://b"), row("https://a")])
    loaded = {path: datasets.assign_ids(datasets.load(path, SCHEMA, LIMIT), SCHEMA, path) for path in (first, second)}
    ids_first, ids_second = ({r["url"]: r["row_id"] for r in loaded[path]} for path in (first, second))
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


def stage_project(root: Path, **use_case: Any) -> dict[str, Any]:
    """A folder the stages take for a project: params.yaml with one use case `uc`, the repo's web_classification
    with `use_case` on top (dataset d.jsonl); returns the params."""
    (root / ".dvc").mkdir()
    (root / "conf").mkdir()
    (root / "conf" / "config.yaml").write_text("defaults: []\n")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["use_cases"] = {"uc": {**params["use_cases"]["web_classification"], "dataset": "d.jsonl", **use_case}}
    (root / "params.yaml").write_text(json.dumps(params))
    return params


def test_prepare_stage_reports_bad_row_and_leaves_previous_output(tmp_path: Path, monkeypatch, capsys) -> None:
    stage_project(tmp_path)
    write(tmp_path / "d.jsonl", [row("https://a"), '{"url": "https://b", "text": "t", "category": ""}'])
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
    rows = datasets.assign_ids(datasets.load(path, CHAT, LIMIT), CHAT, path)
    assert [row["chat_history"] for row in rows] == [[], [TURN]]
    assert rows[0]["row_id"] != rows[1]["row_id"]  # the history is part of the inputs
    again = write(tmp_path / "d.jsonl", [chat_row([TURN])])
    assert datasets.assign_ids(datasets.load(again, CHAT, LIMIT), CHAT, again)[0]["row_id"] == rows[1]["row_id"]


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
        datasets.load(path, CHAT, LIMIT)
    assert str(error.value).startswith(f"{path}:2: {message}")


def test_a_list_column_must_be_an_input() -> None:
    with pytest.raises(datasets.DatasetError, match=r"data.lists: history not among the inputs"):
        datasets.Schema(inputs=("question",), label="answer", lists=("history",))


def test_a_list_column_an_env_overlay_maps_is_a_list_in_that_env_only() -> None:
    """An env's overlay (experiment.<env>.yaml) may map a list input, e.g. a chat history, that the base does not."""
    data = {"inputs": ["question"], "label": "answer", "lists": ["history"],
            "inputs_by_env": {"default": ["question"], "chat": ["question", "history"]}}  # fmt: skip
    assert datasets.Schema.from_config(data) == datasets.Schema(("question",), "answer")
    chat = datasets.Schema.from_config({**data, "inputs": ["question", "history"]})
    assert chat == datasets.Schema(("question", "history"), "answer", ("history",))
    with pytest.raises(datasets.DatasetError, match=r"data.lists: histry not among the inputs \['history', 'q"):
        datasets.Schema.from_config({**data, "lists": ["histry"]})


def test_a_row_that_is_not_utf8_names_file_line_byte_and_column(tmp_path: Path) -> None:
    path = tmp_path / "d.jsonl"
    bad = b'{"url": "https://\xe9t\xff", "text": "t", "category": "News"}\n'  # a Latin-1 é
    path.write_bytes(f"{row('https://a')}\n".encode() + bad)
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load(path, SCHEMA, LIMIT)
    assert str(error.value) == f"{path}:2: not valid UTF-8 (byte 0xe9 at column 18); save the file as UTF-8"
    latin = tmp_path / "e.jsonl"  # 30 characters of valid UTF-8 (é is one character, two bytes), then 0xff
    latin.write_bytes('{"url": "https://é", '.encode() + b'"text": "\xff", "category": "News"}\n')
    with pytest.raises(datasets.DatasetError, match=r"e\.jsonl:1: not valid UTF-8 \(byte 0xff at column 31\)"):
        datasets.load(latin, SCHEMA, LIMIT)


def test_a_utf8_bom_is_accepted_and_changes_no_row_id(tmp_path: Path) -> None:
    lines = [row("https://a", text="café"), row("https://b")]
    plain = write(tmp_path / "plain.jsonl", lines)
    bom = tmp_path / "bom.jsonl"
    bom.write_bytes(b"\xef\xbb\xbf" + plain.read_bytes())
    with_bom = datasets.assign_ids(datasets.load(bom, SCHEMA, LIMIT), SCHEMA, bom)
    assert with_bom == datasets.assign_ids(datasets.load(plain, SCHEMA, LIMIT), SCHEMA, plain)
    assert with_bom[0]["url"] == "https://a" and with_bom[0]["text"] == "café"
    inner = tmp_path / "inner.jsonl"  # a BOM anywhere but the start of the file is not whitespace JSON accepts
    inner.write_bytes(plain.read_bytes() + b"\xef\xbb\xbf" + row("https://c").encode() + b"\n")
    with pytest.raises(datasets.DatasetError, match=r"inner\.jsonl:3: not valid JSON"):
        datasets.load(inner, SCHEMA, LIMIT)


def test_a_row_larger_than_max_row_bytes_names_file_line_and_size(tmp_path: Path) -> None:
    at_limit = row("https://b", text="x" * (100 - len(row("https://b", text=""))))
    assert len(at_limit.encode()) == 100
    accepted = write(tmp_path / "ok.jsonl", [row("https://a"), at_limit])
    assert len(datasets.load(accepted, SCHEMA, 100)) == 2  # a row of exactly max_row_bytes is fine
    big = row("https://b", text="x" * 5_000_000)
    path = write(tmp_path / "d.jsonl", [row("https://a"), big, row("https://c")])
    with pytest.raises(datasets.DatasetError) as error:
        datasets.load(path, SCHEMA, LIMIT)
    size = len(big.encode())
    assert str(error.value) == (
        f"{path}:2: row of {size:,} bytes is larger than prepare.max_row_bytes (65,536, conf/config.yaml)"
    )
    crlf = tmp_path / "crlf.jsonl"  # Windows line ends count for nothing; one byte more is too large
    crlf.write_bytes((row("https://a") + "\r\n" + at_limit + "\r\n").encode())
    assert len(datasets.load(crlf, SCHEMA, 100)) == 2
    with pytest.raises(datasets.DatasetError, match=r"crlf\.jsonl:2: row of 100 bytes is larger .* \(99, "):
        datasets.load(crlf, SCHEMA, 99)


@pytest.mark.parametrize(
    "content,message",
    [
        (b'{"url": "\xff", "text": "t", "category": "News"}\n', "d.jsonl:2: not valid UTF-8 (byte 0xff at column 10)"),
        (b'{"url": "u", "text": "' + b"x" * 70_000 + b'", "category": "News"}\n', "d.jsonl:2: row of 70,"),
    ],
)
def test_the_prepare_stage_reports_bad_bytes_and_large_rows_without_a_traceback(
    tmp_path: Path, monkeypatch, capsys, content: bytes, message: str
) -> None:
    stage_project(tmp_path)
    (tmp_path / "d.jsonl").write_bytes(b"\xef\xbb\xbf" + row("https://a").encode() + b"\n" + content)
    monkeypatch.chdir(tmp_path)
    assert prepare.main(["--use-case", "uc", "--out", str(tmp_path / "prepared.jsonl")]) == 1
    err = capsys.readouterr().err
    assert err.startswith("prepare: ") and message in err and "Traceback" not in err
    assert not (tmp_path / "prepared.jsonl").exists()
