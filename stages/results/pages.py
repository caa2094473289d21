"""The HTML pages' Jinja2 environment: templates in `templates/` (package data), autoescaped.

Builders hand a template plain values (autoescaped when rendered); HTML they made themselves (an inline SVG chart,
a trace waterfall) goes through `trusted`.
"""

from __future__ import annotations

import functools
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from importlib import resources
from typing import Any

import jinja2
from markupsafe import Markup

# The pages' style sheet, for pages that still assemble their HTML piecewise (the monitor dashboard).
PAGE_CSS = "\n" + resources.files("stages.results").joinpath("templates", "page.css").read_text(encoding="utf-8")


@dataclass(frozen=True)
class Card:
    """A figure on a page: its title, value and a note (note_class: n, better or worse)."""

    title: str
    value: str
    note: str = ""
    note_class: str = "n"


@dataclass(frozen=True)
class Table:
    """A plain table: its header cells and rows of cells."""

    head: Sequence[Any]
    rows: Sequence[Sequence[Any]] = field(default_factory=list)


@functools.cache
def environment() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("stages.results", "templates"), autoescape=True, keep_trailing_newline=True,
        undefined=jinja2.StrictUndefined,
    )  # fmt: skip


def render(template: str, **values: Any) -> str:
    """A page: `template` (a file in templates/) rendered with `values`, autoescaped."""
    return environment().get_template(template).render(**values)


def trusted(fragments: Iterable[str]) -> list[Markup]:
    """HTML this package built itself (inline SVG, trace waterfalls), inserted as it is."""
    return [Markup(fragment) for fragment in fragments]


def card(title: str, value: str, note: str = "", note_class: str = "n") -> Markup:
    """One card's HTML, for pages that still assemble their HTML piecewise."""
    macros = environment().get_template("macros.html.jinja2").module
    return Markup(macros.card(Card(title, value, note, note_class)))  # type: ignore[attr-defined]
