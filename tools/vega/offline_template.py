"""Build the HTML template `dvc plots show/diff` fills, with vega, vega-lite and vega-embed inlined (no CDN).

DVC's own page loads the three libraries from cdn.jsdelivr.net, so its plots are blank offline. This template
has no `{scripts}` placeholder (where DVC would put those CDN tags), only `{plot_divs}` and `{refresh_tag}`.
Usage: python3 tools/vega/offline_template.py tools/vega/node_modules .llmops/plots/offline.html
"""

from __future__ import annotations

import json
import os
import re
import sys
import tempfile
from pathlib import Path

# Load order matters: vega-lite needs the global `vega`, vega-embed needs both.
BUNDLES = (("vega", "build/vega.min.js"), ("vega-lite", "build/vega-lite.min.js"),
           ("vega-embed", "build/vega-embed.min.js"))  # fmt: skip
DVC_PLACEHOLDERS = ("{plot_divs}", "{scripts}", "{refresh_tag}")
# DVC's plot divs call `vegaEmbed(el, spec)`; draw SVG rather than canvas, so chart text is selectable and a
# test can read what was drawn (titles, legends, marks with their data as aria-labels) from the DOM.
SVG_BY_DEFAULT = """    <script>
(function (embed) {
    window.vegaEmbed = Object.assign(function (el, spec, options) {
        return embed(el, spec, Object.assign({renderer: "svg"}, options));
    }, embed);
})(window.vegaEmbed);
    </script>"""
PAGE = """<!DOCTYPE html>
<html>
<head>
    <meta charset="utf-8">
    {refresh_tag}
    <title>DVC Plot</title>
%s
    <style>
        table {
            border-spacing: 15px;
        }
    </style>
</head>
<body>
    {plot_divs}
</body>
</html>
"""


def inline_script(package: Path, bundle: str) -> str:
    """A <script> element holding `bundle` of the npm `package`, without its source map comment."""
    version = json.loads((package / "package.json").read_text(encoding="utf-8"))["version"]
    path = package / bundle
    code = re.sub(r"\n//# sourceMappingURL=\S+\s*$", "\n", path.read_text(encoding="utf-8"))
    if re.search(r"</script", code, re.IGNORECASE):
        raise SystemExit(f"{path}: contains '</script', it cannot be inlined in a <script> element")
    if found := [p for p in DVC_PLACEHOLDERS if p in code]:
        raise SystemExit(f"{path}: contains {found}, which DVC would replace")
    return f"    <script>/* {package.name} {version} */\n{code}</script>"


def build(node_modules: Path) -> str:
    missing = [name for name, bundle in BUNDLES if not (node_modules / name / bundle).is_file()]
    if missing:
        raise SystemExit(f"{node_modules}: missing {missing}; run `make vega` (npm ci --prefix tools/vega)")
    scripts = [inline_script(node_modules / name, bundle) for name, bundle in BUNDLES]
    return PAGE % "\n".join([*scripts, SVG_BY_DEFAULT])


def main(argv: list[str]) -> int:
    node_modules, output = Path(argv[0]), Path(argv[1])
    page = build(node_modules)
    output.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{output.name}.", dir=output.parent)
    with os.fdopen(fd, "w", encoding="utf-8") as handle:
        handle.write(page)
    os.chmod(tmp, 0o644)
    os.replace(tmp, output)
    print(f"offline plots template: {output} ({len(page) // 1024} KiB)")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
