"""The virtual environment MAF workflows run in, apart from the project's (agent-framework and promptflow cannot
share one: FACTS.md). Built with uv from the pinned `requirements.txt` beside this file into
`.llmops/maf/venv`, reused while the pins are the same, rebuilt when they change (the venv keeps the sha256 of the
pins it was built from). Several stages may ask at once (`dvc queue start -j 2`): a file lock makes one build it.

`python -m stages.engine.maf.environment [--if-needed]` builds it (`make setup`/`make run` call it with
`--if-needed`: only when the catalogue has a MAF use case).
"""

from __future__ import annotations

import argparse
import contextlib
import fcntl
import hashlib
import os
import shutil
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

REQUIREMENTS = Path(__file__).with_name("requirements.txt")
STAMP = ".llmops-pins-sha256"
FLOW_STAMP = ".llmops-flow-requirements-sha256"  # the flow requirements files installed since the build, one a line


class EnvironmentError_(RuntimeError):
    """The MAF environment could not be built; the message says why and what to run."""


def venv_dir(root: Path) -> Path:
    return root / ".llmops" / "maf" / "venv"


def python_of(venv: Path) -> Path:
    return venv / "bin" / "python"


def pins_digest(requirements: Path = REQUIREMENTS) -> str:
    return hashlib.sha256(requirements.read_bytes()).hexdigest()


def is_current(venv: Path, requirements: Path = REQUIREMENTS) -> bool:
    """Whether `venv` was built from these pins (and still has its interpreter)."""
    stamp = venv / STAMP
    return python_of(venv).is_file() and stamp.is_file() and stamp.read_text().strip() == pins_digest(requirements)


@contextlib.contextmanager
def _locked(path: Path) -> Iterator[None]:
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


def _uv() -> str:
    """uv's binary: the one the project installs (the `uv` package), else one on PATH."""
    try:
        from uv import find_uv_bin

        return find_uv_bin()
    except (ImportError, FileNotFoundError):
        found = shutil.which("uv")
        if found:
            return found
    raise EnvironmentError_("uv is not installed: run `make setup` (it installs the project's pinned uv)")


def ensure(root: Path, requirements: Path = REQUIREMENTS, say: bool = True) -> Path:
    """The interpreter of an up-to-date MAF environment under `root`, built first when missing or stale."""
    venv = venv_dir(root)
    if is_current(venv, requirements):
        return python_of(venv)
    with _locked(venv.parent / "build.lock"):
        if is_current(venv, requirements):  # another stage built it while this one waited
            return python_of(venv)
        started = time.perf_counter()
        if say:
            print(f"maf: building the MAF environment {venv} from {requirements.name} (uv)", file=sys.stderr)
        shutil.rmtree(venv, ignore_errors=True)
        uv = _uv()
        environment = {**os.environ, "VIRTUAL_ENV": str(venv)}
        environment.pop("PYTHONPATH", None)
        for command in (
            [uv, "venv", "--quiet", "--python", sys.executable, str(venv)],
            [uv, "pip", "install", "--quiet", "--python", str(python_of(venv)), "-r", str(requirements)],
        ):
            done = subprocess.run(command, env=environment, capture_output=True, text=True)
            if done.returncode != 0:
                shutil.rmtree(venv, ignore_errors=True)
                raise EnvironmentError_(
                    f"building the MAF environment failed ({' '.join(command[:3])}): {done.stderr.strip()[-2000:]}"
                )
        (venv / STAMP).write_text(pins_digest(requirements) + "\n")
        if say:
            print(f"maf: MAF environment ready in {time.perf_counter() - started:.1f} s", file=sys.stderr)
    return python_of(venv)


def install_flow_requirements(root: Path, flow: Path, requirements: Path = REQUIREMENTS) -> None:
    """A MAF flow folder's own requirements.txt, installed into the MAF environment with the pins as constraints
    (a pinned package never moves; a requirement that conflicts with a pin is refused), once per file content
    (rebuilding the environment for new pins installs them again). Raises EnvironmentError_ naming the file and
    the exact command when uv cannot install it (offline, a conflict)."""
    file = flow / "requirements.txt"
    if not file.is_file():
        return
    venv = venv_dir(root)
    digest = hashlib.sha256(file.read_bytes()).hexdigest()
    record = venv / FLOW_STAMP

    def installed() -> bool:
        return record.is_file() and digest in record.read_text().split()

    if installed():
        return
    with _locked(venv.parent / "build.lock"):
        if installed():
            return
        command = [_uv(), "pip", "install", "--quiet", "--python", str(python_of(venv)), "-r", str(file),
                   "-c", str(requirements)]  # fmt: skip
        environment = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
        done = subprocess.run(command, env={**environment, "VIRTUAL_ENV": str(venv)}, capture_output=True, text=True)
        if done.returncode != 0:
            shown = " ".join(["uv", *command[1:]])
            raise EnvironmentError_(
                f"{file}: its requirements could not be installed into the MAF environment "
                f"({done.stderr.strip()[-600:]}); install them yourself, then run again:\n  {shown}\n(or add them, "
                f"pinned, to {requirements.relative_to(requirements.parents[3])} for every MAF use case)"
            )
        with record.open("a", encoding="utf-8") as handle:
            handle.write(digest + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--if-needed", action="store_true", help="only when the catalogue has a MAF use case")
    args = parser.parse_args(argv)
    from stages.core.project import project_root

    root = project_root()
    if args.if_needed:
        from stages.engine.maf import uses_maf

        if not uses_maf(root):
            return 0
    try:
        ensure(root)
    except EnvironmentError_ as exc:
        print(f"maf: {exc}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
