"""Reports: CSV of every row, and an HTML page that renders offline in a real browser."""

from __future__ import annotations

import csv
import io
import json
import re
from pathlib import Path

import pytest
import yaml
from browser import assert_clean, open_page
from conftest import REPO

from stages import report
from stages.results import charts, reporting
from stages.results.formatting import headline_text, judges
from stages.results.rows import Columns, VariantReport, flatten_rows, side_by_side

ROWS = [
    {"row_id": f"r{i}", "url": f"https://e.com/{i}", "category": label,
     "outputs": {"category": guess, "raw": f" {guess}", "valid": guess != "Other"},
     "eval": {"correct": label == guess}, "latency_s": 0.1 * i, "run_error": None, "eval_error": None}
    for i, (label, guess) in enumerate([("News", "News"), ("News", "Movie"), ("Movie", "Movie"), ("App", "Other")])
]  # fmt: skip
COLUMNS = Columns(inputs=("url",), label="category", prediction="category", raw_answer="raw", correct="correct")
METRICS = {
    "accuracy": 0.5,
    "macro_precision": 0.5,
    "macro_recall": 0.5,
    "rows": 4,
    "eval_errors": 0,
    "precision": {"App": 0.0, "Movie": 0.5, "News": 1.0},
    "recall": {"App": 0.0, "Movie": 1.0, "News": 0.5},
}
RUN = {"errors": 0, "invalid_answers": 1, "latency_s": {"p50": 0.2, "p95": 0.3}}


def test_csv_has_every_row_with_inputs_and_results() -> None:
    records = flatten_rows(ROWS, COLUMNS)
    table = list(csv.DictReader(io.StringIO(reporting.to_csv(records))))
    assert [r["row_id"] for r in table] == ["r0", "r1", "r2", "r3"]
    assert table[3] == {
        "row_id": "r3",
        "url": "https://e.com/3",
        "label": "App",
        "prediction": "Other",
        "correct": "False",
        "raw_answer": " Other",
        "latency_s": "0.30000000000000004",
        "error": "",
    }


def test_confusion_counts_unknown_predictions_as_their_own_column() -> None:
    labels, predicted, counts = charts.confusion(flatten_rows(ROWS, COLUMNS))
    assert labels == ["App", "Movie", "News"] and predicted == ["App", "Movie", "News", "Other"]
    assert counts[("News", "Movie")] == 1 and counts[("App", "Other")] == 1


HEADLINE = {"accuracy": {"value": 0.5, "ci_low": 0.0, "ci_high": 1.0, "rows": 4}}
V2_ROWS = [
    {**row, "outputs": {**row["outputs"], "category": guess}, "eval": {"correct": row["category"] == guess}}
    for row, guess in zip(ROWS, ["Movie", "News", "Movie", "App"], strict=True)
]  # r0 broken, r1 fixed, r2 same, r3 fixed


def variant(name: str, rows: list[dict], headline: dict) -> VariantReport:
    return VariantReport(name, flatten_rows(rows, COLUMNS), {**METRICS, "headline": headline}, RUN)


def test_rows_side_by_side_mark_each_flip() -> None:
    variants = [variant("v1", ROWS, HEADLINE), variant("v2", V2_ROWS, HEADLINE)]
    rows = side_by_side(variants, COLUMNS.inputs)
    assert [row["flip"] for row in rows] == ["broken", "fixed", "same", "fixed"]
    assert rows[1]["v1.prediction"] == "Movie" and rows[1]["v2.prediction"] == "News"
    assert list(rows[0])[:3] == ["row_id", "url", "label"]
    header = next(csv.reader(io.StringIO(reporting.to_csv(rows))))
    assert header[-1] == "flip" and "v1.raw_answer" in header and "v2.correct" in header


def test_html_report_renders_offline_in_chromium(tmp_path: Path) -> None:
    comparison = {"delta": 0.25, "p_value": 0.62, "verdict": "no significant difference", "test": "McNemar exact"}
    v2_headline = {"accuracy": {"value": 0.75, "ci_low": 0.25, "ci_high": 1.0, "rows": 4, **comparison}}
    variants = [variant("v1", ROWS, HEADLINE), variant("v2", V2_ROWS, v2_headline)]
    rows = side_by_side(variants, COLUMNS.inputs)
    page = tmp_path / "report.html"
    page.write_text(reporting.render_html("uc: evaluation report", {"variant": "v2"}, variants, rows, 80, 50, True))
    html = page.read_text()
    external = re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""", html)
    assert external == [], "the report must not load anything from the network"

    screenshot = tmp_path / "report.png"
    rendered = open_page(page, screenshot=screenshot)
    assert_clean(rendered)  # no console error or warning, no request leaving 127.0.0.1
    dom = rendered.dom
    assert "uc: evaluation report" in dom
    assert dom.count("<svg") == 3  # headline metrics per variant with CIs, per-class precision/recall, confusion
    # The flow logged its own accuracy too (the table of logged metrics): the card says which one it is.
    assert re.search(r'<div class="k">accuracy \(headline\)</div><div class="v">75\.0%</div>', dom)
    assert "accuracy (logged by the flow)" in dom
    assert "vs v1: +25.0%, p=0.62, no significant difference" in dom
    assert dom.count('<tr class="fixed"') == 2 and dom.count('<tr class="broken"') == 1
    assert 'data-show="fixed broken">flipped (3)</button>' in dom
    assert screenshot.stat().st_size > 20_000  # a page with charts, not a blank one


def test_a_single_variant_report_lists_mistakes_first() -> None:
    variants = [variant("v1", ROWS, HEADLINE)]
    rows = side_by_side(variants, COLUMNS.inputs)
    assert "flip" not in rows[0]
    html = reporting.render_html("uc", {}, variants, rows, 80, 50)
    assert html.count('<tr class="bad" data-flip="">') == 2 and '<div class="filters">' not in html
    assert headline_text(HEADLINE) == "accuracy 50.0% [0.0%, 100.0%]"


def test_dvc_plots_data_headline_metrics_with_cis_and_latency_per_variant() -> None:
    comparison = {"delta": 0.25, "p_value": 0.62, "verdict": "no significant difference", "test": "McNemar exact"}
    judged = {"relevance": {"value": 3.25, "ci_low": 2.5, "ci_high": 4.0, "rows": 4},
              "fluency": {"value": None, "ci_low": None, "ci_high": None, "rows": 0}}  # fmt: skip
    v2_headline = {"accuracy": {"value": 0.75, "ci_low": 0.25, "ci_high": 1.0, "rows": 4, **comparison}, **judged}
    v1 = variant("v1", ROWS, {**HEADLINE, "relevance": {**judged["relevance"], "value": 3.0}})
    v2_rows = [*V2_ROWS, {**V2_ROWS[0], "row_id": "r9", "latency_s": None}]
    variants = [v1, variant("v2", v2_rows, v2_headline)]
    assert charts.headline_points(variants) == [  # baseline first; a metric without a value has no bar
        {"metric": "accuracy", "variant": "v1", "value": 0.5, "ci_low": 0.0, "ci_high": 1.0, "kind": "rate"},
        {"metric": "accuracy", "variant": "v2", "value": 0.75, "ci_low": 0.25, "ci_high": 1.0, "kind": "rate"},
        {"metric": "relevance", "variant": "v1", "value": 3.0, "ci_low": 2.5, "ci_high": 4.0, "kind": "score"},
        {"metric": "relevance", "variant": "v2", "value": 3.25, "ci_low": 2.5, "ci_high": 4.0, "kind": "score"},
    ]
    curve = [(25.0, 0.0), (50.0, 0.1), (75.0, 0.2), (100.0, 0.3)]  # fastest first; no latency, no point
    assert charts.latency_points(variants) == [
        {"variant": name, "rows_pct": pct, "latency_s": latency} for name in ("v1", "v2") for pct, latency in curve
    ]


def test_judge_scores_and_details_for_a_generative_use_case() -> None:
    relevance, fluency = {"mean": 3.25, "scored": 4, "errors": 1}, {"scored": 0, "errors": 5}
    result = {"relevance": {"value": 3.25, "ci_low": 2.9, "ci_high": 3.6, "rows": 4, "delta": 0.5, "p_value": 0.01,
                            "verdict": "better", "test": "paired bootstrap"},
              "similarity": {"value": 0.61, "ci_low": 0.5, "ci_high": 0.7, "rows": 5}}  # fmt: skip
    assert headline_text(result, "v1") == (
        "relevance 3.25 [2.90, 3.60] +0.50 vs v1 (better)  similarity 61.0% [50.0%, 70.0%]"
    )
    metrics = {"similarity": 0.61, "relevance": relevance, "fluency": fluency, "rows": 5, "eval_errors": 0,
               "headline": result}  # fmt: skip
    assert judges(metrics) == {"relevance": relevance, "fluency": fluency}
    columns = Columns(inputs=("question",), label="answer", prediction="answer", raw_answer="answer",
                                correct="similar", details=("similarity", "relevance", "relevance_error"))  # fmt: skip
    row = {"row_id": "r0", "question": "Q?", "answer": "A.", "outputs": {"answer": "B."},
           "eval": {"similar": False, "similarity": 0.2, "relevance": None, "relevance_error": "judge answer 'x'"},
           "latency_s": 0.1}  # fmt: skip
    record = flatten_rows([row], columns)[0]
    assert list(record) == ["row_id", "question", "label", "prediction", "correct", "similarity", "relevance",
                            "relevance_error", "raw_answer", "latency_s", "error"]  # fmt: skip
    part = VariantReport("v2", [record], metrics, RUN)
    html = reporting.render_html("chat", {}, [part], side_by_side([part], columns.inputs), 80, 50)
    assert '<div class="k">relevance</div><div class="v">3.25 / 5</div>' in html
    assert '<div class="k">similarity (headline)</div><div class="v">61.0%</div>' in html  # the flow logs one too
    assert '<div class="k">relevance errors</div><div class="v">1</div><div class="n">4 scored, 1 unparseable' in html
    assert '<div class="k">fluency errors</div><div class="v">5</div><div class="n">0 scored, 5 unparseable' in html
    assert "<td>judge answer &#39;x&#39;</td>" in html  # escaped by Jinja2's autoescape (MarkupSafe)


def test_the_report_stage_names_an_unknown_report_key(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / ".dvc").mkdir()
    (tmp_path / "conf").mkdir()
    (tmp_path / "conf" / "config.yaml").write_text("defaults: []\n")
    params = yaml.safe_load((REPO / "params.yaml").read_text())
    params["use_cases"]["chat"]["report"]["scores"] = ["similarity"]
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    monkeypatch.chdir(tmp_path)
    files = ["--eval-rows", "r", "--metrics", "m", "--run-summary", "s", "--run-operations", "o", "--csv", "c",
             "--html", "h", "--plot-metrics", "pm", "--plot-latency", "pl"]  # fmt: skip
    assert report.main(["--use-case", "chat", *files]) == 1
    assert "conf/use_cases/chat.yaml: report.scores: unknown key (known: " in capsys.readouterr().err


def test_the_llm_requests_card_shows_cache_hits_and_tokens() -> None:
    run = {**RUN, "tokens": {"prompt": 40, "completion": 4}}
    operations = {"cache": {"hits": 3, "misses": 1, "errors": 0}, "wall_s": 2.5}  # run/operations.json
    records = flatten_rows(ROWS, COLUMNS)
    cached = VariantReport("v1", records, {**METRICS, "headline": HEADLINE}, run, operations)
    html = reporting.render_html("uc", {}, [cached], side_by_side([cached], COLUMNS.inputs), 60, 50)
    assert '<div class="k">LLM requests</div><div class="v">4</div><div class="n">3 from the cache · 44 tokens' in html
    assert "<td>2.5 s</td>" in html  # the wall time in the usage table
    plain = [variant("v1", ROWS, HEADLINE)]
    assert "LLM requests" not in reporting.render_html("uc", {}, plain, side_by_side(plain, ()), 60, 50)


def test_each_variant_names_the_node_variants_it_ran() -> None:
    run = {**RUN, "node_variants": {"rewrite": "variant_1", "answer": "variant_0"}}
    records = flatten_rows(ROWS, COLUMNS)
    part = VariantReport("v1", records, {**METRICS, "headline": HEADLINE}, run)
    html = reporting.render_html("uc", {}, [part], side_by_side([part], COLUMNS.inputs), 60, 50)
    assert '<div class="k">node rewrite</div><div class="v">variant_1</div>' in html
    assert '<div class="k">node answer</div><div class="v">variant_0</div>' in html


def test_the_report_draws_the_headline_metrics_power_curve(tmp_path: Path) -> None:
    for name, rows in (("v1", ROWS), ("v2", V2_ROWS)):
        (tmp_path / f"{name}.jsonl").write_text("".join(json.dumps(row) + "\n" for row in rows))
    use_case = {"metrics": {"accuracy": "correct", "other": "correct"}}
    rows_of = lambda name: [json.loads(line) for line in (tmp_path / f"{name}.jsonl").read_text().splitlines()]  # noqa: E731
    curve = reporting.power_curve(use_case, rows_of, "v2", "v1")
    assert curve is not None and (curve.metric, curve.rows, curve.rate) == ("accuracy", 4, True)
    assert curve.note.endswith("of rows flipped against v1") and curve.drops[0] == 0 and curve.drops[-1] == 1
    assert curve.detection == sorted(curve.detection) and curve.mde is None  # 4 rows: no drop is detectable
    alone = reporting.power_curve(use_case, rows_of, "v1", "v1")
    assert alone is not None and alone.note == "one variant: a drop concentrated on the rows it breaks"
    assert reporting.power_curve({"metrics": {}}, rows_of, "v1", "v1") is None
    variants = [variant("v1", ROWS, HEADLINE)]
    rows = side_by_side(variants, COLUMNS.inputs)
    html = reporting.render_html("uc", {}, variants, rows, 60, 50, power=curve)
    assert html.count("<svg") == reporting.render_html("uc", {}, variants, rows, 60, 50).count("<svg") + 1
    assert "Power: accuracy on 4 rows (" in html and "probability of detection" in html
