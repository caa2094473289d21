"""`llmops compare` and the gate read other revisions' results through DVC: one whose outputs this clone cannot
fetch gives a CompareError that says what is missing and what to do, not a DVC traceback."""

from __future__ import annotations

import io
from pathlib import Path

import pytest
from dvc_data.index.index import DataIndexDirError

from stages.results import compare


def test_outputs_neither_cached_nor_fetchable_name_the_path_the_revision_and_the_remedy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    class Unreadable:
        """DVC's file system at a revision whose DVC-tracked outputs are neither cached nor fetchable."""

        def from_os_path(self, path: str) -> str:
            return path

        def open(self, path: str, **kwargs: object) -> io.StringIO:
            if path.endswith("metrics.json") or path.endswith("summary.json"):  # git-tracked: always readable
                return io.StringIO('{"variant": "v1"}')
            raise DataIndexDirError("failed to load directory ('data', 'uc', 'eval', 'rows')") from PermissionError(
                "Authentication to Azure Blob Storage requires either account_name or connection_string."
            )

    monkeypatch.setattr(compare, "_tree_at", lambda root, rev: Unreadable())
    with pytest.raises(compare.CompareError) as caught:
        compare.snapshot(tmp_path, "uc", "main", "0123456789abcdef")
    message = str(caught.value)
    assert message.startswith("main: no results of uc (data/uc/eval/rows/v1.jsonl at 0123456789: ")
    assert "neither in the local DVC cache nor fetchable from the default remote" in message
    assert "PermissionError: Authentication to Azure Blob Storage" in message and "`dvc pull`" in message


def test_compare_adjusts_every_revision_x_metric_with_benjamini_hochberg() -> None:
    """6 of 12 rows broken is `worse` alone (McNemar p = 0.031); beside an unchanged revision, BH doubles it."""
    from dataclasses import replace

    from test_gate import COLUMNS, SPECS, snapshot

    from stages.results.formatting import headline_text

    main = snapshot([True] * 12, label="main")
    broken = replace(snapshot([True] * 6 + [False] * 6), label="exp-1")
    parts, _ = compare.compare([main, broken], SPECS, COLUMNS)
    assert parts[1].headline["accuracy"]["verdict"] == "worse"
    assert parts[1].headline["accuracy"]["adjustment"] == "Benjamini-Hochberg over 1"
    parts, _ = compare.compare([main, broken, replace(main, label="exp-2")], SPECS, COLUMNS)
    accuracy = parts[1].headline["accuracy"]
    assert (accuracy["p_value"], accuracy["p_adjusted"], accuracy["verdict"]) == (
        0.0312, 0.0625, "no significant difference")  # fmt: skip
    text = headline_text(parts[1].headline, parts[0].name)
    assert (
        "-50.0% vs main (v1) (no significant difference) p=0.0312, adjusted p=0.062, Benjamini-Hochberg over 2" in text
    )
