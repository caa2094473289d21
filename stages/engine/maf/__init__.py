"""Microsoft Agent Framework (MAF) workflows as a flow kind: a folder with `workflow.py` exporting
`create_workflow(**params)`. They run in worker processes of their own environment (environment.py), speaking
the JSON-lines protocol of worker.py; session.py is the stage's side."""

from __future__ import annotations

from pathlib import Path
from typing import Any

WORKFLOW_FILE = "workflow.py"


def is_maf_flow(flow: Path) -> bool:
    """A MAF flow folder: `workflow.py` and no prompt flow definition beside it."""
    return (
        (flow / WORKFLOW_FILE).is_file()
        and not (flow / "flow.dag.yaml").is_file()
        and not (flow / "flow.flex.yaml").is_file()
    )


def maf_use_cases(params: dict[str, Any], root: Path) -> list[str]:
    """The use cases whose flow or evaluation flow is a MAF workflow."""
    return sorted(
        name
        for name, use_case in (params.get("use_cases") or {}).items()
        if any(is_maf_flow(root / str(use_case.get(key) or "")) for key in ("flow", "eval_flow"))
    )


def uses_maf(root: Path) -> bool:
    """Whether the catalogue (params.yaml's use cases) has a MAF flow."""
    from stages.core.yaml_reader import load_yaml

    params = load_yaml((root / "params.yaml").read_text(encoding="utf-8")) or {}
    return bool(maf_use_cases(params, root))
