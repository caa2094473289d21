"""`llmops migrate <use_case>`: a prompt flow flow (DAG, or a folder of .prompty files) as a MAF workflow folder,
deterministically, with no LLM.

The flow folder is copied beside the original (`<flow>_maf`): prompts and tool code verbatim, every other file too,
plus `workflow.py` (written here) and `MIGRATION.md` (what was converted and what was not); the runtime it imports,
stages/engine/maf/llmops_maf.py, is on the MAF worker's path. In workflow.py each DAG node is an Executor class:
`llm` nodes render their template and call the connection's chat completions API with their params, `prompt` nodes
render theirs, `python` nodes call the copied tool function; edges come from the `${...}` references (a node with
several upstream nodes is a fan-in); `activate` conditions bypass nodes as prompt flow does; `aggregation: true`
nodes become `aggregate(inputs, outputs)`, the evaluation pattern. The variant's LLM node (`llm_node`, or the only
LLM node) takes `create_workflow(prompt=..., **params)`. A prompty flow is one LLM node that reads the variant's
.prompty file. A node or setting that cannot be converted is listed (node, reason) in the result and MIGRATION.md,
and the node becomes an Executor that fails its rows with that reason: nothing is dropped silently.
"""

from __future__ import annotations

import json
import shutil
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.core.yaml_reader import load_yaml
from stages.engine.migrate_nodes import (
    Migration,
    aggregate_source,
    aggregation_reason,
    convert_node,
    edge,
    import_problems,
    literal,
    reference,
    tool_function,
    topological,
    unconverted,
    upstream,
)
from stages.engine.migrate_nodes import (
    MigrationError as MigrationError,
)

RUNTIME = Path(__file__).resolve().parent / "maf" / "llmops_maf.py"  # on the MAF worker's path, never copied
_SKIPPED = {"flow.dag.yaml", ".promptflow", "__pycache__", ".runs"}


def _copy_folder(flow: Path, target: Path) -> None:
    if target.exists():
        shutil.rmtree(target)
    shutil.copytree(flow, target, ignore=shutil.ignore_patterns(*_SKIPPED))


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


@dataclass
class _Nodes:
    """A DAG's per-row nodes as workflow source: Executor classes, their build lines, each node's upstream nodes;
    and its aggregation nodes (the evaluation pattern), converted apart."""

    classes: list[str] = field(default_factory=list)
    builds: list[str] = field(default_factory=list)
    per_row: dict[str, list[str]] = field(default_factory=dict)
    aggregations: list[dict[str, Any]] = field(default_factory=list)


def _default_variants_only(dag: dict[str, Any], migration: Migration) -> None:
    """Note each node with prompt flow node variants: only its default variant is converted."""
    for node in dag.get("nodes") or []:
        if dag.get("node_variants") and node.get("use_variants"):
            default = dag["node_variants"][node["name"]].get("default_variant_id")
            migration.not_convertible.append((str(node["name"]), f"node variants: only the default variant "
                                              f"{default!r} is converted (select others with the variant's prompt "
                                              "and params)"))  # fmt: skip


def _convert_nodes(dag: dict[str, Any], target: Path, migration: Migration, variant_node: str | None) -> _Nodes:
    """Every node of the DAG (its default variant where it has variants) as an Executor, or an aggregation."""
    nodes, names, out = list(dag.get("nodes") or []), {str(n.get("name")) for n in dag.get("nodes") or []}, _Nodes()
    for node in nodes:
        name, kind = str(node.get("name")), node.get("type")
        if node.get("use_variants"):
            variant = dag["node_variants"][name]
            node = {**node, **variant["variants"][variant["default_variant_id"]]["node"], "name": name}
            kind = node.get("type")
        if node.get("aggregation"):
            out.aggregations.append(node)
            continue
        inputs = dict(node.get("inputs") or {})
        activate = node.get("activate") or {}
        out.per_row[name] = upstream([*inputs.values(), activate.get("when")], names)
        cls, build, reason = convert_node(name, kind, node, inputs, target, migration, name == variant_node)
        if reason:
            migration.not_convertible.append((name, reason))
            cls, build = unconverted(name, reason)
        else:
            migration.converted.append(name)
        if activate:
            cls += f"    activate = ({literal(activate.get('when'))}, {literal(activate.get('is'))})\n"
        out.classes.append(cls)
        out.builds.append(build)
    return out


def _convertible_aggregations(nodes: _Nodes, names: set[str], target: Path, migration: Migration) -> list[dict]:
    """The aggregation nodes that convert (their tool function found); the others are noted."""
    kept = []
    for node in nodes.aggregations:
        path = (node.get("source") or {}).get("path") or ""
        node["_function"] = tool_function(target / path) if path.endswith(".py") and (target / path).is_file() else None
        if reason := aggregation_reason(node, names):
            migration.not_convertible.append((str(node["name"]), reason))
        else:
            migration.converted.append(str(node["name"]))
            kept.append(node)
    return kept


def migrate_dag(flow: Path, target: Path, llm_node: str | None, prompt: str | None,
                params: dict[str, Any], root: Path | None = None) -> Migration:  # fmt: skip
    """Write `target` from the DAG flow in `flow` (see the module's docstring). `llm_node`, `prompt` and `params`
    are the baseline variant's (the defaults of create_workflow)."""
    dag_file = flow / "flow.dag.yaml"
    dag = load_yaml(dag_file.read_text(encoding="utf-8")) or {}
    migration = Migration(flow, target, "dag", variant_params=dict(params))
    names = {str(n.get("name")) for n in dag.get("nodes") or []}
    llm_nodes = [str(n["name"]) for n in dag.get("nodes") or [] if n.get("type") == "llm"]
    variant_node = llm_node or (llm_nodes[0] if len(llm_nodes) == 1 else None)
    _default_variants_only(dag, migration)
    _copy_folder(flow, target)
    migration.not_convertible += [("stages", problem) for problem in _vendor(target)]
    for file in sorted(target.rglob("*.py")):
        if file.name not in ("workflow.py", RUNTIME.name) and file.relative_to(target).parts[0] != "stages":
            migration.not_convertible += [(str(file.relative_to(target)), p) for p in import_problems(file, target)]
    nodes = _convert_nodes(dag, target, migration, variant_node)
    order = topological(nodes.per_row, dag_file)
    aggregations = _convertible_aggregations(nodes, names, target, migration)
    outputs = {str(k): (v or {}).get("reference") for k, v in (dag.get("outputs") or {}).items()}
    defaults, required = _inputs(dag.get("inputs") or {})
    edges = [edge(nodes.per_row[node], node) for node in order]
    kept = sorted({ref[0] for node in aggregations for value in (node.get("inputs") or {}).values()
                   if (ref := reference(value)) and ref[0] in nodes.per_row})  # fmt: skip
    waits = upstream(list(outputs.values()), set(nodes.per_row))
    edges.append(edge([*waits, *(node for node in kept if node not in waits)], "outputs"))
    variant_line = ""
    if variant_node:
        variant_line = (
            "# The variant's LLM node: create_workflow(prompt=..., **params) sets its template and params.\n"
            f"PROMPT = {literal(prompt)}\nPARAMS = {literal(migration.variant_params)}\n"
        )
    source = _WORKFLOW.format(
        origin=_shown(dag_file, root), name=flow.name, variant_node=variant_node or "none",
        inputs=literal(defaults), required=literal(required), outputs=literal(outputs), variant=variant_line,
        kept=literal(kept), classes="\n\n".join(nodes.classes), builds="".join(nodes.builds), edges="".join(edges),
        signature="prompt: str = PROMPT, **params: Any" if variant_node else "**params: Any",
        aggregate=aggregate_source(aggregations),
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


def migrate_prompty(
    flow: Path, target: Path, prompt: str, params: dict[str, Any], root: Path | None = None
) -> Migration:
    """Write `target` from a folder of .prompty files: one LLM node reading the variant's .prompty."""
    migration = Migration(flow, target, "prompty")
    file = flow / prompt if flow.is_dir() else flow
    front = load_yaml(file.read_text(encoding="utf-8").split("---", 2)[1]) or {}
    _copy_folder(flow if flow.is_dir() else flow.parent, target)
    defaults, required = _inputs(front.get("inputs") or {})
    inputs = {str(k): f"${{inputs.{k}}}" for k in (front.get("inputs") or {})}
    cls = (f"class PromptyNode(rt.PromptyNode):\n    \"\"\"The prompty flow: the variant's .prompty file (its "
           "front matter's API and parameters, the variant's params win).\"\"\"\n\n"
           f"    inputs = {literal(inputs)}\n")  # fmt: skip
    migration.converted.append("prompty")
    source = _WORKFLOW.format(
        origin=_shown(file, root), name=file.stem, variant_node="prompty", inputs=literal(defaults),
        required=literal(required),
        outputs=literal({"output": "${prompty.output}"}),
        variant=f"PROMPT = {literal(file.name)}\nPARAMS = {literal(params)}\n", classes=cls,
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
