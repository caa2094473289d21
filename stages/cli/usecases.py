"""`llmops` commands that make use cases: add-use-case, new, import-experiment."""

from __future__ import annotations

import argparse

from stages.cli.compose import compose_params
from stages.core.project import project_root
from stages.usecases import catalogue, importer


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
    config = catalogue.scaffold(root, args.name, args.kind)
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
