"""A flow folder that runs where this project is not installed: a Docker image from `pf flow build`, an Azure ML
model, an Azure ML bulk run. Each gets the flow folder only, but a flow's Python may import the project's library
(chat_with_pdf's retrieval, the code use cases' sandbox). `vendor` copies those `stages` modules into the folder
(the flow's folder is on sys.path wherever prompt flow runs it) and writes a requirements.txt pinning the
third-party distributions they and the flow import, at the versions this project runs.
"""

from __future__ import annotations

import ast
import functools
import importlib.metadata
import re
import shutil
import sys
from collections.abc import Iterable, Mapping
from pathlib import Path

from stages.engine.requirements import renamed_packages

PACKAGE = "stages"
# Always pinned: the serving image installs requirements.txt, then an unpinned `promptflow` (a no-op once pinned).
# promptflow-tools runs DAG flows' LLM nodes.
_ALWAYS = ("promptflow", "promptflow-tools")


class VendorError(RuntimeError):
    """A flow's imports that cannot be made self-contained; the message names the file."""


def imported_names(path: Path) -> set[str]:
    """Dotted names of every absolute import in a Python file, at any depth (function-level imports count)."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"), filename=str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names |= {node.module, *(f"{node.module}.{alias.name}" for alias in node.names)}
        elif isinstance(node, ast.Import):
            names |= {alias.name for alias in node.names}
    return names


def project_modules(scripts: Iterable[Path], package_dir: Path) -> list[Path]:
    """The files of `package_dir` (the `stages` package) that `scripts` import, transitively, with the
    `__init__.py` of every package on the way; sorted."""
    found: set[Path] = set()
    pending = list(scripts)
    while pending:
        for name in imported_names(pending.pop()):
            if name.split(".")[0] != PACKAGE:
                continue
            parts = name.split(".")[1:]
            for depth in range(len(parts) + 1):
                base = package_dir.joinpath(*parts[:depth])
                for candidate in (base / "__init__.py", base.with_suffix(".py")):
                    if candidate.is_file() and candidate not in found:
                        found.add(candidate)
                        pending.append(candidate)
    return sorted(found)


@functools.cache
def _providers() -> Mapping[str, list[str]]:
    """Top-level import names -> distributions, read once per process (it reads every installed package's files)."""
    return importlib.metadata.packages_distributions()


def requirements(files: Iterable[Path], local: set[str]) -> list[str]:
    """`distribution==version` for each third-party distribution `files` import (standard library, `stages` and
    the `local` top-level names, the flow's own modules, left out), plus promptflow and promptflow-tools; first
    the CPU build of torch with its index when they need torch and this project runs a CPU build."""
    providers = _providers()
    distributions = set(_ALWAYS)
    for file in files:
        for name in imported_names(file):
            top = name.split(".")[0]
            if top in sys.stdlib_module_names or top == PACKAGE or top in local:
                continue
            if top not in providers:
                raise VendorError(f"{file}: imports {top!r}, which no installed distribution provides")
            distributions.add(_distribution(top, providers[top]))
    pinned = sorted(_pinned(distributions))
    return [*_cpu_torch(distributions), *pinned]


def _pinned(distributions: Iterable[str]) -> list[str]:
    return [f"{dist}=={importlib.metadata.version(dist)}" for dist in distributions]


# Where pip finds the CPU builds of torch; PyPI's default torch is the CUDA build, gigabytes larger.
TORCH_CPU_INDEX = "https://download.pytorch.org/whl/cpu"


def _cpu_torch(distributions: set[str]) -> list[str]:
    """When the pinned distributions need torch (also indirectly, e.g. through sentence-transformers) and the
    installed torch is a CPU build (`+cpu`), the lines that make pip install that build: its index and pin."""
    try:
        version = importlib.metadata.version("torch")
    except importlib.metadata.PackageNotFoundError:
        return []
    if not version.endswith("+cpu") or "torch" not in _needed(distributions):
        return []
    return [f"--extra-index-url {TORCH_CPU_INDEX}", f"torch=={version}"]


def _needed(distributions: set[str]) -> set[str]:
    """`distributions` and everything they require, transitively (installed ones; extras left out), lower-cased."""
    seen: set[str] = set()
    pending = [d.lower() for d in distributions]
    while pending:
        name = pending.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            requires = importlib.metadata.requires(name) or []
        except importlib.metadata.PackageNotFoundError:
            continue
        for line in requires:
            requirement, _, marker = line.partition(";")
            if "extra" not in marker:  # an optional dependency is not needed
                required = re.split(r"[^A-Za-z0-9._-]", requirement.strip(), maxsplit=1)[0]
                pending.append(required.lower().replace("_", "-"))
    return seen


def _distribution(top: str, candidates: list[str]) -> str:
    """The distribution of a top-level name several provide (a namespace such as `promptflow`): the one named
    like it, else the first."""
    named = [d for d in candidates if d.lower().replace("_", "-") == top.lower().replace("_", "-")]
    return (named or candidates)[0]


def vendor(flow: Path, package_dir: Path) -> list[Path]:
    """Copy into `flow` the project modules its Python imports (as `flow/stages/...`) and write
    `flow/requirements.txt` (a flow's own requirements.txt keeps its lines; ours are added after them).
    Returns the copied files, relative to `flow`."""
    scripts = sorted(p for p in flow.rglob("*.py") if PACKAGE not in p.relative_to(flow).parts[:1])
    modules = project_modules(scripts, package_dir)
    copied = []
    for module in modules:
        relative = Path(PACKAGE) / module.relative_to(package_dir)
        (flow / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(module, flow / relative)
        copied.append(relative)
    local = {p.stem for p in flow.iterdir() if p.suffix == ".py" or (p.is_dir() and p.name != PACKAGE)}
    pinned = requirements([*scripts, *modules], local)
    path = flow / "requirements.txt"
    own = []
    for line in path.read_text(encoding="utf-8").splitlines() if path.is_file() else []:
        today = renamed_packages(line) if line.strip() and not line.lstrip().startswith("#") else None
        if today is None:
            own.append(line)
        else:  # pip would install what PyPI holds under the old name today, not prompt flow
            own += [f"# {line.strip()}: renamed, stands for {', '.join(today)}", *_pinned(today)]
    named = {line.split("==")[0].split(">")[0].split("<")[0].strip().lower() for line in own if line.strip()}
    extra = [line for line in pinned if line.split("==")[0].lower() not in named]
    path.write_text("\n".join([*own, *extra]) + "\n", encoding="utf-8")
    return copied
