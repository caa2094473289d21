"""conf/ is the source of truth: params.yaml must be its composition, and every combination must compose."""

from __future__ import annotations

import itertools
from pathlib import Path

import pytest
import yaml
from conftest import REPO

from stages.cli import compose_params
from stages.core import variants

GROUPS = {group: sorted(p.stem for p in (REPO / "conf" / group).glob("*.yaml")) for group in ("env", "llm", "variant")}


def test_params_yaml_is_not_stale(tmp_path: Path) -> None:
    composed = tmp_path / "params.yaml"
    compose_params(REPO, [], composed)
    assert composed.read_text() == (REPO / "params.yaml").read_text(), (
        "params.yaml is stale against conf/: run `make params` (or `llmops params`) and commit it"
    )


@pytest.mark.parametrize("env,llm,variant", list(itertools.product(*GROUPS.values())))
def test_every_combination_composes(tmp_path: Path, env: str, llm: str, variant: str) -> None:
    composed = tmp_path / "params.yaml"
    compose_params(REPO, [f"env={env}", f"llm={llm}", f"variant={variant}"], composed)
    params = yaml.safe_load(composed.read_text())
    assert params["env"]["name"] == env and params["llm"]["name"] == llm
    for name, use_case in params["use_cases"].items():
        assert use_case["variant"] == variant
        assert variants.plan(name, use_case).selected == variant, name  # every use case has every variant
        for key in ("flow", "eval_flow"):
            assert (REPO / use_case[key]).is_dir(), f"{name}.{key}: {use_case[key]} does not exist"
        dataset_pointer = REPO / f"{use_case['dataset']}.dvc"
        assert dataset_pointer.is_file(), f"{name}.dataset: {use_case['dataset']} is not DVC-tracked"


def test_one_use_case_can_override_its_variant(tmp_path: Path) -> None:
    composed = tmp_path / "params.yaml"
    compose_params(REPO, ["use_cases.web_classification.variant=v2"], composed)
    use_cases = yaml.safe_load(composed.read_text())["use_cases"]
    assert variants.plan("web_classification", use_cases["web_classification"]).names == ("v1", "v2")
    assert use_cases["general_qa"]["variant"] == "v1"


@pytest.mark.parametrize(
    ("overrides", "llm", "judge"),
    [
        ([], "local", "local"),
        (["llm=openai"], "openai", "openai"),
        (["llm=openai", "llm@judge=local"], "openai", "local"),
    ],
)
def test_the_judge_follows_the_llm_unless_chosen_apart(
    tmp_path: Path, overrides: list[str], llm: str, judge: str
) -> None:
    composed = tmp_path / "params.yaml"
    compose_params(REPO, overrides, composed)
    params = yaml.safe_load(composed.read_text())
    assert (params["llm"]["name"], params["judge"]["name"]) == (llm, judge)


def test_no_secret_values_in_conf() -> None:
    for path in (REPO / "conf").rglob("*.yaml"):
        text = path.read_text()
        for marker in ("sk-", "api_key:", "AccountKey=", "password"):
            assert marker not in text, f"{path}: looks like a secret ({marker})"


def test_the_params_command_writes_the_composition(tmp_path: Path) -> None:
    # `llmops params` is what `make params` and the docs run; the tests' Project.params composes in-process.
    import subprocess
    import sys

    llmops = Path(sys.executable).parent / "llmops"
    written = subprocess.run([str(llmops), "params", "env=pr", "-o", str(tmp_path / "cli.yaml")], cwd=REPO,
                             capture_output=True, text=True, timeout=120)  # fmt: skip
    assert written.returncode == 0 and f"composed conf/ -> {tmp_path / 'cli.yaml'}" in written.stdout
    compose_params(REPO, ["env=pr"], tmp_path / "direct.yaml")
    assert (tmp_path / "cli.yaml").read_text() == (tmp_path / "direct.yaml").read_text()
    assert yaml.safe_load((tmp_path / "cli.yaml").read_text())["env"]["name"] == "pr"


def test_yaml_is_read_by_libyaml_with_the_values_of_the_safe_loader() -> None:
    from stages.core import yaml_reader

    assert yaml_reader._SafeLoader is yaml.CSafeLoader  # this build has libyaml: the fast parser is the one used
    for path in [
        REPO / "params.yaml",
        *sorted((REPO / "conf").rglob("*.yaml")),
        *sorted(REPO.glob("use_cases/*/*/*/*.yaml")),
    ]:
        text = path.read_text(encoding="utf-8")
        assert yaml_reader.load_yaml(text) == yaml.safe_load(text), path


@pytest.mark.parametrize("bad", ["a: [1, 2\nb: 3\n", "a: b: c\n", "a:\n  - 1\n - 2\n", 'x: "unterminated\n'])
def test_a_bad_yaml_document_raises_the_safe_loaders_error_at_its_mark(bad: str) -> None:
    from stages.core import yaml_reader

    errors = []
    for load in (yaml_reader.load_yaml, yaml.safe_load):
        with pytest.raises(yaml.MarkedYAMLError) as raised:
            load(bad)
        errors.append((type(raised.value), raised.value.problem_mark.line, raised.value.problem_mark.column))
    assert errors[0] == errors[1]
