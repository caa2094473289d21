"""A flow's requirements checked against this environment before it runs (nothing is installed at run time)."""

from __future__ import annotations

import re
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.core.yaml_reader import load_yaml
from stages.engine.kinds import FlowError


class RequirementsError(FlowError):
    """A flow's requirements.txt names packages this environment does not have."""


def requirements_file(flow: Path) -> Path | None:
    """The flow's requirements: `environment.python_requirements_txt` of flow.dag.yaml / flow.flex.yaml, else a
    requirements.txt in the flow folder (None when it has neither)."""
    folder = flow if flow.is_dir() else flow.parent
    for name in ("flow.dag.yaml", "flow.flex.yaml"):
        if (folder / name).is_file():
            spec = load_yaml((folder / name).read_text(encoding="utf-8")) or {}
            declared = ((spec.get("environment") or {}) if isinstance(spec, Mapping) else {}).get(
                "python_requirements_txt"
            )
            if declared:
                return folder / str(declared)
    return folder / "requirements.txt" if (folder / "requirements.txt").is_file() else None


# Names a requirements.txt may hold that PyPI no longer installs as meant: name -> (what it is today, extra -> the
# packages that extra meant, why). Such a line is checked as its packages today and never passed to pip.
RENAMED: dict[str, tuple[tuple[str, ...], dict[str, tuple[str, ...]], str]] = {
    "promptflow-sdk": (
        ("promptflow",),
        {"builtins": ("promptflow-tools",)},
        "prompt flow's package name before 1.0; its built-in tools are promptflow-tools today. The PyPI project "
        "promptflow-sdk now holds an unrelated empty package (0.0.1): do not install it",
    ),
}


def renamed_packages(line: str) -> list[str] | None:
    """The packages a requirements line naming a renamed package (RENAMED) stands for today; None for any other
    line."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    try:
        requirement = Requirement(line.split(" #", 1)[0].strip())
    except InvalidRequirement:
        return None
    renamed = RENAMED.get(canonicalize_name(requirement.name))
    if renamed is None:
        return None
    packages, by_extra, _ = renamed
    return [*packages, *(p for extra in sorted(requirement.extras) for p in by_extra.get(extra, ()))]


@dataclass
class RequirementsCheck:
    """A requirements file checked against this environment."""

    path: Path
    unmet: list[str] = field(default_factory=list)  # each unmet line with the reason
    install: list[str] = field(default_factory=list)  # what pip must install for them (renamed lines mapped)
    notes: list[str] = field(default_factory=list)  # "line N: ...": renamed lines and what stands for them
    renamed: bool = False  # the file names a renamed package: `pip install -r` would install the wrong one

    def pip_command(self, shown: str | None = None) -> str:
        """This interpreter's pip, so packages land in the environment that runs: `-r <file>` (`shown`: the file as
        the user sees it), or the packages themselves when the file names a renamed package."""
        python = f"{_shown(Path(sys.executable))} -m pip install"
        if not self.renamed:
            return f"{python} -r {shown or _shown(self.path)}"
        quoted = (f"'{spec}'" if re.search(r"[<>=!~;\[ ]", spec) else spec for spec in self.install)
        return f"{python} {' '.join(quoted)}"


def check_requirements_file(path: Path) -> RequirementsCheck:
    """Which lines of a requirements file this environment does not satisfy (a missing package, a version outside
    the range, an extra whose packages are missing), each with the reason; a renamed package (RENAMED) is checked
    as the packages it is today. Options (-r, -e, --index-url) and URLs are not checked."""
    from packaging.requirements import InvalidRequirement, Requirement
    from packaging.utils import canonicalize_name

    check = RequirementsCheck(path)
    for number, raw in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
        line = raw.split(" #", 1)[0].strip()
        if not line or line.startswith(("#", "-")) or "://" in line:
            continue
        try:
            requirement = Requirement(line)
        except InvalidRequirement as exc:
            raise RequirementsError(f"{path}, line {number}: not a requirement ({exc})") from None
        if requirement.marker is not None and not requirement.marker.evaluate():
            continue
        renamed = RENAMED.get(canonicalize_name(requirement.name))
        if renamed is None:
            if reason := _unmet(requirement):
                check.unmet.append(f"{line} ({reason})")
                check.install.append(line)
            continue
        check.renamed = True
        _, by_extra, why = renamed
        unknown = sorted(set(requirement.extras) - set(by_extra))
        today = renamed_packages(line) or []
        reasons = [reason for name in today if (reason := _unmet(Requirement(name)))]
        ignored = f"; its version {requirement.specifier} is not checked" if requirement.specifier else ""
        extras = f"; extras {', '.join(unknown)} mean nothing today" if unknown else ""
        if reasons:
            check.unmet.append(f"{line} (stands for {', '.join(today)}: {'; '.join(reasons)})")
            check.install += [name for name in today if _unmet(Requirement(name))]
        else:
            versions = ", ".join(f"{name} {_installed(name)}" for name in today)
            check.notes.append(f"line {number}: {line}: {why}; satisfied by {versions}{ignored}{extras}")
    return check


def unmet_requirements(path: Path) -> list[str]:
    """The lines of a requirements file this environment does not satisfy, each with the reason."""
    return check_requirements_file(path).unmet


def _installed(name: str) -> str:
    import importlib.metadata

    return importlib.metadata.version(name)


def _unmet(requirement: Any, seen: frozenset[str] = frozenset()) -> str | None:
    """Why `requirement` is not satisfied here, or None."""
    import importlib.metadata

    from packaging.requirements import Requirement

    try:
        installed = importlib.metadata.version(requirement.name)
    except importlib.metadata.PackageNotFoundError:
        return f"{requirement.name} is not installed"
    if requirement.specifier and not requirement.specifier.contains(installed, prereleases=True):
        return f"{requirement.name} {installed} is installed"
    for extra in sorted(requirement.extras):
        for text in importlib.metadata.requires(requirement.name) or []:
            needed = Requirement(text)
            if needed.marker is None or not needed.marker.evaluate({"extra": extra}):
                continue
            if needed.marker.evaluate({"extra": ""}) or needed.name in seen:
                continue  # not specific to the extra
            if reason := _unmet(needed, seen | {requirement.name}):
                return f"{requirement.name}[{extra}] needs {needed}: {reason}"
    return None


_SAID: set[str] = set()  # the requirements notes this process printed (a stage opens a session per variant)
_SAY_NOTES = True  # worker processes stay quiet: their parent said it


def quiet() -> None:
    """Print no notes in this process (a worker process of a session: its parent printed them)."""
    global _SAY_NOTES
    _SAY_NOTES = False


def check_requirements(flow: Path) -> list[str]:
    """Refuse, before a run starts, a flow whose requirements file is not satisfied: the error names the file, the
    missing packages and the command that installs them (nothing is installed at run time). Returns the notes on
    renamed packages (printed to stderr once per process)."""
    path = requirements_file(flow)
    if path is None:
        return []
    if not path.is_file():
        raise RequirementsError(f"{flow}: python_requirements_txt names {path.name}, which does not exist")
    check = check_requirements_file(path)
    if check.unmet:
        renamed = " (not `-r` the file: it names a renamed package)" if check.renamed else ""
        raise RequirementsError(
            f"{_shown(path)}: requirements not installed: {'; '.join(check.unmet)}. Install them into the project's "
            f"environment{renamed}, then run again:\n  {check.pip_command()}"
        )
    notes = [f"{_shown(path)}, {note}" for note in check.notes]
    for note in notes:
        if _SAY_NOTES and note not in _SAID:
            _SAID.add(note)
            print(f"llmops: {note}", file=sys.stderr)
    return notes


def _shown(target: Path) -> str:
    """`target` relative to the working directory (the project root in a stage) when inside it."""
    try:
        return str(target.absolute().relative_to(Path.cwd().absolute()))
    except ValueError:
        return str(target)
