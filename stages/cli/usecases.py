"""`llmops` commands that make use cases: add-use-case, new, import-experiment, migrate."""

from __future__ import annotations

import argparse
import sys

from stages.cli.compose import compose_params
from stages.core.io import write_text
from stages.core.project import load_params, project_root
from stages.usecases import catalogue, importer, scaffold


def cmd_add_use_case(args: argparse.Namespace) -> int:
    root = project_root()
    mapping = dict(item.split("=", 1) for item in args.map)
    outputs = [source.split(".", 1)[1] for source in mapping.values() if source.startswith("outputs.")]
    spec = catalogue.UseCaseSpec(
        name=args.name,
        dataset=args.dataset,
        flow=args.flow,
        eval_flow=args.eval_flow,
        inputs=tuple(args.inputs.split(",")),
        label=args.label,
        mapping=mapping,
        prediction=args.prediction or (outputs[0] if outputs else ""),  # "": the flow's first output
        correct=args.correct,
        llm_node=args.llm_node,
    )
    config, notes = catalogue.add(root, spec, overwrite=args.force)
    compose_params(root, [], root / "params.yaml")
    print(
        f"added use case {args.name}: {config.relative_to(root)}, registered in conf/config.yaml, params.yaml composed"
    )
    for note in notes:
        print(f"  {note}")
    print("next: `dvc repro` (stages run@" + args.name + " etc. come from dvc.yaml's foreach)")
    return 0


def cmd_new(args: argparse.Namespace) -> int:
    root = project_root()
    config = scaffold.scaffold(root, args.name, args.kind)
    compose_params(root, [], root / "params.yaml")
    print(f"scaffolded use case {args.name} ({args.kind}): use_cases/{args.name}/, {config.relative_to(root)}")
    print("next: `dvc repro`, then replace the sample flow, data and evaluation with your own")
    return 0


def cmd_import_experiment(args: argparse.Namespace) -> int:
    root = project_root()
    result = importer.import_experiment(
        root, args.path.resolve(), args.name, llm_node=args.llm_node, filename=args.file,
        compose=lambda: compose_params(root, [], root / "params.yaml"),
    )  # fmt: skip
    names = ", ".join(name for name, _ in result.use_cases)
    print(f"imported {args.path / args.file} into {result.folder} as use case{'s' * (len(result.use_cases) > 1)} "
          f"{names}; params.yaml composed")  # fmt: skip
    for item in result.copied:
        print(f"  copied  {item}")
    for name, config in result.use_cases:
        print(f"  use case {name}: {config.relative_to(root)}")
        for note in result.choices.get(name, []):
            print(f"    {note}")
    for item in result.not_mapped:
        print(f"  NOT MAPPED  {item}")
    for item in result.notes:
        print(f"  note  {item}")
    for item in dict.fromkeys(result.next_steps):
        print(f"  to do  {item}")
    print("next: `dvc repro` (stages prepare/run/evaluate/report@<use case>)")
    return 0


def cmd_migrate(args: argparse.Namespace) -> int:
    """`llmops migrate <use case>`: its prompt flow flow as a MAF workflow folder, and the use case `<name>_maf`."""
    import yaml

    from stages.core.yaml_reader import load_yaml
    from stages.engine import migrate

    root = project_root()
    params = load_params(root)
    use_case = (params.get("use_cases") or {}).get(args.use_case)
    if use_case is None:
        print(f"llmops migrate: no use case {args.use_case} in params.yaml (conf/config.yaml)", file=sys.stderr)
        return 1
    source = load_yaml((root / "conf" / "use_cases" / f"{args.use_case}.yaml").read_text(encoding="utf-8"))
    try:
        migration, name, config = migrate.migrate_use_case(
            root, args.use_case, source[args.use_case], str(params["llm"].get("api") or "completion"), args.eval
        )
    except migrate.MigrationError as exc:
        print(f"llmops migrate: {exc}", file=sys.stderr)
        return 1
    target = root / "conf" / "use_cases" / f"{name}.yaml"
    evaluated = "same data, its migrated evaluation flow" if args.eval else "same data and eval"
    header = f"# Written by `llmops migrate {args.use_case}`: the use case on its MAF workflow ({evaluated}).\n"
    write_text(target, header + yaml.safe_dump({name: config}, sort_keys=False, allow_unicode=True))
    catalogue.register(root / "conf" / "config.yaml", name)
    compose_params(root, [], root / "params.yaml")
    folder = migration.target.relative_to(root)
    print(
        f"migrated {args.use_case} ({migration.kind}) -> {folder}/workflow.py; "
        f"use case {name}: {target.relative_to(root)}"
    )
    print(f"  converted: {', '.join(migration.converted) or 'nothing'}")
    for note in migration.notes:
        print(f"  note: {note}")
    for where, reason in migration.not_convertible:
        print(f"  NOT CONVERTED {where}: {reason}")
    if (evaluation := migration.evaluation) is not None:
        print(f"evaluation flow -> {evaluation.target.relative_to(root)}/workflow.py (the use case evaluates with it)")
        print(f"  converted: {', '.join(evaluation.converted) or 'nothing'}")
        for where, reason in evaluation.not_convertible:
            print(f"  NOT CONVERTED {where}: {reason}")
    print(f"next: `dvc repro report@{name}`, then `llmops compare` / the gate compare it with {args.use_case}")
    return 0
