"""Composing conf/ into params (what `dvc exp run` does), for the workspace or another env."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

from stages.core import conf_schema


def compose_params(root: Path, overrides: list[str], output: Path) -> None:
    """Compose conf/ into params.yaml exactly as `dvc exp run` does (DVC's own Hydra integration), checked
    against conf/'s schema: on a conf_schema.ConfError `output` is left as it was."""
    import tempfile

    from dvc.utils.hydra import compose_and_dump

    from stages.core.yaml_reader import load_yaml

    output.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".params.", dir=output.parent) as scratch:
        composed = Path(scratch) / output.name
        compose_and_dump(composed, str(root / "conf"), None, "config", str(root / "conf" / "hydra_plugins"), overrides)
        conf_schema.check_params(load_yaml(composed.read_text(encoding="utf-8")))
        os.replace(composed, output)


def env_params(root: Path, env: str, error: type[Exception]) -> dict[str, Any]:
    """The params conf/ composes for `env` (its `env` block: the env file's subset and gate, read once, through
    Hydra); `error` names an env that does not exist."""
    import tempfile

    from stages.core.yaml_reader import load_yaml

    if not (root / "conf" / "env" / f"{env}.yaml").is_file():
        raise error(f"conf/env/{env}.yaml: no such env (conf/env/<env>.yaml)")
    with tempfile.TemporaryDirectory(prefix=".env-params.") as scratch:
        compose_params(root, [f"env={env}"], Path(scratch) / "params.yaml")
        return load_yaml((Path(scratch) / "params.yaml").read_text(encoding="utf-8"))
