"""`llmops migrate <use_case>`: a prompt flow flow (DAG, or a folder of .prompty files) as a MAF workflow folder,
deterministically, with no LLM.

The flow folder is copied beside the original (`<flow>_maf`): prompts and tool code verbatim, every other file too,
plus `workflow.py` (written here) and `MIGRATION.md` (what was converted and what was not). In workflow.py each DAG
node is an Executor class: `llm` nodes render their template and call the connection's chat completions API with
their params, `prompt` nodes render theirs, `python` nodes call the copied tool function; edges come from the
`${...}` references (a node with several upstream nodes is a fan-in); `activate` conditions bypass nodes as prompt
flow does; `aggregation: true` nodes become `aggregate(inputs, outputs)`, the evaluation pattern. The variant's LLM
node (`llm_node`, or the only LLM node) takes `create_workflow(prompt=..., **params)`. A prompty flow is one LLM
node that reads the variant's .prompty file. A node or setting that cannot be converted is listed (node, reason) in
the result and MIGRATION.md, and the node becomes an Executor that fails its rows with that reason: nothing is
dropped silently.
"""

from __future__ import annotations

import ast
import json
import re
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

RUNTIME = Path(__file__).resolve().parent / "maf" / "llmops_maf.py"  # on the MAF worker's path, never copied
LLM_PARAMS = ("temperature", "max_tokens", "top_p", "stop", "presence_penalty", "frequency_penalty", "seed",
              "logit_bias", "user", "response_format")  # fmt: skip
CONNECTION_PARAMS = ("model", "deployment_name")  # the run's connection decides, as in a prompt flow run
UNSUPPORTED_PARAMS = {"echo": False, "suffix": None, "best_of": 1, "logprobs": None, "n": 1, "stream": False}
_REFERENCE = re.compile(r"^\$\{([A-Za-z_][\w]*)(?:\.([\w.-]+))?\}$")
_SKIPPED = {"flow.dag.yaml", ".promptflow", "__pycache__", ".runs"}
_SHIMMED = {"tool", "log_metric"}


class MigrationError(ValueError):
    """The flow cannot be migrated at all (no DAG or prompty flow, a cycle); the message names the file."""


@dataclass
class Migration:
    flow: Path
    target: Path
    kind: str  # dag | prompty
    converted: list[str] = field(default_factory=list)  # node names
    not_convertible: list[tuple[str, str]] = field(default_factory=list)  # (node or file, reason)
    notes: list[str] = field(default_factory=list)  # converted, with a change worth knowing
    variant_params: dict[str, Any] = field(default_factory=dict)  # create_workflow's default params
    evaluation: Migration | None = None  # the evaluation flow's (`llmops migrate --eval`)


def _reference(value: Any) -> tuple[str, str] | None:
    match = _REFERENCE.match(value) if isinstance(value, str) else None
    return (match.group(1), match.group(2) or "") if match else None


def _upstream(values: list[Any], nodes: set[str]) -> list[str]:
    found = []
    for value in values:
        ref = _reference(value)
        if ref and ref[0] in nodes and ref[0] not in found:
            found.append(ref[0])
    return found


def _class_name(node: str) -> str:
    return "".join(part.capitalize() for part in re.split(r"[^A-Za-z0-9]+", node) if part) + "Node"


def _tool_function(file: Path) -> str | None:
    """The tool function of a python node's file: the one decorated with `tool`, else its only public function."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    functions = [n for n in tree.body if isinstance(n, ast.FunctionDef | ast.AsyncFunctionDef)]

    def is_tool(decorator: ast.expr) -> bool:
        target = decorator.func if isinstance(decorator, ast.Call) else decorator
        return (target.id if isinstance(target, ast.Name) else getattr(target, "attr", "")) == "tool"

    decorated = [f.name for f in functions if any(is_tool(d) for d in f.decorator_list)]
    if len(decorated) == 1:
        return decorated[0]
    public = [f.name for f in functions if not f.name.startswith("_")]
    return public[0] if len(public) == 1 and not decorated else None


def _vendored(root: Path, module: str) -> bool:
    """Whether `module` (stages.x.y) was copied into the migrated folder `root` (see `_vendor`)."""
    base = root.joinpath(*module.split("."))
    return (base / "__init__.py").is_file() or base.with_suffix(".py").is_file()


def _maf_imports() -> set[str]:
    """The top-level import names the MAF environment provides (its pins, stages/engine/maf/requirements.txt)."""
    from stages.engine.maf import environment

    names = {"yaml" if line.lower().startswith("pyyaml") else line.split("==")[0].strip().lower().replace("-", "_")
             for line in environment.REQUIREMENTS.read_text(encoding="utf-8").splitlines()
             if line.strip() and not line.startswith("#")}  # fmt: skip
    return names | {"agent_framework", "promptflow"}  # agent-framework-core's namespace; prompt flow: the shim


def _vendor(target: Path) -> list[str]:
    """Copy into the migrated folder the project modules its Python imports (`stages/...`, as stages/engine/
    vendor.py does for the cloud targets) when they need only the standard library and the MAF environment's
    packages; returns the problems of those that need more (their files are not copied)."""
    from stages.engine import vendor

    package_dir = Path(__file__).resolve().parents[1]
    scripts = sorted(p for p in target.rglob("*.py") if p.relative_to(target).parts[0] != "stages")
    modules = vendor.project_modules(scripts, package_dir)
    available = _maf_imports()
    problems = []
    for module in modules:
        tops = {name.split(".")[0] for name in vendor.imported_names(module)}
        if missing := sorted(t for t in tops if t not in sys.stdlib_module_names and t not in {"stages", *available}):
            relative = module.relative_to(package_dir.parent).as_posix()
            problems.append(f"{relative} (the flow's code imports it) needs {', '.join(missing)}, which the MAF "
                            "environment does not have")  # fmt: skip
    if problems:
        return problems
    for module in modules:
        copy = target / module.relative_to(package_dir.parent)
        copy.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(module, copy)
    return []


def _import_problems(file: Path, root: Path) -> list[str]:
    """What a copied python file imports that the MAF environment lacks (prompt flow beyond the shim, `stages`
    modules that were not vendored into the migrated folder `root`)."""
    tree = ast.parse(file.read_text(encoding="utf-8"), filename=str(file))
    problems = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module:
            top = node.module.split(".")[0]
            names = {alias.name for alias in node.names}
            if top == "promptflow" and (node.module not in ("promptflow", "promptflow.core") or names - _SHIMMED):
                imported = ", ".join(sorted(names))
                problems.append(f"line {node.lineno}: from {node.module} import {imported} (the MAF environment has "
                                "no prompt flow; only tool and log_metric are shimmed)")  # fmt: skip
            elif top == "stages" and not _vendored(root, node.module):
                problems.append(f"line {node.lineno}: imports the project package `{node.module}`, which the MAF "
                                "environment does not have")  # fmt: skip
        elif isinstance(node, ast.Import):
            for alias in node.names:
                top = alias.name.split(".")[0]
                if top in ("promptflow", "stages"):
                    problems.append(f"line {node.lineno}: import {alias.name} (not in the MAF environment)")
    return problems


def _copy_folder(flow: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(flow, target, ignore=shutil.ignore_patterns(*_SKIPPED))


def _literal(value: Any) -> str:
    """A Python literal for a YAML value (json round-trip keeps it plain; booleans and None spelled for Python)."""
    return repr(json.loads(json.dumps(value)))


def _topological(per_row: dict[str, list[str]], where: Path) -> list[str]:
    order: list[str] = []
    state: dict[str, int] = {}

    def visit(node: str, path: list[str]) -> None:
        if state.get(node) == 2:
            return
        if state.get(node) == 1:
            raise MigrationError(f"{where}: the nodes reference each other in a cycle: {' -> '.join([*path, node])}")
        state[node] = 1
        for dependency in per_row[node]:
            visit(dependency, [*path, node])
        state[node] = 2
        order.append(node)

    for node in per_row:  # the DAG's own order where the references allow it
        visit(node, [])
    return order


def migrate_dag(flow: Path, target: Path, llm_node: str | None, prompt: str | None,
                params: dict[str, Any], root: Path | None = None) -> Migration:  # fmt: skip
    """Write `target` from the DAG flow in `flow` (see the module's docstring). `llm_node`, `prompt` and `params`
    are the baseline variant's (the defaults of create_workflow)."""
    dag_file = flow / "flow.dag.yaml"
    dag = yaml.safe_load(dag_file.read_text(encoding="utf-8")) or {}
    migration = Migration(flow, target, "dag", variant_params=dict(params))
    nodes = list(dag.get("nodes") or [])
    names = {str(n.get("name")) for n in nodes}
    llm_nodes = [str(n["name"]) for n in nodes if n.get("type") == "llm"]
    variant_node = llm_node or (llm_nodes[0] if len(llm_nodes) == 1 else None)
    if dag.get("node_variants"):
        for node in nodes:
            if node.get("use_variants"):
                default = dag["node_variants"][node["name"]].get("default_variant_id")
                migration.not_convertible.append((str(node["name"]), f"node variants: only the default variant "
                                                  f"{default!r} is converted (select others with the variant's prompt "
                                                  "and params)"))  # fmt: skip
    _copy_folder(flow, target)
    for problem in _vendor(target):
        migration.not_convertible.append(("stages", problem))
    for file in sorted(target.rglob("*.py")):
        if file.name in ("workflow.py", RUNTIME.name) or file.relative_to(target).parts[0] == "stages":
            continue
        for problem in _import_problems(file, target):
            migration.not_convertible.append((str(file.relative_to(target)), problem))

    classes: list[str] = []
    builds: list[str] = []
    per_row: dict[str, list[str]] = {}
    aggregations: list[dict[str, Any]] = []
    for node in nodes:
        name, kind = str(node.get("name")), node.get("type")
        if node.get("use_variants"):
            variant = dag["node_variants"][name]
            node = {**node, **variant["variants"][variant["default_variant_id"]]["node"], "name": name}
            kind = node.get("type")
        if node.get("aggregation"):
            aggregations.append(node)
            continue
        inputs = dict(node.get("inputs") or {})
        activate = node.get("activate") or {}
        per_row[name] = _upstream([*inputs.values(), activate.get("when")], names)
        cls, build, reason = _convert_node(name, kind, node, inputs, target, migration, name == variant_node)
        if reason:
            migration.not_convertible.append((name, reason))
            cls, build = _unconverted(name, reason)
        else:
            migration.converted.append(name)
        if activate:
            cls += f"    activate = ({_literal(activate.get('when'))}, {_literal(activate.get('is'))})\n"
        classes.append(cls)
        builds.append(build)
    order = _topological(per_row, dag_file)
    for node in aggregations:
        path = (node.get("source") or {}).get("path") or ""
        node["_function"] = (
            _tool_function(target / path) if path.endswith(".py") and (target / path).is_file() else None
        )
        aggregations_reason = _aggregation_reason(node, names)
        if aggregations_reason:
            migration.not_convertible.append((str(node["name"]), aggregations_reason))
        else:
            migration.converted.append(str(node["name"]))
    outputs = {str(k): (v or {}).get("reference") for k, v in (dag.get("outputs") or {}).items()}
    defaults, required = _inputs(dag.get("inputs") or {})
    edges = []
    for node in order:
        edges.append(_edge(per_row[node], node))
    kept = sorted({ref[0] for node in aggregations if not _aggregation_reason(node, names)
                   for value in (node.get("inputs") or {}).values()
                   if (ref := _reference(value)) and ref[0] in per_row})  # fmt: skip
    waits = _upstream(list(outputs.values()), set(per_row))
    edges.append(_edge([*waits, *(node for node in kept if node not in waits)], "outputs"))
    variant_line = ""
    if variant_node:
        variant_line = (
            "# The variant's LLM node: create_workflow(prompt=..., **params) sets its template and params.\n"
            f"PROMPT = {_literal(prompt)}\nPARAMS = {_literal(migration.variant_params)}\n"
        )
    source = _WORKFLOW.format(
        origin=_shown(dag_file, root), name=flow.name, variant_node=variant_node or "none",
        inputs=_literal(defaults), required=_literal(required), outputs=_literal(outputs), variant=variant_line,
        kept=_literal(kept),
        classes="\n\n".join(classes), builds="".join(builds), edges="".join(edges),
        signature="prompt: str = PROMPT, **params: Any" if variant_node else "**params: Any",
        aggregate=_aggregate_source([n for n in aggregations if not _aggregation_reason(n, names)]),
    )  # fmt: skip
    _write_code(target / "workflow.py", source)
    (target / "MIGRATION.md").write_text(report(migration), encoding="utf-8")
    return migration


def _write_code(path: Path, source: str) -> None:
    """Write generated Python, formatted by the project's ruff when it is installed (deterministic either way)."""
    import subprocess
    import sys

    path.write_text(source, encoding="utf-8")
    ruff = Path(sys.executable).with_name("ruff")
    if ruff.is_file():
        subprocess.run([str(ruff), "check", "-q", "--fix", "--select", "I", str(path)], capture_output=True)
        subprocess.run([str(ruff), "format", "-q", str(path)], capture_output=True)


def _shown(path: Path, root: Path | None) -> str:
    try:
        return path.relative_to(root).as_posix() if root else path.as_posix()
    except ValueError:
        return path.as_posix()


def _inputs(declared: dict[str, Any]) -> tuple[dict[str, Any], list[str]]:
    """A flow's inputs with their defaults (None when it has none), and those without a default."""
    defaults = {str(k): (v.get("default") if isinstance(v, dict) else None) for k, v in declared.items()}
    required = [str(k) for k, v in declared.items() if not (isinstance(v, dict) and "default" in v)]
    return defaults, required


def _edge(upstream: list[str], node: str) -> str:
    if not upstream:
        return f"    builder.add_edge(executors['inputs'], executors[{node!r}])\n"
    if len(upstream) == 1:
        return f"    builder.add_edge(executors[{upstream[0]!r}], executors[{node!r}])\n"
    sources = ", ".join(f"executors[{u!r}]" for u in upstream)
    return f"    builder.add_fan_in_edges([{sources}], executors[{node!r}])\n"


def _split_llm_inputs(name: str, inputs: dict[str, Any], migration: Migration) -> tuple[dict, dict, str | None]:
    template_inputs, llm_params = {}, {}
    for key, value in inputs.items():
        if key in LLM_PARAMS:
            llm_params[key] = value
        elif key in CONNECTION_PARAMS:
            migration.notes.append(f"{name}: {key} {value!r} is not kept: the run's connection decides the model, "
                                   "as in a prompt flow run through the toolkit")  # fmt: skip
        elif key in UNSUPPORTED_PARAMS:
            if value != UNSUPPORTED_PARAMS[key]:
                return {}, {}, f"LLM parameter {key}={value!r} has no chat completions equivalent"
        else:
            template_inputs[key] = value
    for key, value in llm_params.items():
        if _reference(value):
            return {}, {}, f"LLM parameter {key} comes from {value}: only literal parameters are converted"
    return template_inputs, llm_params, None


def _convert_node(
    name: str, kind: Any, node: dict[str, Any], inputs: dict[str, Any], target: Path, migration: Migration,
    is_variant_node: bool,
) -> tuple[str, str, str | None]:  # fmt: skip
    """(class source, build line, None) for a node, or ("", "", reason) when it cannot be converted."""
    source = node.get("source") or {}
    path = source.get("path")
    if source.get("type", "code") != "code" or not path:
        return (
            "",
            "",
            f"a {kind} node from {source.get('type')} {source.get('tool') or path!r}: only code nodes convert",
        )
    if not (target / path).is_file():
        return "", "", f"its source {path} is not in the flow folder"
    cls = _class_name(name)
    if kind == "llm":
        template_inputs, llm_params, reason = _split_llm_inputs(name, inputs, migration)
        if reason:
            return "", "", reason
        api = str(node.get("api") or "chat")
        text = (f"class {cls}(rt.LLMNode):\n    \"\"\"LLM node `{name}` ({api} API, template {path}).\"\"\"\n\n"
                f"    api = {api!r}\n    inputs = {_literal(template_inputs)}\n")  # fmt: skip
        if is_variant_node:
            migration.variant_params = {**llm_params, **migration.variant_params}
            build = f"        {name!r}: {cls}(HERE, prompt, {{**PARAMS, **params}}, id={name!r}),\n"
        else:
            build = f"        {name!r}: {cls}(HERE, {path!r}, {_literal(llm_params)}, id={name!r}),\n"
        return text, build, None
    if kind == "prompt":
        text = (f"class {cls}(rt.PromptNode):\n    \"\"\"Prompt node `{name}` (template {path}).\"\"\"\n\n"
                f"    inputs = {_literal(inputs)}\n")  # fmt: skip
        return text, f"        {name!r}: {cls}(HERE, {path!r}, id={name!r}),\n", None
    if kind == "python":
        if not path.endswith(".py"):
            return "", "", f"python node source {path} is not a .py file"
        function = _tool_function(target / path)
        if function is None:
            return "", "", f"{path} has no single @tool function to call"
        text = (f"class {cls}(rt.PythonNode):\n    \"\"\"Python node `{name}`: {function}() of {path}.\"\"\"\n\n"
                f"    inputs = {_literal(inputs)}\n")  # fmt: skip
        build = f"        {name!r}: {cls}(rt.load_function(HERE, {path!r}, {function!r}), id={name!r}),\n"
        return text, build, None
    return "", "", f"node type {kind!r} has no MAF conversion"


def _unconverted(name: str, reason: str) -> tuple[str, str]:
    cls = _class_name(name)
    message = f"node {name} was not converted by llmops migrate: {reason}"
    text = (f"class {cls}(rt.Node):\n    \"\"\"NOT CONVERTED: node `{name}` ({reason}).\"\"\"\n\n"
            f"    async def run_node(self, inputs):\n"
            f"        raise NotImplementedError({message!r})\n")  # fmt: skip
    return text, f"        {name!r}: {cls}(id={name!r}),\n"


def _aggregation_reason(node: dict[str, Any], names: set[str]) -> str | None:
    source = (node.get("source") or {}).get("path") or ""
    if node.get("type") != "python" or not source.endswith(".py"):
        return "an aggregation node that is not a python node"
    if not node.get("_function"):
        return f"{source} has no single @tool function to call"
    for key, value in (node.get("inputs") or {}).items():
        ref = _reference(value)
        if ref and ref[0] != "inputs" and ref[0] not in names:
            return f"aggregation input {key} reads {value}, which is not a per-row node of the flow"
    return None


def _aggregate_source(aggregations: list[dict[str, Any]]) -> str:
    if not aggregations:
        return ""
    lines = ["", "", "def aggregate(inputs: list[dict], outputs: list[dict], aggregation_inputs: list[dict]) -> dict:",
             '    """The evaluation pattern: the aggregation nodes over the successful rows (their inputs, and the',
             '    per-row node outputs they read), the metrics they log."""',
             "    rows = [{'inputs': i, 'nodes': a, 'bypassed': []} for i, a in zip(inputs, aggregation_inputs)]",
             "    metrics: dict = {}"]  # fmt: skip
    for node in aggregations:
        path = node["source"]["path"]
        values = []
        for key, value in (node.get("inputs") or {}).items():
            ref = _reference(value)
            values.append(f"{key!r}: [rt.resolve({value!r}, row) for row in rows]" if ref
                          else f"{key!r}: {_literal(value)}")  # fmt: skip
        lines.append(f"    # aggregation node `{node['name']}`")
        lines.append(f"    function = rt.load_function(HERE, {path!r}, {node['_function']!r})")
        lines.append(f"    metrics.update(rt.aggregate_with(function, {{{', '.join(values)}}}))")
    lines.append("    return metrics")
    return "\n".join(lines) + "\n"


def migrate_prompty(
    flow: Path, target: Path, prompt: str, params: dict[str, Any], root: Path | None = None
) -> Migration:
    """Write `target` from a folder of .prompty files: one LLM node reading the variant's .prompty."""
    migration = Migration(flow, target, "prompty")
    file = flow / prompt if flow.is_dir() else flow
    front = yaml.safe_load(file.read_text(encoding="utf-8").split("---", 2)[1]) or {}
    _copy_folder(flow if flow.is_dir() else flow.parent, target)
    defaults, required = _inputs(front.get("inputs") or {})
    inputs = {str(k): f"${{inputs.{k}}}" for k in (front.get("inputs") or {})}
    cls = (f"class PromptyNode(rt.PromptyNode):\n    \"\"\"The prompty flow: the variant's .prompty file (its "
           "front matter's API and parameters, the variant's params win).\"\"\"\n\n"
           f"    inputs = {_literal(inputs)}\n")  # fmt: skip
    migration.converted.append("prompty")
    source = _WORKFLOW.format(
        origin=_shown(file, root), name=file.stem, variant_node="prompty", inputs=_literal(defaults),
        required=_literal(required),
        outputs=_literal({"output": "${prompty.output}"}),
        variant=f"PROMPT = {_literal(file.name)}\nPARAMS = {_literal(params)}\n", classes=cls,
        builds="        'prompty': PromptyNode(HERE, prompt, {**PARAMS, **params}, id='prompty'),\n",
        edges="    builder.add_edge(executors['inputs'], executors['prompty'])\n"
              "    builder.add_edge(executors['prompty'], executors['outputs'])\n",
        signature="prompt: str = PROMPT, **params: Any", aggregate="", kept="[]",
    )  # fmt: skip
    _write_code(target / "workflow.py", source)
    (target / "MIGRATION.md").write_text(report(migration), encoding="utf-8")
    return migration


def report(migration: Migration) -> str:
    lines = [f"# Migration of the flow {migration.flow.name} to MAF", "",
             "Written by `llmops migrate` (deterministic, no LLM): `workflow.py` exports `create_workflow(**params)`; "
             "it imports the runtime `llmops_maf` (stages/engine/maf/llmops_maf.py, on the MAF worker's path). Prompts "
             "and tool code are the original files, copied verbatim.", "",
             f"Converted ({len(migration.converted)}): {', '.join(migration.converted) or 'nothing'}", ""]  # fmt: skip
    if migration.notes:
        lines += ["Notes:", *(f"- {note}" for note in migration.notes), ""]
    if migration.not_convertible:
        lines += [f"Not convertible ({len(migration.not_convertible)}):",
                  *(f"- `{where}`: {reason}" for where, reason in migration.not_convertible), ""]  # fmt: skip
    else:
        lines += ["Not convertible: nothing", ""]
    return "\n".join(lines)


_WORKFLOW = '''# ruff: noqa: E501, RUF012 (generated: the flow's literals as they are; class-level node inputs)
"""MAF workflow written by `llmops migrate` from {origin}.

Deterministic and without an LLM: one Executor per node, edges from the flow's ${{...}} references, the original
prompts and tool code beside this file (copied verbatim). MIGRATION.md lists what was and was not converted. A fresh
workflow per create_workflow() call (one instance cannot run concurrently); the variant's LLM node ({variant_node})
takes create_workflow(prompt=..., **params).
"""

from pathlib import Path
from typing import Any

from agent_framework import WorkflowBuilder

import llmops_maf as rt

HERE = Path(__file__).resolve().parent
INPUTS = {inputs}  # the flow's inputs with their defaults (None: none)
REQUIRED = {required}  # the inputs without a default
OUTPUTS = {outputs}  # the flow's outputs and what they reference
{variant}

{classes}


def create_workflow({signature}):
    """A fresh workflow of the flow."""
    executors = {{
        "inputs": rt.Start({{k: v for k, v in INPUTS.items() if k not in REQUIRED}}, id="inputs"),
{builds}        "outputs": rt.Outputs(OUTPUTS, keep={kept}, id="outputs"),
    }}
    builder = WorkflowBuilder(name={name!r}, start_executor=executors["inputs"])
{edges}    return builder.build()
{aggregate}'''


def use_case_config(name: str, use_case: dict[str, Any], flow: str, migration: Migration) -> dict[str, Any]:
    """The config of the migrated use case `<name>_maf`: the original's (same dataset, evaluation flow, mapping,
    metrics and variants: the prompt files keep their names in the copied folder), running the MAF folder."""
    config = json.loads(json.dumps(use_case))
    config["flow"] = flow
    config["variant"] = "${variant.name}"
    config["node_variants"] = {}
    config["parity"] = {"against": name, "margin": 0.02}  # `llmops parity` and the gate: behaves as the original?
    for block in (config.get("variants") or {}).values():
        block.pop("llm_node", None)  # create_workflow's prompt and params go to the workflow's variant node
        if block.get("node_inputs"):
            migration.not_convertible.append(("variants", "node_inputs of a variant: a MAF workflow has no node inputs "
                                              "to set (give them to create_workflow as params)"))  # fmt: skip
            block.pop("node_inputs")
    return config


def migrate_use_case(root: Path, name: str, use_case: dict[str, Any], api: str,
                     evaluation: bool = False) -> tuple[Migration, str, dict]:  # fmt: skip
    """Migrate a use case's standard flow (and with `evaluation`, its DAG evaluation flow too: the new use case then
    evaluates with it); returns the standard flow's migration, the new use case's name and its config."""
    flow = root / use_case["flow"]
    baseline = (use_case.get("variants") or {}).get(use_case.get("baseline") or "v1") or {}
    prompt = baseline.get("prompt")
    if isinstance(prompt, dict):
        prompt = prompt.get(api) or next(iter(prompt.values()), None)
    params = dict(baseline.get("params") or {})
    target = flow.parent / f"{flow.name}_maf"
    if (flow / "flow.dag.yaml").is_file():
        migration = migrate_dag(flow, target, baseline.get("llm_node"), prompt, params, root)
    elif flow.suffix == ".prompty" or (flow.is_dir() and any(flow.glob("*.prompty")) and prompt):
        migration = migrate_prompty(flow, target, prompt or flow.name, params, root)
    elif (flow / "flow.flex.yaml").is_file():
        raise MigrationError(f"{flow}/flow.flex.yaml: a flex flow is Python code that calls its LLM itself; port its "
                             "entry to a MAF Executor by hand (there are no nodes to convert)")  # fmt: skip
    else:
        raise MigrationError(f"{flow}: not a DAG or prompty flow")
    new_name = f"{name}_maf"
    config = use_case_config(name, use_case, target.relative_to(root).as_posix(), migration)
    (target / "MIGRATION.md").write_text(report(migration), encoding="utf-8")
    if evaluation:
        migration.evaluation = migrate_evaluation(root, root / use_case["eval_flow"])
        config["eval_flow"] = migration.evaluation.target.relative_to(root).as_posix()
    return migration, new_name, config


def migrate_evaluation(root: Path, flow: Path) -> Migration:
    """A DAG evaluation flow as a MAF workflow folder `<flow>_maf` (its aggregation nodes: `aggregate`, the
    evaluation pattern); what cannot be converted is listed, as for a standard flow."""
    if not (flow / "flow.dag.yaml").is_file():
        raise MigrationError(f"{flow}: the evaluation flow is not a DAG flow (only DAG evaluation flows migrate)")
    migration = migrate_dag(flow, flow.parent / f"{flow.name}_maf", None, None, {}, root)
    (migration.target / "MIGRATION.md").write_text(report(migration), encoding="utf-8")
    return migration
