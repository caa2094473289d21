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
# with its datum as aria-label.
CHARTS_DRAWN = f'document.querySelectorAll(".vega-embed svg.marks").length === {2 * len(USE_CASES)}'
BAR = re.compile(r'aria-label="value: ([-\d.e]+); metric: (\w+); rev: ([^"]+)" role="graphics-symbol" '
                 r'aria-roledescription="bar"')  # fmt: skip
POINT = re.compile(r'aria-label="rows answered within that time \(%\): [\d.]+; latency \(s\): [-\d.e]+; '
                   r'rev: ([^"]+)" role="graphics-symbol" aria-roledescription="point"')  # fmt: skip


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


def bars(page: Page, use_case: str) -> dict[tuple[str, str], float]:
    """The headline bars drawn for `use_case`: (revision, metric) -> value."""
    return {(rev, metric): float(value) for value, metric, rev in BAR.findall(chart(page, use_case, "metrics"))}


def headline(project: Project, use_case: str) -> dict[str, float]:
    points = json.loads((project.root / "data" / use_case / "report" / "plots" / "metrics.json").read_text())
    return {point["metric"]: point["value"] for point in points}


def test_plots_show_and_diff_render_offline(
    project: Project, stub_llm: StubLLM, offline_template: Path, tmp_path: Path
) -> None:
    (project.root / ".llmops" / "plots").mkdir(parents=True)
    shutil.copy(offline_template, project.root / ".llmops" / "plots" / "offline.html")  # what `make vega` builds
    selected = f"use_cases=[{','.join(USE_CASES)}]"
    project.params("env=pr", selected)
    project.sh("dvc", "repro", *(f"report@{use_case}" for use_case in USE_CASES))
    project.commit("v1, pr subset")
    v1 = {use_case: headline(project, use_case) for use_case in USE_CASES}
    stub_llm.script({"Web page categories:": "News"})  # v2's prompt: one answer for every page
    project.params("env=pr", selected, f"use_cases.{UC}.variant=v2")
    project.sh("dvc", "repro", *(f"report@{use_case}" for use_case in USE_CASES))
    project.commit("v2 for web_classification")
    v2_accuracy = headline(project, UC)["accuracy"]
    assert v2_accuracy != v1[UC]["accuracy"]

    shown = project.sh("dvc", "plots", "show")  # the template comes from .dvc/config, no option needed
    assert (project.root / "dvc_plots" / "index.html").as_uri() in shown.stdout
    page = open_page(project.root / "dvc_plots" / "index.html", tmp_path / "show.png", ready=CHARTS_DRAWN)
    assert_clean(page)  # no console error or warning, nothing requested beyond the file itself
    assert "cdn.jsdelivr.net" not in (project.root / "dvc_plots" / "index.html").read_text()
    for use_case in USE_CASES:
        assert bars(page, use_case) == {
            ("workspace", metric): value for metric, value in headline(project, use_case).items()
        }
        rows = len((project.root / "data" / use_case / "prepared.jsonl").read_text().splitlines())
        assert POINT.findall(chart(page, use_case, "latency")) == ["workspace"] * rows

    project.sh("dvc", "plots", "diff", "HEAD~1", "HEAD", "--out", "diff_plots")
    page = open_page(project.root / "diff_plots" / "index.html", tmp_path / "diff.png", ready=CHARTS_DRAWN)
    assert_clean(page)
    assert bars(page, UC)[("HEAD~1", "accuracy")] == v1[UC]["accuracy"]
    assert bars(page, UC)[("HEAD", "accuracy")] == v2_accuracy
    for use_case in USE_CASES:  # each revision's bars and latency curve
        assert bars(page, use_case) == {
            **{("HEAD~1", metric): value for metric, value in v1[use_case].items()},
            **{("HEAD", metric): value for metric, value in headline(project, use_case).items()},
        }
        rows = len((project.root / "data" / use_case / "prepared.jsonl").read_text().splitlines())
        assert sorted(POINT.findall(chart(page, use_case, "latency"))) == ["HEAD"] * rows + ["HEAD~1"] * rows
