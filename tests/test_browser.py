"""The browser check itself: it must catch console errors, uncaught exceptions and requests leaving 127.0.0.1."""

from __future__ import annotations

import contextlib
import re
from pathlib import Path

import pytest
from browser import assert_clean, chromium_devtools, is_external, open_page


def write(tmp_path: Path, body: str) -> Path:
    page = tmp_path / "page.html"
    page.write_text(
        f'<!doctype html><html><head><meta charset="utf-8"><title>t</title></head><body>{body}</body></html>'
    )
    return page


def test_a_clean_page_passes_with_its_dom_and_a_screenshot(tmp_path: Path) -> None:
    source = write(tmp_path, "<h1>hello</h1><script>document.body.dataset.done = 'yes'</script>")
    page = open_page(source, screenshot=tmp_path / "page.png", ready="document.body.dataset.done === 'yes'")
    assert_clean(page)
    assert "<h1>hello</h1>" in page.dom and 'data-done="yes"' in page.dom
    assert page.requests == [source.as_uri()]
    assert (tmp_path / "page.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_console_errors_and_exceptions_fail(tmp_path: Path) -> None:
    page = open_page(write(tmp_path, "<script>console.error('boom'); console.warn('careful')</script>"
                                     "<script>null.x</script>"))  # fmt: skip
    assert page.console[:2] == ["error: boom", "warning: careful"]
    assert any(message.startswith("exception: TypeError") for message in page.console)
    with pytest.raises(AssertionError, match=r"console: error: boom(.|\n)*console: warning: careful"):
        assert_clean(page)


def test_a_request_leaving_the_machine_fails_even_though_it_cannot_succeed(tmp_path: Path) -> None:
    page = open_page(write(tmp_path, '<script src="https://example.com/x.js"></script><p>text</p>'))
    assert page.external_requests == ["https://example.com/x.js"]
    with pytest.raises(AssertionError, match=re.escape("external request: https://example.com/x.js")):
        assert_clean(page)


def test_what_counts_as_leaving_127_0_0_1() -> None:
    assert not any(map(is_external, ["file:///tmp/a.html", "data:image/png;base64,AA", "http://127.0.0.1:8000/x",
                                     "http://localhost:1/x", "blob:file:///1", "about:blank"]))  # fmt: skip
    assert all(map(is_external, ["https://cdn.jsdelivr.net/npm/vega@5", "//example.com/a.css", "http://10.0.0.1/"]))


def chromium_processes(profile: Path) -> list[str]:
    """Processes of the Chromium that uses `profile` (renderers and helpers included)."""
    flag = f"--user-data-dir={profile}".encode()
    found = []
    for proc in Path("/proc").iterdir():
        with contextlib.suppress(OSError):
            if proc.name.isdigit() and flag in (proc / "cmdline").read_bytes():
                found.append(proc.name)
    return found


def test_chromium_is_stopped_when_the_check_fails(tmp_path: Path) -> None:
    with pytest.raises(RuntimeError, match=r"Page\.navigate"), chromium_devtools(tmp_path, timeout_s=30) as browser:
        assert chromium_processes(tmp_path)
        browser.call("Page.navigate", url="file:///nowhere")  # a page command on the browser: an error reply
    assert chromium_processes(tmp_path) == []
    with pytest.raises(AssertionError, match="not ready after 2 s"):
        open_page(write(tmp_path, "<p>never ready</p>"), ready="false", timeout_s=2)
