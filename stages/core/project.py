"""Where things live: the project root, the runtime folder and the composed params."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from stages.core import conf_schema
from stages.core.yaml_reader import load_yaml

RUNTIME_DIR_NAME = ".llmops"  # gitignored: prompt flow home, the assembled model, server log and state


def project_root(start: Path | None = None) -> Path:
    """The nearest folder at or above `start` (default: cwd) holding .dvc/ and conf/config.yaml."""
    here = (start or Path.cwd()).resolve()
    for folder in (here, *here.parents):
        if (folder / ".dvc").is_dir() and (folder / "conf" / "config.yaml").is_file():
            return folder
    raise FileNotFoundError(f"no project (a folder with .dvc/ and conf/config.yaml) at or above {here}")


def runtime_dir(root: Path) -> Path:
    path = root / RUNTIME_DIR_NAME
    path.mkdir(parents=True, exist_ok=True)
    return path


def load_params(root: Path) -> dict[str, Any]:
    """The composed params (params.yaml), as `dvc repro` sees them, checked against conf/'s schema (a
    conf_schema.ConfError names each misspelt or missing key with its conf file). `dvc exp run` composes
    params.yaml without our code, so the first stage to read them is where a typo is caught."""
    with (root / "params.yaml").open(encoding="utf-8") as handle:
        params = load_yaml(handle)
    conf_schema.check_params(params)
    return params
