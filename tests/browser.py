"""Headless Chromium, observed through the DevTools protocol: a page must render offline, quietly.

`open_page` loads a file in Debian's Chromium with the network cut off and records what the page did: every
console error or warning (console API, uncaught exceptions, browser log entries such as failed loads) and every
URL it requested. `assert_clean` fails on any of those messages and on any request leaving 127.0.0.1.

The protocol runs over `--remote-debugging-pipe` (file descriptors 3 and 4, NUL-separated JSON messages),
as Playwright does: no port to find, no listener on the machine, no websocket library.
"""

from __future__ import annotations

import base64
import contextlib
import fcntl
import json
import os
import select
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

from conftest import stop_process

CHROMIUM_FLAGS = [
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
    "--disable-component-update", "--disable-sync", "--no-first-run",
    # Any attempt to reach the network fails (and is still recorded as a request): a page that needs a CDN
    # shows it.
    "--proxy-server=127.0.0.1:9", "--host-resolver-rules=MAP * ~NOTFOUND",
    "--remote-debugging-pipe",
]  # fmt: skip
LOCAL_SCHEMES = {"file", "data", "blob", "about"}
LOOPBACK = {"127.0.0.1", "localhost", "::1"}


def chromium() -> str:
    path = shutil.which("chromium") or shutil.which("chromium-browser")
    assert path, "Chromium is required for report tests: `make test` installs it (apt-get install chromium)"
    return path


def is_external(url: str) -> bool:
    """A URL that leaves the machine: anything but local schemes and 127.0.0.1 (loopback)."""
    parts = urlsplit(url)
    return parts.scheme not in LOCAL_SCHEMES and parts.hostname not in LOOPBACK


@dataclass
class Page:
    """What Chromium made of a page: the DOM after it rendered, its console errors/warnings, its requests."""

    dom: str
    console: list[str] = field(default_factory=list)
    requests: list[str] = field(default_factory=list)
    screenshot: Path | None = None

    @property
    def external_requests(self) -> list[str]:
        return [url for url in self.requests if is_external(url)]


def assert_clean(page: Page) -> None:
    """Fail, listing them, on console errors or warnings and on requests leaving 127.0.0.1."""
    problems = [f"console: {message}" for message in page.console]
    problems += [f"external request: {url}" for url in page.external_requests]
    assert not problems, "the page is not clean offline:\n  " + "\n  ".join(problems)


class DevTools:
    """A DevTools protocol client over Chromium's debugging pipe; keeps every event it reads."""

    def __init__(self, commands: int, replies: int, timeout_s: float) -> None:
        self.commands, self.replies, self.timeout_s = commands, replies, timeout_s
        self.events: list[dict[str, Any]] = []
        self._buffer = b""
        self._next_id = 0

    def _read(self, deadline: float) -> dict[str, Any]:
        while b"\0" not in self._buffer:
            ready, _, _ = select.select([self.replies], [], [], max(0.0, deadline - time.monotonic()))
            if not ready:
                raise TimeoutError("Chromium did not answer in time")
            chunk = os.read(self.replies, 1 << 20)
            if not chunk:
                raise EOFError("Chromium closed the debugging pipe (crashed?)")
            self._buffer += chunk
        message, self._buffer = self._buffer.split(b"\0", 1)
        return json.loads(message)

    def call(self, method: str, session: str | None = None, **params: Any) -> dict[str, Any]:
        """Send a command and return its result; events read meanwhile go to `events`."""
        self._next_id += 1
        message: dict[str, Any] = {"id": self._next_id, "method": method, "params": params}
        if session:
            message["sessionId"] = session
        os.write(self.commands, json.dumps(message).encode() + b"\0")
        deadline = time.monotonic() + self.timeout_s
        while True:
            reply = self._read(deadline)
            if reply.get("id") != self._next_id:
                self.events.append(reply)
            elif "error" in reply:
                raise RuntimeError(f"{method}: {reply['error']}")
            else:
                return reply["result"]

    def wait_for(self, method: str, since: int = 0) -> dict[str, Any]:
        """The first event `method` from `events[since]` on (already read, or the next ones)."""
        deadline = time.monotonic() + self.timeout_s
        seen = since
        while True:
            for event in self.events[seen:]:
                if event.get("method") == method:
                    return event
            seen = len(self.events)
            self.events.append(self._read(deadline))


@contextlib.contextmanager
def chromium_devtools(profile: Path, timeout_s: float) -> Iterator[DevTools]:
    """Chromium in its own process group, stopped (the whole group) also when the caller fails."""
    command = [chromium(), *CHROMIUM_FLAGS, f"--user-data-dir={profile}", "--window-size=1200,900", "about:blank"]
    commands_read, commands_write = os.pipe()
    replies_read, replies_write = os.pipe()
    # The child's ends, moved above 10 so that putting them on fds 3 and 4 cannot overwrite one with the other.
    child_in = fcntl.fcntl(commands_read, fcntl.F_DUPFD_CLOEXEC, 10)
    child_out = fcntl.fcntl(replies_write, fcntl.F_DUPFD_CLOEXEC, 10)
    for fd in (commands_read, replies_write):
        os.close(fd)

    def debugging_pipe_fds() -> None:  # runs in the child: Chromium reads commands on fd 3, answers on fd 4
        os.dup2(child_in, 3)
        os.dup2(child_out, 4)

    log = profile / "chromium.log"
    # Chromium's org.chromium.* scratch folders, removed with it; a short path: its Unix sockets live there.
    scratch = tempfile.mkdtemp(prefix="chromium-tmp-")
    try:
        with log.open("w") as output:
            process = subprocess.Popen(
                command, stdin=subprocess.DEVNULL, stdout=output, stderr=output,
                close_fds=False, preexec_fn=debugging_pipe_fds, start_new_session=True,
                env={**os.environ, "TMPDIR": scratch},
            )  # fmt: skip
    except BaseException:
        for fd in (commands_write, replies_read):
            os.close(fd)
        shutil.rmtree(scratch, ignore_errors=True)
        raise
    finally:
        for fd in (child_in, child_out):
            os.close(fd)
    devtools = DevTools(commands_write, replies_read, timeout_s)
    try:
        yield devtools
    except (TimeoutError, EOFError) as error:
        raise AssertionError(f"{error}; Chromium's log:\n{log.read_text()[-3000:]}") from error
    finally:
        with contextlib.suppress(OSError, TimeoutError, EOFError, RuntimeError):
            devtools.timeout_s = 5
            devtools.call("Browser.close")
        stop_process(process)
        for fd in (commands_write, replies_read):
            os.close(fd)
        shutil.rmtree(scratch, ignore_errors=True)


def _console(event: dict[str, Any]) -> str | None:
    """The message of a console error or warning event, None for anything else."""
    method, params = event.get("method"), event.get("params", {})
    if method == "Runtime.consoleAPICalled" and params["type"] in ("error", "warning", "assert"):
        text = " ".join(str(arg.get("value", arg.get("description", ""))) for arg in params["args"])
        return f"{params['type']}: {text}"
    if method == "Runtime.exceptionThrown":
        details = params["exceptionDetails"]
        return f"exception: {details.get('exception', {}).get('description') or details['text']}"
    if method == "Log.entryAdded" and params["entry"]["level"] in ("error", "warning"):
        entry = params["entry"]
        return f"{entry['level']}: {entry['text']} ({entry.get('url', '')})"
    return None


def open_page(path: Path, screenshot: Path | None = None, ready: str = "true", timeout_s: float = 60) -> Page:
    """Load `path` in headless Chromium offline, wait for its load event and for the JS expression `ready`.

    Returns the DOM then, the console errors/warnings and the requested URLs; with `screenshot`, also saves a
    PNG of the whole page there (and prints its path).
    """
    with (
        tempfile.TemporaryDirectory(prefix="chromium-") as profile,
        chromium_devtools(Path(profile), timeout_s) as browser,
    ):
        target = browser.call("Target.createTarget", url="about:blank")["targetId"]
        session = browser.call("Target.attachToTarget", targetId=target, flatten=True)["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            browser.call(f"{domain}.enable", session)
        before = len(browser.events)
        navigation = browser.call("Page.navigate", session, url=path.resolve().as_uri())
        assert "errorText" not in navigation, f"{path}: {navigation['errorText']}"
        browser.wait_for("Page.loadEventFired", since=before)

        def evaluate(expression: str) -> Any:
            reply = browser.call("Runtime.evaluate", session, expression=expression, returnByValue=True)
            assert "exceptionDetails" not in reply, f"{expression}: {reply['exceptionDetails']}"
            return reply["result"].get("value")

        deadline = time.monotonic() + timeout_s
        while not evaluate(ready):
            assert time.monotonic() < deadline, f"{path}: not ready after {timeout_s} s ({ready})"
            time.sleep(0.1)
        if screenshot:
            size = browser.call("Page.getLayoutMetrics", session)["cssContentSize"]
            clip = {"x": 0, "y": 0, "width": size["width"], "height": size["height"], "scale": 1}
            image = browser.call("Page.captureScreenshot", session, format="png", clip=clip, captureBeyondViewport=True)
            screenshot.write_bytes(base64.b64decode(image["data"]))
            print(f"screenshot: {screenshot}")
        dom = evaluate("document.documentElement.outerHTML")
        events = browser.events
    console = [message for event in events if (message := _console(event))]
    requests = [
        event["params"]["request"]["url"] for event in events if event.get("method") == "Network.requestWillBeSent"
    ]
    return Page(dom=dom, console=console, requests=requests, screenshot=screenshot)
