"""dvc.yaml declares, for every stage, the project code the stage runs: each module it imports (transitively), as
the file or as its package's folder, and nothing it does not use. A package folder stands for every module in it."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest
import yaml
from conftest import REPO


def module_path(module: str) -> Path:
    """The file of a project module: `stages/x/y.py`, or a package's `stages/x/y/__init__.py`."""
    base = REPO / module.replace(".", "/")
    return base / "__init__.py" if base.is_dir() else base.with_suffix(".py")


def docstring_only(path: Path) -> bool:
    """A package's `__init__.py` that only documents the package: nothing in it runs."""
    body = ast.parse(path.read_text()).body
    return path.name == "__init__.py" and all(
        isinstance(n, ast.Expr) and isinstance(n.value, ast.Constant) for n in body
    )


def facade_modules(path: Path, package: str) -> list[str]:
    """The modules a package's `__init__` loads on first use of a name (a PEP 562 facade: `_PUBLIC`'s keys)."""
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.Assign) and any(getattr(t, "id", "") == "_PUBLIC" for t in node.targets):
            return [f"{package}.{key.value}" for key in node.value.keys]  # type: ignore[attr-defined]
    return []


def imported_modules(module: str, seen: set[str] | None = None, path: Path | None = None) -> set[str]:
    """The project modules `module` (or the script at `path`) imports, transitively, as file paths."""
    seen = set() if seen is None else seen
    path = path or module_path(module)
    if not path.is_file() or str(path) in seen:
        return seen
    if path.is_relative_to(REPO / "stages") and not docstring_only(path):
        seen.add(str(path))
        if data := PACKAGE_DATA.get(str(path.relative_to(REPO))):  # the files it reads at run time
            seen |= {str(file) for file in (REPO / data).iterdir() if file.is_file()}
    names = facade_modules(path, module) if path.name == "__init__.py" else []
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("stages"):
            names += [node.module, *(f"{node.module}.{alias.name}" for alias in node.names)]
        elif isinstance(node, ast.Import):
            names += [alias.name for alias in node.names if alias.name.startswith("stages")]
    for name in names:
        parts = name.split(".")
        for depth in range(2, len(parts)):  # importing a module runs its packages' __init__ first
            imported_modules(".".join(parts[:depth]), seen)
        imported_modules(name, seen)
    return seen


# Modules that read package data: a stage that imports one depends on the data too (the pages' templates).
PACKAGE_DATA = {"stages/results/pages.py": "stages/results/templates"}
STAGES = yaml.safe_load((REPO / "dvc.yaml").read_text())["stages"]
USE_CASES = yaml.safe_load((REPO / "params.yaml").read_text())["use_cases"]
# Stages that execute flows also run the flows' python code, which may import the metrics library.
FLOW_KEY = {"run": "flow", "evaluate": "eval_flow"}


def dag_sources(flow: Path) -> list[Path]:
    """The files a DAG flow's nodes, and its nodes' variants, use (`source.path`): a node may use a shared file
    outside the flow folder."""
    spec = flow / "flow.dag.yaml"
    dag = (yaml.safe_load(spec.read_text()) or {}) if spec.is_file() else {}
    variants = [v["node"] for node in (dag.get("node_variants") or {}).values() for v in node["variants"].values()]
    nodes = [node for node in [*(dag.get("nodes") or []), *variants] if "source" in node]
    return [(flow / node["source"]["path"]).resolve() for node in nodes if node["source"].get("type") == "code"]


def flow_code(flow_key: str) -> set[str]:
    """Project files the `flow_key` flows use: what their python imports, and the package files their nodes use
    (the shared verdict node, rubric prompts)."""
    seen: set[str] = set()
    for use_case in USE_CASES.values():
        flow = REPO / use_case[flow_key]
        scripts = set(flow.rglob("*.py"))
        for source in dag_sources(flow):
            if source.suffix == ".py":
                scripts.add(source)
            elif source.is_relative_to(REPO / "stages"):
                seen.add(str(source))
        for script in sorted(scripts):
            imported_modules("", seen, path=script)
    return seen


def covered(path: str, deps: set[str]) -> bool:
    return any(path == dep or path.startswith(dep + "/") for dep in deps)


def stage_module(name: str) -> str:
    """The module stage `name` runs (`python -m <module>` in its command)."""
    stage = STAGES[name].get("do", STAGES[name])
    return re.search(r"python -m (stages[\w.]+)", stage["cmd"]).group(1)


def code_stage(name: str) -> str | None:
    """The code stage whose manifest stands for `name`'s modules (a use case's stage of a kind that has one)."""
    return f"code_{name}" if f"code_{name}" in STAGES else None


def needed_code(name: str) -> set[str]:
    """The project files stage `name` must declare: what its module imports (and its flows' code). A code stage
    declares its kind's, and its own module's; a stage whose kind has a code stage declares none (its manifest)."""
    if code_stage(name):
        return set()
    kind = name.removeprefix("code_")
    needed = imported_modules(stage_module(kind)) | (flow_code(FLOW_KEY[kind]) if kind in FLOW_KEY else set())
    if name.startswith("code_"):
        needed |= imported_modules("stages.code_manifest")
    return {str(Path(path).relative_to(REPO)) for path in needed}


@pytest.mark.parametrize("name", sorted(STAGES))
def test_stage_declares_the_code_it_runs(name: str) -> None:
    stage = STAGES[name].get("do", STAGES[name])  # a foreach stage, or a single stage
    needed = needed_code(name)
    declared = {dep for dep in stage["deps"] if dep.startswith("stages/")}
    missing = {path for path in needed if not covered(path, declared)}
    extra = {dep for dep in declared if not any(covered(path, {dep}) for path in needed)}
    assert not missing and not extra, f"{name}: missing {sorted(missing)}, extra {sorted(extra)}"
    if code := code_stage(name):  # the manifest it depends on instead
        assert STAGES[code]["outs"] == [f"data/_code/{name}.json"] and f"data/_code/{name}.json" in stage["deps"]
        assert STAGES[code]["cmd"].endswith(f"--stage {code} --out data/_code/{name}.json")


def test_every_use_case_stage_kind_has_a_code_manifest() -> None:
    """The stages `foreach` use case (those dvc.lock repeats per use case) list their code through a manifest."""
    assert {name for name, stage in STAGES.items() if "foreach" in stage} == {"prepare", "run", "evaluate", "report"}
    assert all(code_stage(name) for name in ("prepare", "run", "evaluate", "report"))


def test_a_code_manifest_hashes_the_files_its_stage_lists(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    import hashlib
    import json

    from stages import code_manifest

    (tmp_path / "pkg" / "__pycache__").mkdir(parents=True)
    (tmp_path / "pkg" / "b.py").write_text("b = 1\n")
    (tmp_path / "pkg" / "__pycache__" / "b.cpython-311.pyc").write_bytes(b"bytecode")  # left out, as DVC does
    (tmp_path / "a.py").write_text("a = 1\n")
    stages = {
        "code_x": {"cmd": "python -m stages.code_manifest", "deps": ["pkg", "a.py"]},
        "code_y": {"deps": ["no.py"]},
    }
    (tmp_path / "dvc.yaml").write_text(yaml.safe_dump({"stages": stages}))
    md5 = {name: hashlib.md5((tmp_path / name).read_bytes()).hexdigest() for name in ("a.py", "pkg/b.py")}
    found = code_manifest.manifest(tmp_path, "code_x")
    assert found == md5 and list(found) == ["a.py", "pkg/b.py"]  # sorted by path
    with pytest.raises(code_manifest.ManifestError, match=r"dvc.yaml: no.py \(a dependency of the code stage\)"):
        code_manifest.manifest(tmp_path, "code_y")
    with pytest.raises(code_manifest.ManifestError, match=r"dvc.yaml: no stage 'code_z'"):
        code_manifest.manifest(tmp_path, "code_z")

    (tmp_path / ".dvc").mkdir()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("{}\n")
    monkeypatch.chdir(tmp_path)
    assert code_manifest.main(["--stage", "code_x", "--out", "out/x.json"]) == 0
    assert code_manifest.main(["--stage", "code_y", "--out", "out/y.json"]) == 1
    assert json.loads((tmp_path / "out" / "x.json").read_text()) == {"stage": "code_x", "files": md5}
    assert not (tmp_path / "out" / "y.json").exists()
    assert "code manifest: dvc.yaml: no.py (a dependency of the code stage) does not exist" in capsys.readouterr().err


def cached_outputs() -> set[str]:
    """Every output DVC caches (and so gitignores), the `foreach` stages' for each use case of params.yaml."""
    paths = set()
    for stage in STAGES.values():
        body = stage.get("do", stage)
        for out in body.get("outs") or []:
            path, options = next(iter(out.items())) if isinstance(out, dict) else (out, {})
            if options.get("cache", True):
                keys = USE_CASES if "foreach" in stage else [None]
                paths |= {path.replace("${key}", key) if key else path for key in keys}
    return paths


def test_every_cached_output_is_in_a_committed_gitignore() -> None:
    """DVC adds a cached output to its folder's .gitignore when it first writes it: with the entry committed, a fresh
    clone's first `dvc repro` leaves no new .gitignore for the user to commit (data/_code/ once did)."""
    outputs = cached_outputs()
    assert "data/_code/run.json" in outputs and "data/chat/run/outputs" in outputs
    missing = []
    for out in sorted(outputs):
        ignore = REPO / Path(out).parent / ".gitignore"
        lines = ignore.read_text().splitlines() if ignore.is_file() else []
        if f"/{Path(out).name}" not in lines:
            missing.append(out)
    assert missing == []


def stage_code(name: str) -> list[str]:
    """The code deps `name` must declare: the engine as its package, every other module by file."""
    deps = set()
    for path in needed_code(name):
        package = next((p for p in PACKAGE_DEPS if path.startswith(p + "/")), None)
        deps.add(package or path)
    own = stage_module(name.removeprefix("code_")).replace(".", "/") + ".py"
    return sorted(deps, key=lambda dep: (dep != own, dep))


PACKAGE_DEPS = ("stages/engine", "stages/metrics/rubrics", "stages/results/templates")  # folders: one unit each


def write_deps(dvc_yaml: Path) -> None:
    """Rewrite each stage's `stages/...` deps in dvc.yaml to `stage_code` (other deps and comments kept)."""
    lines, out, stage, inserted = dvc_yaml.read_text().split("\n"), [], None, False
    for line in lines:
        if (match := re.match(r"^  (\w+):\s*$", line)) and match.group(1) in STAGES:
            stage, inserted = match.group(1), False
        if stage and (dep := re.match(r"^(\s+)- stages/\S+", line)):
            if not inserted:
                out += [f"{dep.group(1)}- {path}" for path in stage_code(stage)]
                inserted = True
            continue
        out.append(line)
    dvc_yaml.write_text("\n".join(out))


if __name__ == "__main__":  # python tests/test_stage_graph.py: write the deps this test expects into dvc.yaml
    write_deps(REPO / "dvc.yaml")
