"""The schema of conf/use_cases/<uc>.yaml: a misspelt or missing key is named with its conf file, wherever params
are read (`llmops params`, every stage), and a variant a use case names itself must be one it defines."""

from __future__ import annotations

import copy
import dataclasses
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import yaml
from conftest import REPO
from test_datasets import row, stage_project, write

from stages import cli, evaluate, prepare, report, run
from stages.core import conf_schema, variants
from stages.results.rows import Columns
from stages.usecases import catalogue, scaffold

PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())
WEB = "conf/use_cases/web_classification.yaml"


def params_with(change: Any) -> dict[str, Any]:
    """The repo's params, with `change(params)` applied to a copy."""
    params = copy.deepcopy(PARAMS)
    change(params)
    return params


def problems(params: dict[str, Any]) -> list[str]:
    with pytest.raises(conf_schema.ConfError) as error:
        conf_schema.check_params(params)
    return str(error.value).splitlines()


def rename(block: dict[str, Any], old: str, new: str) -> None:
    block[new] = block.pop(old)


def test_the_repo_params_fit_the_schema() -> None:
    conf_schema.check_params(PARAMS)  # and every env/llm/variant combination: tests/test_params.py composes them


def test_a_misspelt_key_is_named_with_its_conf_file_and_the_key_it_resembles() -> None:
    found = problems(params_with(lambda p: rename(p["use_cases"]["web_classification"]["data"], "inputs", "input")))
    assert found == [
        f"{WEB}: data.input: unknown key (did you mean 'inputs'?)",
        f"{WEB}: data.inputs: missing (a required key)",
    ]
    found = problems(params_with(lambda p: rename(p["use_cases"]["web_classification"], "dataset", "datset")))
    assert found == [
        f"{WEB}: datset: unknown key (did you mean 'dataset'?)",
        f"{WEB}: dataset: missing (a required key)",
    ]


def test_nested_keys_wrong_types_and_the_global_prepare_block_are_named() -> None:
    def break_things(p: dict[str, Any]) -> None:
        chat = p["use_cases"]["chat"]
        chat["evaluate"]["judges"]["relevance"]["rubirc"] = chat["evaluate"]["judges"]["relevance"].pop("rubric")
        chat["variants"]["v2"]["prompt"] = 3
        chat["report"]["colour"] = True
        p["prepare"]["max_row_bytes"] = 0

    found = problems(params_with(break_things))
    assert found == [
        "conf/config.yaml: prepare.max_row_bytes: Input should be greater than or equal to 1",
        "conf/use_cases/chat.yaml: evaluate.judges.relevance.rubirc: unknown key (did you mean 'rubric'?)",
        "conf/use_cases/chat.yaml: report.colour: unknown key (known: confusion, correct, details, prediction, "
        "raw_answer)",
        "conf/use_cases/chat.yaml: variants.v2.prompt: expected a prompt file or {completion: file, chat: file}, got 3",
    ]


def test_the_stages_settings_blocks_are_checked_with_their_key_paths() -> None:
    def break_settings(p: dict[str, Any]) -> None:
        p["bulk"]["repeats"] = 0
        p["bulk"]["row_timout_s"] = p["bulk"].pop("row_timeout_s")
        p["llm_cache"]["enabled"] = "yes"
        p["report"]["max_rows_in_html"] = -1

    assert problems(params_with(break_settings)) == [
        "conf/config.yaml: bulk.row_timout_s: unknown key (did you mean 'row_timeout_s'?)",
        "conf/config.yaml: bulk.row_timeout_s: missing (a required key)",
        "conf/config.yaml: bulk.repeats: Input should be greater than or equal to 1",
        "conf/config.yaml: llm_cache.enabled: Input should be a valid boolean",
        "conf/config.yaml: report.max_rows_in_html: Input should be greater than or equal to 0",
    ]


@pytest.mark.parametrize("key", ["repeats", "processes"])
@pytest.mark.parametrize("value", [0, -1, "2", True, 1.5])
def test_a_bad_count_of_repeats_or_processes_names_the_key_and_the_file(key: str, value: object) -> None:
    [found] = problems(params_with(lambda p: p["bulk"].__setitem__(key, value)))
    assert found.startswith(f"conf/config.yaml: bulk.{key}: Input should be")


def test_the_report_block_has_the_report_columns_the_data_block_does_not_give() -> None:
    columns = {field.name for field in dataclasses.fields(Columns)} - {"inputs", "label"}
    assert set(conf_schema.Report.model_fields) == columns


def test_a_variant_a_use_case_names_must_be_one_it_defines() -> None:
    found = problems(params_with(lambda p: p["use_cases"]["web_classification"].update(variant="v9")))
    assert found == [
        "use_cases.web_classification.variant: no variant 'v9' in conf/use_cases/web_classification.yaml (it "
        "defines v1, v2); only the global `variant=` runs the baseline of a use case without it"
    ]
    use_case = PARAMS["use_cases"]["web_classification"]
    with pytest.raises(variants.VariantError, match=r"use_cases\.web_classification\.variant: no variant 'v9'"):
        variants.plan("web_classification", {**use_case, "variant": "v9"}, global_variant="v1")


def test_only_the_global_variant_falls_back_to_the_baseline() -> None:
    def global_v3(p: dict[str, Any]) -> None:  # what `variant=v3` composes, for a use case that lacks v3
        p["variant"]["name"] = "v3"
        p["use_cases"]["web_classification"]["variant"] = "v3"

    params = params_with(global_v3)
    conf_schema.check_params(params)
    plan = variants.plan_for(params, "web_classification")
    assert plan.fell_back and plan.names == ("v1",) and plan.requested == "v3"


def conf_copy(tmp_path: Path) -> Path:
    """A folder `llmops params` takes for a project: conf/ and .dvc/ copied, params.yaml as in the repo."""
    root = tmp_path / "repo"
    shutil.copytree(REPO / "conf", root / "conf")
    (root / ".dvc").mkdir()
    shutil.copy2(REPO / "params.yaml", root / "params.yaml")
    return root


@pytest.mark.parametrize(
    "edit,overrides,message",
    [
        (("    inputs: [url, text]", "    input: [url, text]"), [], f"{WEB}: data.input: unknown key (did you mean"),
        (("  dataset: use_cases", "  datset: use_cases"), [], f"{WEB}: datset: unknown key (did you mean 'dataset'?)"),
        (None, ["use_cases.web_classification.variant=v9"], "use_cases.web_classification.variant: no variant 'v9'"),
    ],
)
def test_llmops_params_refuses_a_conf_typo_and_keeps_params_yaml(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    edit: tuple[str, str] | None, overrides: list[str], message: str,
) -> None:  # fmt: skip
    root = conf_copy(tmp_path)
    if edit:
        conf = root / WEB
        conf.write_text(conf.read_text().replace(*edit, 1))
    monkeypatch.chdir(root)
    assert cli.main(["params", *overrides]) == 1
    err = capsys.readouterr().err
    assert err.startswith(f"llmops: {message}") and "Traceback" not in err
    assert (root / "params.yaml").read_text() == (REPO / "params.yaml").read_text()
    assert sorted(p.name for p in root.iterdir()) == [".dvc", "conf", "params.yaml"]  # no composition left behind


def test_llmops_params_names_a_group_option_that_does_not_exist(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(conf_copy(tmp_path))
    assert cli.main(["params", "variant=v9"]) == 1
    err = capsys.readouterr().err
    assert err.startswith("llmops params: In 'config': Could not find 'variant/v9'") and "Traceback" not in err


STAGE_ARGS = {
    prepare: ["--out", "prepared.jsonl"],
    run: ["--rows", "prepared.jsonl", "--out", "out", "--summary", "summary.json", "--operations", "o.json",
          "--cache", "cache"],
    evaluate: ["--rows", "prepared.jsonl", "--run", "out", "--out", "rows", "--metrics", "m.json",
               "--operations", "o.json", "--cache", "c"],
    report: ["--eval-rows", "rows", "--metrics", "m.json", "--run-summary", "summary.json",
             "--run-operations", "o.json", "--csv", "r.csv", "--html", "r.html", "--plot-metrics", "pm.json",
             "--plot-latency", "pl.json"],
}  # fmt: skip


@pytest.mark.parametrize("stage", list(STAGE_ARGS), ids=lambda stage: stage.__name__)
@pytest.mark.parametrize(
    "change,message",
    [
        (lambda uc: rename(uc["data"], "inputs", "input"), "conf/use_cases/uc.yaml: data.input: unknown key (did you"),
        (lambda uc: rename(uc, "dataset", "datset"), "conf/use_cases/uc.yaml: datset: unknown key (did you mean"),
        (lambda uc: uc.update(variant="v9"), "use_cases.uc.variant: no variant 'v9' in conf/use_cases/uc.yaml"),
    ],
    ids=["input", "datset", "variant"],
)
def test_every_stage_refuses_params_a_dvc_exp_run_composed_from_a_conf_typo(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str],
    stage: Any, change: Any, message: str,
) -> None:  # fmt: skip
    params = stage_project(tmp_path)
    change(params["use_cases"]["uc"])
    (tmp_path / "params.yaml").write_text(json.dumps(params))
    write(tmp_path / "d.jsonl", [row("https://a")])
    monkeypatch.chdir(tmp_path)
    assert stage.main(["--use-case", "uc", *STAGE_ARGS[stage]]) == 1
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert sorted(p.name for p in tmp_path.iterdir()) == [".dvc", "conf", "d.jsonl", "params.yaml"]  # wrote nothing


@pytest.mark.parametrize("by_env", [None, {"dev": "d.jsonl", "pr": "p.jsonl", "prod": "d.jsonl"}])
@pytest.mark.parametrize("kind", sorted(scaffold.KINDS))
def test_the_configs_the_catalogue_writes_fit_the_schema(kind: str, by_env: dict[str, str] | None) -> None:
    """`llmops new`, `add-use-case` and `import-experiment` all write through catalogue.render_config."""
    llm_node, prompt, output = scaffold.KINDS[kind]
    spec = catalogue.UseCaseSpec(
        name="faq", dataset="d.jsonl", flow="f", eval_flow="e", inputs=("question",), label="answer",
        mapping={"expected": "data.answer", "predicted": f"outputs.{output}"}, prediction=output, correct="correct",
        llm_node=llm_node, prompt=prompt, datasets_by_env=by_env,
    )  # fmt: skip
    renamed = dataclasses.replace(spec, name="faq2", inputs={"q": "question"}, prompt=None)  # a renamed column
    for written in (spec, renamed):
        (body,) = yaml.safe_load(catalogue.render_config(written)).values()
        assert conf_schema.problems(conf_schema.UseCase, body) == []
