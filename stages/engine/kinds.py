"""Flow kinds and what a flow folder declares (its inputs and outputs): the types every engine shares. Which
engine runs a folder is `registry.detect`'s answer."""

from __future__ import annotations

import importlib.util
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from enum import Enum
from pathlib import Path
from typing import Any


class FlowError(ValueError):
    """A flow folder that cannot be run (unknown layout, missing prompt file); names the path."""


class FlowKind(Enum):
    DAG = "dag"  # flow.dag.yaml
    FLEX = "flex"  # flow.flex.yaml: a function or class entry
    PROMPTY = "prompty"  # a single .prompty file
    MAF = "maf"  # workflow.py exporting create_workflow(): Microsoft Agent Framework (stages/engine/maf/)


@dataclass(frozen=True)
class FlowInterface:
    """What a flow declares: its inputs ({name: (type, required)}) and outputs ({name: type, None if undeclared})."""

    inputs: Mapping[str, tuple[str | None, bool]]
    outputs: Mapping[str, str | None]


def load_entry(folder: Path, entry: str, flow_file: Path) -> Any:
    """The function or class `module:name` in a flex flow folder (the folder goes on sys.path for its imports)."""
    module_name, _, name = entry.partition(":")
    source = folder / (module_name.replace(".", "/") + ".py")
    if not name or not source.is_file():
        raise FlowError(f"{flow_file}: entry {entry!r} must be <module>:<name>, with <module>.py in {folder}")
    if str(folder) not in sys.path:
        sys.path.insert(0, str(folder))
    unique = f"_llmops_flex_{abs(hash(str(source)))}_{module_name}"  # two flows may both have answer.py
    spec = importlib.util.spec_from_file_location(unique, source)
    assert spec and spec.loader
    module = importlib.util.module_from_spec(spec)
    sys.modules[unique] = module
    spec.loader.exec_module(module)
    if not callable(found := getattr(module, name, None)):
        raise FlowError(f"{flow_file}: entry {entry!r}: {source.name} has no function or class {name!r}")
    return found
