"""Stage `code_<kind>`: the manifest of the project code a stage kind runs (one file, its modules' hashes).

Each use case's prepare, run, evaluate and report stage depends on its kind's manifest instead of listing every
module it imports: dvc.lock then holds each module once per kind, not once per use case and kind (half its size
with nine use cases, and DVC rewrites the whole lock after every stage it runs). A module edit reruns its kinds'
`code_<kind>` stages, whose new manifests rerun the use cases' stages, as before; an edit that changes no module
of a kind (a comment in a file only another kind imports) changes no manifest, and DVC stops there.

The modules are the stage's own `deps` in dvc.yaml (`make deps` writes them from the import graph): one list.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
from pathlib import Path

from stages.core.io import write_json
from stages.core.project import project_root
from stages.core.yaml_reader import load_yaml

IGNORED_DIRS = {"__pycache__"}  # as .dvcignore: bytecode Python writes beside a module it imports


class ManifestError(Exception):
    """dvc.yaml has no such stage, or a dependency it lists is missing."""


def file_hashes(root: Path, dep: str) -> dict[str, str]:
    """{path: md5} of the dependency `dep` (a file, or every file under a folder, bytecode left out)."""
    path = root / dep
    if path.is_file():
        files = [path]
    elif path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file() and not IGNORED_DIRS & set(p.relative_to(root).parts))
    else:
        raise ManifestError(f"dvc.yaml: {dep} (a dependency of the code stage) does not exist")
    return {p.relative_to(root).as_posix(): hashlib.md5(p.read_bytes()).hexdigest() for p in files}


def manifest(root: Path, stage: str) -> dict[str, str]:
    """The hashes of every file `stage` of dvc.yaml depends on, sorted by path."""
    declared = (load_yaml((root / "dvc.yaml").read_text(encoding="utf-8")) or {}).get("stages") or {}
    if stage not in declared or not isinstance(declared[stage], dict):
        raise ManifestError(f"dvc.yaml: no stage {stage!r}")
    hashes: dict[str, str] = {}
    for dep in declared[stage].get("deps") or []:
        hashes.update(file_hashes(root, str(dep)))
    return dict(sorted(hashes.items()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n", 1)[0])
    parser.add_argument("--stage", required=True, help="the code stage of dvc.yaml, e.g. code_run")
    parser.add_argument("--out", type=Path, required=True, help="the manifest (JSON: {path: md5})")
    args = parser.parse_args(argv)
    try:
        hashes = manifest(project_root(), args.stage)
    except ManifestError as exc:
        print(f"code manifest: {exc}", file=sys.stderr)
        return 1
    write_json(args.out, {"stage": args.stage, "files": hashes})
    print(f"{args.stage}: {len(hashes)} files")
    return 0


if __name__ == "__main__":
    sys.exit(main())
