"""Run a Docker build context's flow the way its image would, without Docker: in an interpreter whose sys.path holds
only the context's flow folder (the image's working directory) and the third-party packages, started with `-I -S`
so neither PYTHONPATH nor this project's editable install can supply `stages`. Every Python file of the flow is
imported; a flex flow also answers a request through prompt flow's serving app (the image's gunicorn app)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import sysconfig
import tempfile
from pathlib import Path
from typing import Any

_PROBE = r"""
import importlib, json, os, sys
from pathlib import Path

flow, site, request = Path(sys.argv[1]), sys.argv[2], sys.argv[3]
sys.path[:0] = [str(flow)]
sys.path.append(site)
os.chdir(flow)
for script in sorted(flow.glob("*.py")):
    importlib.import_module(script.stem)
loaded = {name: module for name, module in sys.modules.items() if name.split(".")[0] == "stages"}
result = {
    "stages": sorted(loaded),
    "outside": sorted(name for name, m in loaded.items() if not Path(m.__file__).resolve().is_relative_to(flow)),
}
if request != "-":
    from promptflow.core._serving.app import create_app

    answer = create_app(engine="flask").test_client().post("/score", json=json.loads(request))
    result |= {"status": answer.status_code, "body": answer.get_json()}
print("PROBE " + json.dumps(result))
"""


def probe(context: Path, request: dict[str, Any] | None, env: dict[str, str], home: Path) -> dict[str, Any]:
    """{stages: project modules loaded, outside: those not loaded from the context, [status, body]}."""
    flow = (context / "flow").resolve()
    command = [sys.executable, "-I", "-S", "-c", _PROBE, str(flow), sysconfig.get_paths()["purelib"],
               json.dumps(request) if request is not None else "-"]  # fmt: skip
    # TMPDIR: the worker's own temp folder, so what prompt flow's Azure Monitor exporter leaves there stays out of /tmp
    environment = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "HOME": str(home),
                   "TMPDIR": tempfile.gettempdir(), **env}  # fmt: skip
    done = subprocess.run(command, env=environment, capture_output=True, text=True, timeout=300, check=False)
    line = next((x for x in done.stdout.splitlines() if x.startswith("PROBE ")), None)
    assert done.returncode == 0 and line, f"{context}: the flow does not run on its own:\n{done.stderr[-3000:]}"
    return json.loads(line.removeprefix("PROBE "))
