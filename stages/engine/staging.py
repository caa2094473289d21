"""A flow run from a copy of its folder, so that what its code writes beside itself at run time (the reference
template's chat_with_pdf downloads its PDFs into `.pdfs/` and builds `.index/` next to its modules) never lands in
the tracked folder, which is a DVC dependency of the stage that runs it (`dvc status` would then see the dependency
changed after every run).

The copy is under the runtime folder (.llmops/flows/), one per content of the folder (`bake.flow_sha256`), so a rerun
of the same flow finds its scratch files (the download cache, the index) again, and a changed flow starts from a
fresh copy; the copies of older contents are removed. A DAG flow whose nodes or `additional_includes` reach outside
its folder (a `../` source path) runs in place: a copy would break those paths.
"""

from __future__ import annotations

import contextlib
import hashlib
import re
import shutil
import tempfile
from pathlib import Path
from typing import Any

from stages.core.yaml_reader import load_yaml
from stages.engine.bake import SCRATCH_DIRS, flow_sha256
from stages.engine.kinds import FlowError, FlowKind
from stages.engine.registry import detect

COPIES = "flows"  # under the runtime folder
# A copy's path, as run_copy makes it: <runtime>/flows/<name>-<path hash>/<content hash>/<name>
_COPY_PATH = re.compile(rf"[^\s'\"]*/{COPIES}/[^/\s'\"]+-[0-9a-f]{{12}}/[0-9a-f]{{16}}/[^/\s'\"]+")


def original_paths(text: str, flow: Path) -> str:
    """`text` (an error message) naming `flow` wherever it names its copy."""
    return _COPY_PATH.sub(lambda _: str(flow), text)


def run_copy(flow: Path, runtime: Path) -> Path:
    """The folder to run `flow` from: its copy under `runtime`/flows (made when missing), or `flow` itself for a
    .prompty file, a flow that is no prompt flow DAG or flex flow (a MAF workflow runs in its own environment), or a
    DAG that reaches outside its folder. Raises nothing a flow's load would not (an unknown folder runs in place)."""
    try:
        kind, file = detect(flow)
    except FlowError:
        return flow  # its load says what is wrong with it, naming the project's path
    if flow.is_file() or kind not in (FlowKind.DAG, FlowKind.FLEX):
        return flow
    if kind is FlowKind.DAG and _reaches_outside(flow, file):
        return flow
    source = flow.resolve()
    home = runtime / COPIES / f"{source.name}-{hashlib.sha256(str(source).encode()).hexdigest()[:12]}"
    copy = home / flow_sha256(source)[:16] / source.name
    if not copy.is_dir():
        home.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".copy-", dir=home))
        shutil.copytree(source, staging / source.name, ignore=shutil.ignore_patterns(*SCRATCH_DIRS))
        copy.parent.mkdir(exist_ok=True)
        with contextlib.suppress(OSError):  # another process made it meanwhile: the same content
            (staging / source.name).rename(copy)
        shutil.rmtree(staging, ignore_errors=True)
    for older in home.iterdir():  # the copies of the folder's earlier contents, with their scratch files
        if older != copy.parent and not older.name.startswith(".copy-"):
            shutil.rmtree(older, ignore_errors=True)
    return copy


def _reaches_outside(folder: Path, file: Path) -> bool:
    """Whether a DAG names a file outside its folder: a node's (or node variant's) source path, an additional
    include."""
    spec: dict[str, Any] = load_yaml(file.read_text(encoding="utf-8")) or {}
    nodes = list(spec.get("nodes") or [])
    for declared in (spec.get("node_variants") or {}).values():
        nodes += [variant.get("node") or {} for variant in ((declared or {}).get("variants") or {}).values()]
    paths = [str((node.get("source") or {}).get("path") or "") for node in nodes]
    paths += [str(include) for include in spec.get("additional_includes") or []]
    root = folder.resolve()
    return any(path and not (root / path).resolve().is_relative_to(root) for path in paths)
