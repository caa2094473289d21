"""The project's DVC remote (Azure Blob by default): its URL and where its credentials come from."""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

CONNECTION_STRING_ENV = "AZURE_STORAGE_CONNECTION_STRING"
# Options of `dvc remote modify --local <remote> ...` that carry an Azure credential.
CREDENTIAL_OPTIONS = ("connection_string", "account_key", "sas_token", "client_secret")


class RemoteError(Exception):
    pass


@dataclass(frozen=True)
class Remote:
    name: str
    url: str
    credentials: str  # where they come from, never the credentials themselves


def check(root: Path, name: str | None = None, environ: Mapping[str, str] = os.environ) -> Remote:
    """The remote `name` (default: DVC's default remote); raises if it is Azure Blob and has no credentials."""
    from dvc.config import Config

    config = Config(dvc_dir=str(root / ".dvc"), validate=False)
    name = name or config["core"].get("remote")
    if not name or name not in config["remote"]:
        raise RemoteError(f"no DVC remote named {name!r} (see `dvc remote list`)")
    url = config["remote"][name]["url"]
    if not url.startswith("azure://"):
        return Remote(name, url, "none needed")
    if environ.get(CONNECTION_STRING_ENV):
        return Remote(name, url, f"${CONNECTION_STRING_ENV}")
    local = config.load_one("local")["remote"].get(name, {})
    if any(local.get(option) for option in CREDENTIAL_OPTIONS):
        return Remote(name, url, ".dvc/config.local")
    raise RemoteError(
        f"the DVC remote {name!r} ({url}) has no credentials: export {CONNECTION_STRING_ENV}, or run "
        f"`dvc remote modify --local {name} connection_string '<connection string>'` "
        "(README: Push data and results to Azure Blob)"
    )
