"""Reading YAML: PyYAML's safe loader, with libyaml's parser when PyYAML has it.

The pure-Python parser takes ~30 ms of CPU for the 12 KB params.yaml, which every stage and most `llmops`
commands read; libyaml's takes ~3 ms for the same values. Its own module, so that what vendors `stages/core/io.py`
into a flow's package does not also need PyYAML.
"""

from __future__ import annotations

from typing import IO, Any

import yaml

try:
    from yaml import CSafeLoader as _SafeLoader
except ImportError:  # a PyYAML built without libyaml
    from yaml import SafeLoader as _SafeLoader  # type: ignore[assignment]


def load_yaml(source: str | IO[str]) -> Any:
    """What `yaml.safe_load(source)` returns, parsed by libyaml; a bad document raises the same error class with
    the same marks (libyaml words some problems differently)."""
    return yaml.load(source, Loader=_SafeLoader)  # a safe loader
