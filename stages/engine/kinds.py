"""Flow kinds: which engine runs a flow folder, and what the folder declares (its inputs and outputs).

`detect` asks each registered engine (stages/engine/registry.py) in turn; prompt flow's kinds (DAG, flex, prompty)
are the fallback, so its error names what a flow folder may hold. Nothing here imports an engine's library.
"""

from __future__ import annotations

import importlib.util
import inspect
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


def detect(flow: Path, prompt: str | None = None) -> tuple[FlowKind, Path]:
    """The kind of a flow folder (or .prompty file) and the file that defines it.

    A folder holding several .prompty files (one per variant) is a prompty flow when `prompt` names one.
    """
    from stages.engine import registry

    return registry.engine_for(flow, prompt)[1:]  # type: ignore[return-value]


def interface(flow: Path, prompt: str | None = None) -> FlowInterface:
    """The inputs and outputs a flow folder declares (read from its files; no engine library is imported)."""
    from stages.engine import registry

    engine, kind, file = registry.engine_for(flow, prompt)
    return engine.interface(kind, file)


def declares_model_config(flow: Path) -> bool:
    """Whether a flex flow's entry takes `model_config` (a class's `init:` or `__init__`, a function's parameter):
    it calls the LLM with the configuration it is given."""
    import yaml

    try:
        kind, flow_file = detect(flow)
    except FlowError:
        return False
    if kind is not FlowKind.FLEX:
        return False
    spec = yaml.safe_load(flow_file.read_text(encoding="utf-8")) or {}
    if "model_config" in (spec.get("init") or {}):
        return True
    entry = load_entry(flow_file.parent.resolve(), spec.get("entry", ""), flow_file)
    target = entry.__init__ if inspect.isclass(entry) else entry
    return "model_config" in inspect.signature(target).parameters


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
