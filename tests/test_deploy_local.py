"""`llmops deploy --target local`, `smoke`, `rollback`, `evaluate-production`: real servers on the stub LLM."""

from __future__ import annotations

import json
import os
import re
import urllib.error
import urllib.request
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import yaml
from conftest import REPO, Project, StubLLM

from stages.data import datasets
from stages.deploy import local, production, router, smoke, state
from stages.deploy.spec import SpecError, load_spec
from stages.metrics import stats

UC = "web_classification"
KEY = "canary-endpoint-key-5f1c9a"  # planted: must never reach a log, a state file or an output


def score(url: str, body: object, key: str = KEY) -> tuple[int, str | None, object]:
    request = urllib.request.Request(url, json.dumps(body).encode(), {"Content-Type": "application/json",
                                                                      "Authorization": f"Bearer {key}"})  # fmt: skip
    try:
        with urllib.request.urlopen(request, timeout=60) as response:
            return response.status, response.headers.get("azureml-model-deployment"), json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, error.headers.get("azureml-model-deployment"), json.loads(error.read())


def live_weights(project: Project, key: str = KEY) -> dict[str, int]:
    port = json.loads((local.runtime(project.root, "dev", UC) / "pids" / "router.json").read_text())["port"]
    request = urllib.request.Request(f"http://127.0.0.1:{port}/health", headers={"Authorization": f"Bearer {key}"})
    with urllib.request.urlopen(request, timeout=10) as response:
        return json.loads(response.read())["weights"]


def set_weights(project: Project, green: int, blue: int) -> None:
    conf = project.root / "conf" / "deploy" / "dev.yaml"
    text = conf.read_text()
    text = text.replace("{name: green, variant: v2, weight: 10}", f"{{name: green, variant: v2, weight: {green}}}")
    text = text.replace("{name: blue, variant: v1, weight: 90}", f"{{name: blue, variant: v1, weight: {blue}}}")
    conf.write_text(text)


def wait_for_log(path: Path, lines: int, timeout_s: float = 30) -> list[dict]:
    """The production log's rows once it holds `lines` of them (or what it holds after `timeout_s`)."""
    import time

    deadline = time.monotonic() + timeout_s
    while True:
        logged = [json.loads(line) for line in path.read_text().split("\n")[:-1]]  # complete lines only
        if len(logged) >= lines or time.monotonic() > deadline:
            return logged
        time.sleep(0.1)


LOAD, SAMPLE = 400, 30  # requests sent; distinct requests sampled per deployment (green gets 41, some repeats)


def test_deploy_smoke_split_log_rollback_and_production_evaluation(project: Project) -> None:
    project.env["LLMOPS_ENDPOINT_KEY"] = KEY
    deployed = project.sh("llmops", "deploy", "--use-case", UC, "--target", "local", "--env", "dev")
    try:
        assert "green (v2): started" in deployed.stdout and "blue (v1): started" in deployed.stdout
        record = json.loads(state.path(project.root, "dev", UC).read_text())["targets"]["local"]["current"]
        url = record["record"]["url"]
        assert record["weights"] == {"green": 10, "blue": 90}

        smoked = project.sh("llmops", "smoke", "--use-case", UC, "--requests", "2")
        assert smoked.stdout.count("smoke web_classification: ok") == 2

        again = project.sh("llmops", "deploy", "--use-case", UC)  # idempotent: nothing restarts
        assert again.stdout.count("unchanged, kept") == 2 and "router: kept" in again.stdout

        # Without the key: refused, and still logged (without any header).
        assert score(url, {"url": "u", "text": "t"}, key="wrong")[0] == 401
        assert score(url, {"url": "u"})[0] == 400  # a missing input names the field
        assert "missing input text" in score(url, {"url": "u"})[2]["error"]

        # 400 requests, 8 at a time, inputs cycling over the dataset (so production rows join the ground truth).
        rows = [json.loads(line) for line in (project.root / "use_cases" / UC / "data" / "pages.jsonl").open()]
        bodies = [{"url": rows[i % len(rows)]["url"], "text": rows[i % len(rows)]["text"]} for i in range(LOAD)]
        with ThreadPoolExecutor(8) as pool:
            answers = list(pool.map(lambda body: score(url, body), bodies))
        assert all(status == 200 for status, _, _ in answers)
        served = Counter(name for _, name, _ in answers)
        # Every response names its deployment, and each request took the router's next seeded pick (after the two
        # smoke requests and the two bad ones), whatever order the 8 threads arrived in: the exact counts are known.
        # That the picks follow the weights is test_router_split_is_checked_and_follows_the_weights (10,000 picks).
        split = router.Split({"green": 10, "blue": 90}, {"green", "blue"}, seed=0)
        assert served == Counter([split.pick() for _ in range(4 + LOAD)][4:])

        # The router answers, then logs: the last lines may land a moment after the last answer.
        logged = wait_for_log(project.root / record["record"]["log"], 2 + 1 + 2 + LOAD)
        scored = [row for row in logged if row["status"] == 200]
        assert len(logged) == 2 + 1 + 2 + LOAD  # smoke, unauthorized, two bad requests, the load
        assert Counter(row["deployment"] for row in scored[2:]) == served
        assert {row["status"] for row in logged} == {200, 400, 401}
        assert all({"ts", "deployment", "variant", "status", "latency_s", "inputs"} <= set(row) for row in logged)

        # A new split is applied live; rollback restores the previous one.
        set_weights(project, 50, 50)
        project.sh("llmops", "deploy", "--use-case", UC)
        assert live_weights(project) == {"green": 50, "blue": 50}
        rolled = project.sh("llmops", "rollback", "--use-case", UC)
        assert "green 10%, blue 90%" in rolled.stdout
        assert live_weights(project) == {"green": 10, "blue": 90}
        current = json.loads(state.path(project.root, "dev", UC).read_text())["targets"]["local"]
        assert current["current"]["weights"] == {"green": 10, "blue": 90}
        assert current["previous"]["weights"] == {"green": 50, "blue": 50}

        evaluated = project.sh("llmops", "evaluate-production", "--use-case", UC, "--sample", str(SAMPLE))
        report = project.root / "reports" / "production" / f"{UC}.dev.html"
        result = json.loads(report.with_suffix(".json").read_text())
        assert result["baseline"] == "blue"
        assert result["deployments"]["green"]["rows"] == served["green"] + 2 - sum(
            1 for row in scored[:2] if row["deployment"] == "blue"
        )
        # Which load request reached which deployment depends on the 8 threads' arrival order, so each deployment's
        # distinct inputs are counted from what it answered: up to SAMPLE of them are sampled. Every load request is
        # a dataset row, joined; the smoke request (one input, sent twice) is not.
        for name in ("green", "blue"):
            load = {
                json.dumps(body, sort_keys=True) for body, (_, by, _) in zip(bodies, answers, strict=True) if by == name
            }
            smoked_here = any(row["deployment"] == name for row in scored[:2])
            sampled, joined = result["deployments"][name]["sampled"], result["deployments"][name]["joined"]
            assert sampled == min(SAMPLE, len(load) + smoked_here)
            assert joined in ({sampled - 1, sampled} if smoked_here else {sampled})
            assert result["evaluated"][name]["accuracy"]["rows"] == result["deployments"][name]["joined"]
        assert result["deployments"]["blue"]["sampled"] == SAMPLE  # 359 requests over 72 rows: the cap bites
        verdict = result["evaluated"]["green"]["accuracy"]
        assert verdict["verdict"] in ("better", "worse", "no significant difference") and "p_value" in verdict
        assert result["reference_free"]["green"]["success"]["verdict"] == "no significant difference"
        page = report.read_text()
        assert verdict["verdict"] in page and "<svg" in page and not re.search(r'(src|href)="?https?:', page)

        # A broken endpoint fails the smoke test: both deployments gone, the router answers 502.
        for name in ("green", "blue"):
            pid = json.loads((local.runtime(project.root, "dev", UC) / "pids" / f"{name}.json").read_text())["pid"]
            os.kill(pid, 15)
        broken = project.sh("llmops", "smoke", "--use-case", UC, check=False)
        assert broken.returncode == 1 and "status 502" in broken.stderr and "FAILED" in broken.stderr
    finally:
        stopped = project.sh("llmops", "undeploy", "--use-case", UC)
    assert "router" in stopped.stdout
    for path in (project.root / ".llmops" / "deploy").rglob("*"):
        if path.is_file():
            assert KEY not in path.read_text(errors="replace"), f"{path} holds the endpoint key"
    assert KEY not in deployed.stdout + deployed.stderr + evaluated.stdout + evaluated.stderr


def test_deploy_without_the_key_names_the_variable(project: Project) -> None:
    project.env.pop("LLMOPS_ENDPOINT_KEY", None)
    failed = project.sh("llmops", "deploy", "--use-case", UC, check=False)
    assert failed.returncode == 1
    assert "conf/deploy/dev.yaml: targets.local.api_key_env: environment variable LLMOPS_ENDPOINT_KEY" in failed.stderr
    assert "rollback" not in failed.stderr
    nothing = project.sh("llmops", "rollback", "--use-case", UC, check=False)
    assert nothing.returncode == 1 and "has not been deployed" in nothing.stderr


PARAMS = yaml.safe_load((REPO / "params.yaml").read_text())


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (lambda c: c["deployments"][0].update(weight=20), "conf/deploy/dev.yaml: deployment weights must sum to 100"),
        (lambda c: c["deployments"][1].update(variant="v9"), "conf/deploy/dev.yaml: deployments[1].variant 'v9'"),
        (lambda c: c["deployments"][0].pop("name"), "conf/deploy/dev.yaml: deployments[0] lacks name"),
        (lambda c: c.pop("instance"), "conf/deploy/dev.yaml: missing key 'instance'"),
        (lambda c: c["deployments"][0].update(weight="10"), "deployments[0].weight must be an integer percent"),
    ],
)
def test_bad_deploy_conf_names_file_and_key(tmp_path: Path, edit, message: str) -> None:
    conf = yaml.safe_load((REPO / "conf" / "deploy" / "dev.yaml").read_text())
    edit(conf)
    (tmp_path / "conf" / "deploy").mkdir(parents=True)
    (tmp_path / "conf" / "deploy" / "dev.yaml").write_text(yaml.safe_dump(conf))
    with pytest.raises(SpecError, match=message.replace("[", r"\[").replace("]", r"\]")):
        load_spec(tmp_path, UC, "dev", "local", PARAMS)


def test_local_target_options_are_checked(tmp_path: Path) -> None:
    conf = yaml.safe_load((REPO / "conf" / "deploy" / "dev.yaml").read_text())
    del conf["targets"]["local"]["api_key_env"]
    (tmp_path / "conf" / "deploy").mkdir(parents=True)
    (tmp_path / "conf" / "deploy" / "dev.yaml").write_text(yaml.safe_dump(conf))
    spec = load_spec(tmp_path, UC, "dev", "local", PARAMS)
    with pytest.raises(SpecError, match=r"conf/deploy/dev.yaml: missing key targets.local.api_key_env"):
        local.endpoint_key(spec, tmp_path)


def test_a_pid_file_names_one_process_by_its_pid_and_start(tmp_path: Path) -> None:
    """`llmops deploy` keeps and `undeploy` stops only the process that wrote a pid file: a recycled pid (a later
    start) or a gone process is not ours, and is never signalled."""
    import subprocess
    import sys

    from stages.llm.llm_server import started_at

    child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        pid_file, started = tmp_path / "blue.json", started_at(child.pid)
        assert isinstance(started, int) and started_at(child.pid) == started
        pid_file.write_text(json.dumps({"pid": child.pid, "started": started + 1, "port": 1}))  # the pid, recycled
        assert local._running(pid_file) is None and not local._stop(pid_file)
        assert child.poll() is None and not pid_file.exists()  # not signalled; the stale file is gone
        pid_file.write_text(json.dumps({"pid": child.pid, "port": 1}))  # an earlier version's file: the command line
        assert local._running(pid_file) is None and child.poll() is None
        pid_file.write_text(json.dumps({"pid": child.pid, "started": started, "port": 1}))
        assert local._running(pid_file) == {"pid": child.pid, "started": started, "port": 1}
        assert local._stop(pid_file) and started_at(child.pid) is None  # stopped (and reaped: it was our child)
    finally:
        child.kill()
        child.wait()


def test_router_split_is_checked_and_follows_the_weights() -> None:
    with pytest.raises(router.WeightError, match="sum to 100"):
        router.check_weights({"green": 10, "blue": 80}, {"green", "blue"})
    with pytest.raises(router.WeightError, match="unknown deployment red"):
        router.check_weights({"red": 100}, {"green", "blue"})
    split = router.Split({"green": 30, "blue": 70}, {"green", "blue"}, seed=1)
    picks = Counter(split.pick() for _ in range(10_000))
    assert abs(picks["green"] / 100 - 30) <= 3
    split.set({"green": 0, "blue": 100})
    assert {split.pick() for _ in range(500)} == {"blue"}


def test_state_keeps_the_previous_split_and_rollback_swaps() -> None:
    empty = {"use_case": UC, "env": "dev", "targets": {}}
    first = state.after_deploy(empty, "local", {"a": 100}, {"url": "x"})
    assert first["targets"]["local"]["previous"] is None
    second = state.after_deploy(first, "local", {"a": 50, "b": 50}, {"url": "x"})
    repeated = state.after_deploy(second, "local", {"a": 50, "b": 50}, {"url": "x"})
    assert repeated["targets"]["local"]["previous"]["weights"] == {"a": 100}  # a repeated deploy keeps it
    rolled = state.after_rollback(repeated, "local", {"url": "x"})
    assert rolled["targets"]["local"]["current"]["weights"] == {"a": 100}
    assert rolled["targets"]["local"]["previous"]["weights"] == {"a": 50, "b": 50}


def test_smoke_problems_name_what_is_wrong() -> None:
    outputs = {"category": "string", "valid": "bool", "raw": "string"}
    header = {"azureml-model-deployment": "green"}
    good = {"category": "News", "valid": True, "raw": "News"}
    assert smoke.problems(200, header, good, outputs, ["green", "blue"]) == []
    assert smoke.problems(500, header, {"error": "boom"}, outputs, ["green"]) == ["status 500 (expected 200): boom"]
    wrong = smoke.problems(200, {}, {"category": 3, "valid": "yes"}, outputs, ["green"])
    assert "missing output raw (the flow declares category, valid, raw)" in wrong
    assert "output category should be a string, got int 3" in wrong
    assert "output valid should be a bool, got str 'yes'" in wrong
    assert any("header azureml-model-deployment is None" in p for p in wrong)


def test_unpaired_comparisons() -> None:
    worse = stats.fisher_exact([True] * 90 + [False] * 10, [True] * 50 + [False] * 50)
    assert worse.verdict == "worse" and worse.effect == pytest.approx(-0.4) and worse.p_value < 0.001
    same = stats.fisher_exact([True, False] * 20, [False, True] * 20)
    assert same.verdict == "no significant difference" and same.effect == 0
    shift = stats.unpaired_bootstrap([0.2, 0.3, 0.25, 0.35] * 10, [0.6, 0.7, 0.65, 0.75] * 10)
    assert shift.verdict == "better" and shift.effect == pytest.approx(0.4)


def test_production_rows_join_the_dataset_by_inputs() -> None:
    dataset = [{"row_id": "r1", "url": "u1", "text": "t1", "category": "News"}]
    dataset[0]["row_id"] = datasets.row_id(dataset[0], datasets.Schema(("url", "text"), "category"))
    log = [
        {"deployment": "a", "variant": "v1", "status": 200, "inputs": {"url": "u1", "text": "t1"}, "outputs": {}},
        {"deployment": "a", "variant": "v1", "status": 200, "inputs": {"url": "u1", "text": "t1"}, "outputs": {}},
        {"deployment": "a", "variant": "v1", "status": 200, "inputs": {"url": "u2", "text": "t2"}, "outputs": {}},
        {"deployment": "b", "variant": "v2", "status": 500, "inputs": {"url": "u1", "text": "t1"}, "error": "x"},
    ]
    groups = production.split_by_deployment(log, dataset, {"url": "url", "text": "text"}, "category", 10, 0)
    assert [row["row_id"] for row, _ in groups["a"].joined] == [dataset[0]["row_id"]]  # duplicates counted once
    assert [row["inputs"]["url"] for row in groups["a"].unjoined] == ["u2"]
    assert groups["b"].joined == [] and groups["b"].traffic()["errors"] == 1


def test_a_maf_use_case_is_served_behind_the_same_router(project: Project, stub_llm: StubLLM) -> None:
    """web_classification_maf (the MAF workflow `llmops migrate` wrote): two deployments (v2, v1) behind the
    router, smoke test, the split, rollback; its chat requests reach the stub's completion endpoint through the
    server's bridging proxy."""
    uc = "web_classification_maf"
    project.env["LLMOPS_ENDPOINT_KEY"] = KEY
    conf = project.root / "conf" / "deploy" / "dev.yaml"
    conf.write_text(conf.read_text().replace("weight: 10}", "weight: 50}").replace("weight: 90}", "weight: 50}"))
    deployed = project.sh("llmops", "deploy", "--use-case", uc, "--target", "local", "--env", "dev")
    try:
        assert "green (v2): started" in deployed.stdout and "blue (v1): started" in deployed.stdout
        smoked = project.sh("llmops", "smoke", "--use-case", uc, "--requests", "2")
        assert smoked.stdout.count(f"smoke {uc}: ok") == 2
        current = json.loads(state.path(project.root, "dev", uc).read_text())["targets"]["local"]["current"]
        url = current["record"]["url"]
        answers = [score(url, {"url": f"https://example.org/{i}", "text": f"page {i}"}) for i in range(40)]
        assert all(status == 200 and set(body) == {"category", "valid", "raw"} for status, _, body in answers)
        assert {name for _, name, _ in answers} == {"green", "blue"}
        assert "missing input text" in score(url, {"url": "u"})[2]["error"]
        sent = [r for r in stub_llm.requests() if "example.org/" in json.dumps(r["body"])]
        assert sent and {r["path"] for r in sent} == {"/v1/completions"}  # chat bridged to the completion API
        conf.write_text(conf.read_text().replace("weight: 50}", "weight: 0}", 1).replace("weight: 50}", "weight: 100}"))
        project.sh("llmops", "deploy", "--use-case", uc)
        assert "green 50%, blue 50%" in project.sh("llmops", "rollback", "--use-case", uc).stdout
    finally:
        project.sh("llmops", "undeploy", "--use-case", uc)
