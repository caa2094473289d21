"""Bad input under real DVC: a dataset that fails validation keeps the previous prepared rows, and a conf typo
composed by `dvc exp run` is named by the first stage. Only prepare runs: no LLM is involved."""

from __future__ import annotations

from conftest import Project

UC = "web_classification"
DATASET = f"use_cases/{UC}/data/pages.jsonl"
PREPARED = f"data/{UC}/prepared.jsonl"


def test_a_failed_prepare_keeps_the_previous_prepared_rows_and_lock(reproduced: Project) -> None:
    project = reproduced  # prepared (every stage reproduced) and committed
    prepared, lock = (project.root / PREPARED).read_bytes(), (project.root / "dvc.lock").read_text()
    dataset = project.root / DATASET
    dataset.write_bytes(dataset.read_bytes() + b'{"url": "https://caf\xe9.example", "text": "t", "category": "News"}\n')

    failed = project.sh("dvc", "repro", f"prepare@{UC}", check=False)
    assert failed.returncode != 0
    assert f"{DATASET}:73: not valid UTF-8 (byte 0xe9 at column 21)" in failed.stderr
    assert "Traceback" not in failed.stdout + failed.stderr
    assert (project.root / PREPARED).read_bytes() == prepared  # persist: DVC did not delete it before the run
    assert (project.root / "dvc.lock").read_text() == lock
    # What DVC itself does before any stage runs ("Verifying data sources"), as the README says: the dataset's
    # .dvc file now records the edited file. Going back is git checkout + dvc checkout.
    assert "M " + DATASET + ".dvc" in project.sh("git", "status", "--short").stdout
    project.sh("git", "checkout", "-q", f"{DATASET}.dvc")
    project.sh("dvc", "checkout", "-q", "--force", DATASET)
    assert project.repro(f"prepare@{UC}") == []  # the kept rows are the ones dvc.lock records
    assert (project.root / PREPARED).read_bytes() == prepared
    assert project.sh("git", "status", "--short").stdout == ""


def test_dvc_exp_run_composing_a_conf_typo_is_stopped_by_the_first_stage_naming_the_file(reproduced: Project) -> None:
    project = reproduced
    conf = project.root / "conf" / "use_cases" / f"{UC}.yaml"
    conf.write_text(conf.read_text().replace("    inputs: [url, text]", "    input: [url, text]", 1))
    project.commit("a typo")
    result = project.sh("dvc", "exp", "run", f"prepare@{UC}", check=False)
    assert result.returncode != 0
    out = result.stdout + result.stderr
    assert f"prepare: conf/use_cases/{UC}.yaml: data.input: unknown key (did you mean 'inputs'?)" in out
    assert "Traceback" not in out and "KeyError" not in out
