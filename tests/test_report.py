"""Reports: CSV of every row, and an HTML page that renders offline in a real browser."""

from __future__ import annotations

import csv
import io
import re
from pathlib import Path

from browser import assert_clean, open_page

from stages.core import reporting

ROWS = [
    {"row_id": f"r{i}", "url": f"https://e.com/{i}", "category": label,
     "outputs": {"category": guess, "raw": f" {guess}", "valid": guess != "Other"},
     "eval": {"correct": label == guess}, "latency_s": 0.1 * i, "run_error": None, "eval_error": None}
    for i, (label, guess) in enumerate([("News", "News"), ("News", "Movie"), ("Movie", "Movie"), ("App", "Other")])
]  # fmt: skip
COLUMNS = reporting.Columns(
    inputs=("url",), label="category", prediction="category", raw_answer="raw", correct="correct"
)
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
    records = reporting.flatten_rows(ROWS, COLUMNS)
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
    labels, predicted, counts = reporting.confusion(reporting.flatten_rows(ROWS, COLUMNS))
    assert labels == ["App", "Movie", "News"] and predicted == ["App", "Movie", "News", "Other"]
    assert counts[("News", "Movie")] == 1 and counts[("App", "Other")] == 1


def test_html_report_renders_offline_in_chromium(tmp_path: Path) -> None:
    records = reporting.flatten_rows(ROWS, COLUMNS)
    page = tmp_path / "report.html"
    page.write_text(
        reporting.render_html("uc: evaluation report", {"variant": "v1"}, METRICS, RUN, records, 80, 50, confusion=True)
    )
    html = page.read_text()
    external = re.findall(r"""(?:src|href)\s*=\s*["']?(?:https?:)?//|url\(\s*["']?(?:https?:)?//|@import""", html)
    assert external == [], "the report must not load anything from the network"

    screenshot = tmp_path / "report.png"
    rendered = open_page(page, screenshot=screenshot)
    assert_clean(rendered)  # no console error or warning, no request leaving 127.0.0.1
    dom = rendered.dom
    assert "uc: evaluation report" in dom
    assert dom.count("<svg") == 3  # headline metrics, per-class precision/recall, confusion matrix
    assert re.search(r'<div class="k">accuracy</div><div class="v">50\.0%</div>', dom)
    assert dom.count('<tr class="bad">') == 2 and dom.count('<tr class="ok">') == 2
    assert screenshot.stat().st_size > 20_000  # a page with charts, not a blank one


def test_dvc_plots_data_headline_metrics_and_latency_curve() -> None:
    assert reporting.headline_points(METRICS) == [
        {"metric": "accuracy", "value": 0.5, "kind": "rate"},
        {"metric": "macro_precision", "value": 0.5, "kind": "rate"},
        {"metric": "macro_recall", "value": 0.5, "kind": "rate"},
    ]
    judges = {"groundedness": {"scored": 4, "errors": 1, "mean": 2.5}, "faithfulness": {"scored": 0, "errors": 5}}
    metrics = {"similarity": 0.61, "relevance": 3.25, "judge_errors": 2, "rows": 5, **judges}
    assert reporting.headline_points(metrics, ("relevance",)) == [
        {"metric": "similarity", "value": 0.61, "kind": "rate"},
        {"metric": "relevance", "value": 3.25, "kind": "score"},
        {"metric": "groundedness", "value": 2.5, "kind": "judge (1-5)"},  # a judge with no score has no bar
    ]
    records = reporting.flatten_rows([*ROWS, {**ROWS[0], "row_id": "r9", "latency_s": None}], COLUMNS)
    assert reporting.latency_points(records) == [  # fastest first; a row without a latency is left out
        {"rows_pct": 25.0, "latency_s": 0.0},
        {"rows_pct": 50.0, "latency_s": 0.1},
        {"rows_pct": 75.0, "latency_s": 0.2},
        {"rows_pct": 100.0, "latency_s": 0.3},
    ]


def test_headline_rates_leave_out_counts() -> None:
    assert reporting.rates(METRICS) == {"accuracy": 0.5, "macro_precision": 0.5, "macro_recall": 0.5}


def test_scores_and_details_for_a_generative_use_case() -> None:
    metrics = {"similarity": 0.61, "similar": 0.4, "relevance": 3.25, "judge_errors": 2, "rows": 5, "eval_errors": 0}
    scores = ("similarity", "relevance")
    assert reporting.rates(metrics, scores) == {"similar": 0.4}  # judge_errors is a count, not a rate
    assert reporting.score_values(metrics, scores) == {"similarity": 0.61, "relevance": 3.25}
    columns = reporting.Columns(inputs=("question",), label="answer", prediction="answer", raw_answer="answer",
                                correct="similar", details=("similarity", "relevance"), scores=scores)  # fmt: skip
    row = {"row_id": "r0", "question": "Q?", "answer": "A.", "outputs": {"answer": "B."},
           "eval": {"similar": False, "similarity": 0.2, "relevance": None}, "latency_s": 0.1}  # fmt: skip
    record = reporting.flatten_rows([row], columns)[0]
    assert list(record) == ["row_id", "question", "label", "prediction", "correct", "similarity", "relevance",
                            "raw_answer", "latency_s", "error"]  # fmt: skip
    html = reporting.render_html("chat", {}, metrics, RUN, [record], 80, 50, scores=scores)
    assert '<div class="k">relevance</div><div class="v">3.25</div>' in html
    assert '<div class="k">similar</div><div class="v">40.0%</div>' in html
    assert '<div class="k">judge errors</div><div class="v">2</div>' in html
