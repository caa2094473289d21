"""The Azure Blob DVC remote: credentials only from the environment or .dvc/config.local."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
from conftest import REPO

from stages.core import remote


def test_remote_check_wants_credentials_from_the_environment_or_config_local(tmp_path: Path) -> None:
    (tmp_path / ".dvc").mkdir()
    shutil.copy2(REPO / ".dvc" / "config", tmp_path / ".dvc" / "config")
    with pytest.raises(remote.RemoteError, match="AZURE_STORAGE_CONNECTION_STRING"):
        remote.check(tmp_path, environ={})  # the committed config holds no credentials
    found = remote.check(tmp_path, environ={remote.CONNECTION_STRING_ENV: "AccountKey=s3cret"})
    assert found.name == "azure" and found.url.startswith("azure://") and "s3cret" not in str(found)
    (tmp_path / ".dvc" / "config.local").write_text("['remote \"azure\"']\n    connection_string = AccountKey=s3cret\n")
    assert remote.check(tmp_path, environ={}).credentials == ".dvc/config.local"
    assert remote.check(tmp_path, "examples", environ={}).credentials == "none needed"
