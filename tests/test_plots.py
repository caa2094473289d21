"""`dvc plots show` and `dvc plots diff` work offline: each use case's charts render in headless Chromium."""

from __future__ import annotations

import json
import re
import shutil
from pathlib import Path

import pytest
from browser import Page, assert_clean, open_page
from conftest import REPO, Project, StubLLM

# Built by `make vega` (a dependency of `make test`); .dvc/config's plots.html_template points at it.
TEMPLATE = REPO / ".llmops" / "plots" / "offline.html"
UC = "web_classification"
# A classification use case (rates only) and chat (rates, and scores on their own axis): the plots are defined
# once for every use case (`foreach`), so two show them; the whole pipeline would take minutes.
USE_CASES = (UC, "chat")
# Two charts per use case; the template makes vega-embed draw SVG, so what was drawn is in the DOM, each mark
# with its datum as aria-label ("field: value; field: value").
CHARTS_DRAWN = f'document.querySelectorAll(".vega-embed svg.marks").length === {2 * len(USE_CASES)}'
MARK = re.compile(r'aria-label="([^"]+)" role="graphics-symbol" aria-roledescription="([a-z ]+)"')


@pytest.fixture
def offline_template() -> Path:
    if not TEMPLATE.is_file():
        pytest.fail(f"{TEMPLATE} is missing: run `make vega` (Node.js 20 + npm)")
    return TEMPLATE


def test_the_template_inlines_the_pinned_vega_bundles(offline_template: Path) -> None:
    html = offline_template.read_text()
    locked = json.loads((REPO / "tools" / "vega" / "package-lock.json").read_text())["packages"]
    for name in ("vega", "vega-lite", "vega-embed"):
        assert f"/* {name} {locked[f'node_modules/{name}']['version']} */" in html
    assert "{plot_divs}" in html and "{scripts}" not in html  # no slot for DVC's CDN <script> tags
    assert not re.search(r"<script[^>]*\ssrc=", html) and "sourceMappingURL" not in html


def chart(page: Page, use_case: str, plot: str) -> str:
    """The DOM of one chart: from its div (id = the plot file's path, DVC-style) to the next chart's."""
    start = page.dom.index(f'id="data_{use_case}_report_plots_{plot}_json"')
    following = page.dom.find('id="data_', start + 1)
    return page.dom[start : following if following > 0 else None]


def marks(page: Page, use_case: str, plot: str, role: str) -> list[dict[str, str]]:
    """The data of the marks of one role ('bar', 'rule mark', 'point') drawn in one chart."""
    return [
        dict(field.split(": ", 1) for field in label.split("; "))
        for label, mark_role in MARK.findall(chart(page, use_case, plot))
        if mark_role == role
    ]


Headline = dict[tuple[str, str, str], tuple[float, float, float]]


def drawn_headline(page: Page, use_case: str) -> Headline:
    """The headline bars and their CI whiskers: (revision, variant, metric) -> (value, ci_low, ci_high)."""
    key = ("rev", "variant", "metric")
    whiskers = {
        tuple(m[k] for k in key): (m["ci_low"], m["ci_high"]) for m in marks(page, use_case, "metrics", "rule mark")
    }
    bars = {tuple(m[k] for k in key): m["value"] for m in marks(page, use_case, "metrics", "bar")}
    assert bars.keys() == whiskers.keys(), "every bar has its CI whisker"
    return {at: (number(value), *map(number, whiskers[at])) for at, value in bars.items()}


def number(text: str) -> float:
    return float(text.replace("\u2212", "-"))  # d3-format writes a minus sign, not a hyphen


def headline(project: Project, use_case: str, rev: str) -> Headline:
    """What the report stage wrote for the plot, as `drawn_headline` reads it for revision `rev`."""
    points = json.loads((project.root / "data" / use_case / "report" / "plots" / "metrics.json").read_text())
    return {(rev, p["variant"], p["metric"]): (p["value"], p["ci_low"], p["ci_high"]) for p in points}


def drawn_latency(page: Page, use_case: str) -> list[tuple[str, str]]:
    """(revision, variant) of every point of the latency curves, sorted."""
    return sorted((m["rev"], m["variant"]) for m in marks(page, use_case, "latency", "point"))


def latency(project: Project, use_case: str, rev: str) -> list[tuple[str, str]]:
    points = json.loads((project.root / "data" / use_case / "report" / "plots" / "latency.json").read_text())
    return sorted((rev, point["variant"]) for point in points)


def test_plots_show_and_diff_render_offline(
    reproduced: Project, stub_llm: StubLLM, offline_template: Path, tmp_path: Path
) -> None:
    project = reproduced  # v1 of every use case reproduced; chat's relevance judge answered 3 (tests/conftest.py)
    (project.root / ".llmops" / "plots").mkdir(parents=True, exist_ok=True)
    shutil.copy(offline_template, project.root / ".llmops" / "plots" / "offline.html")  # what `make vega` builds
    selected = f"use_cases=[{','.join(USE_CASES)}]"
    project.params(selected)  # the plots of these use cases only; leaving the others out reruns nothing
    assert project.repro(*(f"report@{use_case}" for use_case in USE_CASES)) == []
    project.commit("v1 of two use cases")
    v1 = {use_case: headline(project, use_case, "HEAD~1") for use_case in USE_CASES}
    v1_latency = {use_case: latency(project, use_case, "HEAD~1") for use_case in USE_CASES}
    assert {variant for _, variant, _ in v1[UC]} == {"v1"}  # the selected variant is the baseline: it runs alone
    assert v1["chat"]["HEAD~1", "v1", "relevance"][0] == 3.0  # a 1-5 panel beside the rates
    stub_llm.script({"Web page categories:": "News"})  # v2's prompt: one answer for every page
    project.params(selected, f"use_cases.{UC}.variant=v2")
    assert set(project.repro(*(f"report@{use_case}" for use_case in USE_CASES))) == {
        f"{stage}@{UC}" for stage in ("run", "evaluate", "report")
    }
    project.commit("v2 beside its baseline v1 for web_classification")
    v2 = headline(project, UC, "workspace")
    assert {variant for _, variant, _ in v2} == {"v1", "v2"}
    assert v2["workspace", "v2", "accuracy"] != v2["workspace", "v1", "accuracy"]
    # The report of a real two-variant run renders offline, quietly (its screenshot is docs/img/report.png).
    report = open_page(project.root / "data" / UC / "report" / "report.html", tmp_path / "report.png")
    assert_clean(report)
    # 4 charts: headline metrics, per-class precision/recall, confusion, and (since the power work) the power curve
    assert "v2 (baseline v1)" in report.dom and report.dom.count("<svg") == 4
    assert "Power: accuracy on " in report.dom and "of rows flipped against v1" in report.dom

    shown = project.sh("dvc", "plots", "show")  # the template comes from .dvc/config, no option needed
    assert (project.root / "dvc_plots" / "index.html").as_uri() in shown.stdout
    page = open_page(project.root / "dvc_plots" / "index.html", tmp_path / "show.png", ready=CHARTS_DRAWN)
    assert_clean(page)  # no console error or warning, nothing requested beyond the file itself
    assert "cdn.jsdelivr.net" not in (project.root / "dvc_plots" / "index.html").read_text()
    for use_case in USE_CASES:  # every variant's bar with its CI whisker, every point of its latency curve
        assert drawn_headline(page, use_case) == headline(project, use_case, "workspace")
        assert drawn_latency(page, use_case) == latency(project, use_case, "workspace")
    rows = len((project.root / "data" / UC / "prepared.jsonl").read_text().splitlines())
    assert drawn_latency(page, UC) == [("workspace", "v1")] * rows + [("workspace", "v2")] * rows

    project.sh("dvc", "plots", "diff", "HEAD~1", "HEAD", "--out", "diff_plots")
    page = open_page(project.root / "diff_plots" / "index.html", tmp_path / "diff.png", ready=CHARTS_DRAWN)
    assert_clean(page)
    for use_case in USE_CASES:  # each revision's bars, whiskers and latency curves
        assert drawn_headline(page, use_case) == v1[use_case] | headline(project, use_case, "HEAD")
        assert drawn_latency(page, use_case) == sorted(v1_latency[use_case] + latency(project, use_case, "HEAD"))
