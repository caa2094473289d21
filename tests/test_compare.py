"""`llmops compare` and the gate read other revisions' results through DVC: one whose outputs this clone cannot
fetch gives a CompareError that says what is missing and what to do, not a DVC traceback."""

from __future__ import annotations

from pathlib import Path

import dvc.api
import pytest
from dvc_data.index.index import DataIndexDirError

from stages.core import compare


def test_outputs_neither_cached_nor_fetchable_name_the_path_the_revision_and_the_remedy(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def unreadable(path: str, **kwargs: object) -> str:
        if path.endswith("metrics.json") or path.endswith("summary.json"):  # git-tracked: always readable
            return '{"variant": "v1"}'
        raise DataIndexDirError("failed to load directory ('data', 'uc', 'eval', 'rows')") from PermissionError(
            "Authentication to Azure Blob Storage requires either account_name or connection_string."
        )

    monkeypatch.setattr(dvc.api, "read", unreadable)
    with pytest.raises(compare.CompareError) as caught:
        compare.snapshot(tmp_path, "uc", "main", "0123456789abcdef")
    message = str(caught.value)
    assert message.startswith("main: no results of uc (data/uc/eval/rows/v1.jsonl at 0123456789: ")
    assert "neither in the local DVC cache nor fetchable from the default remote" in message
    assert "PermissionError: Authentication to Azure Blob Storage" in message and "`dvc pull`" in message
