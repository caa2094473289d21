"""`llmops evaluate-production`: evaluate what each deployment answered in production, and compare them.

From the production log (one JSON line per request, written by the local router), per deployment:
- traffic: requests, errors, latency p50/p95, and the success rate (status 200) of every request;
- a sample of its distinct successful requests. Those whose inputs match a dataset row (joined by the row id
  the prepare stage gives) get the ground truth and go through the use case's evaluation flow, and its headline
  metrics (conf/use_cases/<uc>.yaml `metrics`) are computed per deployment; requests that match no dataset row
  are counted, and scored only by the reference-free metrics (success, and `valid` when the flow declares it).
Each deployment is compared with the prior one (the second in conf/deploy/<env>.yaml): paired tests on the rows
both answered when most rows are shared, Fisher's exact test or an unpaired bootstrap otherwise.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stages.data import datasets
from stages.metrics import headline, stats
from stages.observability import pii
from stages.results import charts, pages
from stages.results.formatting import format_value, is_rate
from stages.results.pages import Table
from stages.results.rows import VariantReport

Results = dict[str, dict[str, headline.MetricResult]]  # deployment -> metric -> result
REFERENCE_FREE = {"success": "ok", "valid_answers": "valid"}  # headline name -> per-row value in `eval`


class ProductionLogError(ValueError):
    """A production log that cannot be read; the message names the file and line."""


def read_log(path: Path) -> list[dict[str, Any]]:
    """The log's scoring requests (`POST /score` that reached a deployment), in order."""
    if not path.is_file():
        raise ProductionLogError(f"{path}: no production log (deploy with `llmops deploy --target local` first)")
    rows = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError as exc:
            raise ProductionLogError(f"{path}:{number}: not JSON ({exc})") from None
        if not isinstance(row, dict) or "status" not in row:
            raise ProductionLogError(f"{path}:{number}: expected an object with a 'status' field")
        if row.get("path") == "/score" and row.get("deployment"):
            rows.append(row)
    return rows


def _key(inputs: Any) -> str:
    return hashlib.sha256(json.dumps(inputs, sort_keys=True, default=str).encode()).hexdigest()[:12]


@dataclass
class DeploymentRows:
    """One deployment's production traffic, and the sampled requests: joined to the dataset or not."""

    name: str
    variant: str
    requests: list[dict[str, Any]]
    joined: list[tuple[dict[str, Any], dict[str, Any]]] = field(default_factory=list)  # (dataset row, log row)
    unjoined: list[dict[str, Any]] = field(default_factory=list)
    shadow: bool = False  # a shadow deployment: answered copies of live requests, never returned

    def traffic(self) -> dict[str, Any]:
        """Requests, errors, latency percentiles: the `run` part of a report."""
        latencies = sorted(float(r["latency_s"]) for r in self.requests if r["status"] == 200)

        def pct(percent: int) -> float:
            return round(stats.percentile(latencies, percent) or 0.0, 4)

        errors = sum(1 for r in self.requests if r["status"] != 200)
        return {"rows": len(self.requests), "errors": errors, "latency_s": {"p50": pct(50), "p95": pct(95)},
                "sampled": len(self.joined) + len(self.unjoined), "joined": len(self.joined)}  # fmt: skip


def split_by_deployment(
    log: Sequence[Mapping[str, Any]], dataset: Sequence[Mapping[str, Any]], columns: Mapping[str, str], label: str,
    sample: int, seed: int, secret: str | None = None,
) -> dict[str, DeploymentRows]:  # fmt: skip
    """Group the log per deployment and sample up to `sample` distinct successful requests of each (seeded),
    joined to the dataset rows with the same inputs (`columns`: flow input -> dataset column): by the logged
    `inputs_key` when `secret` (the endpoint key) is given, as the inputs themselves may be redacted."""
    schema = datasets.Schema(tuple(columns.values()), label)
    by_id = {datasets.row_id(dict(row), schema): row for row in dataset}
    by_key = {pii.join_key({name: row.get(column) for name, column in columns.items()}, secret): row
              for row in dataset} if secret else {}  # fmt: skip
    groups: dict[str, DeploymentRows] = {}
    for row in log:
        group = groups.setdefault(row["deployment"], DeploymentRows(row["deployment"], row.get("variant") or "", [],
                                                                    shadow=bool(row.get("shadow"))))  # fmt: skip
        group.requests.append(dict(row))
    rng = random.Random(seed)
    for group in groups.values():
        distinct: dict[str, dict[str, Any]] = {}
        for row in group.requests:
            inputs = row.get("inputs")
            if row["status"] == 200 and isinstance(inputs, dict):
                distinct.setdefault(row.get("inputs_key") or _key(inputs), row)
        chosen = list(distinct.values())
        chosen = sorted(rng.sample(chosen, sample), key=chosen.index) if len(chosen) > sample else chosen
        for row in chosen:
            inputs = row["inputs"]
            values = {column: inputs.get(name) for name, column in columns.items()}
            match = by_key.get(row.get("inputs_key") or "")
            if match is None and None not in values.values():
                match = by_id.get(datasets.row_id(values, schema))
            if match is not None:
                group.joined.append((dict(match), row))
            else:
                group.unjoined.append(row)
    return groups


def reference_free_rows(group: DeploymentRows, outputs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """Every request of the deployment as a row with `eval.ok` (status 200) and `eval.valid` (when declared)."""
    rows = []
    for number, row in enumerate(group.requests):
        answer = row.get("outputs") if isinstance(row.get("outputs"), dict) else {}
        evaluation: dict[str, Any] = {"ok": row["status"] == 200}
        if "valid" in outputs and row["status"] == 200:
            evaluation["valid"] = bool(answer.get("valid"))
        # keyed by the request: a shadow's answer pairs with the live answer to the same request
        rows.append({"row_id": row.get("request_id") or f"{group.name}:{number}", "eval": evaluation})
    return rows


def compare(
    specs: Sequence[headline.MetricSpec], rows_by_deployment: Mapping[str, Sequence[Mapping[str, Any]]], baseline: str
) -> Results:
    """Every metric of every deployment with its CI; the others compared with `baseline`: paired on the shared
    rows when they are at least half of the smaller deployment's rows, unpaired otherwise."""
    results: dict[str, dict[str, headline.MetricResult]] = {}
    for name, rows in rows_by_deployment.items():
        results[name] = {}
        for spec in specs:
            result = headline.evaluate_metric(spec, rows)
            if name != baseline and baseline in rows_by_deployment:
                base = rows_by_deployment[baseline]
                base_ids, _ = headline.table(spec, base)
                cand_ids, _ = headline.table(spec, rows)
                shared = len(set(base_ids) & set(cand_ids))
                paired = shared >= 2 and shared * 2 >= min(len(base_ids), len(cand_ids))
                comparison = (headline.compare_metric if paired else headline.compare_independent)(spec, base, rows)
                result = headline.MetricResult(result.interval, result.rows, comparison)
            results[name][spec.name] = result
    return results


@dataclass(frozen=True)
class ProductionEvaluation:
    groups: dict[str, DeploymentRows]
    baseline: str
    flow_metrics: dict[str, dict[str, Any]]  # what each deployment's evaluation flow logged
    evaluated: Results  # the use case's headline metrics on the joined rows
    reference_free: Results  # success (and valid answers) over every request
    shadow: dict[str, Results] = field(default_factory=dict)  # "evaluated"/"reference_free": live vs the shadow

    def as_dict(self) -> dict[str, Any]:
        def plain(results: Results) -> dict[str, Any]:
            return {n: {m: r.as_dict() for m, r in by_metric.items()} for n, by_metric in results.items()}

        return {
            "baseline": self.baseline,
            "deployments": {n: {"variant": g.variant, **g.traffic()} for n, g in self.groups.items()},
            "evaluated": plain(self.evaluated),
            "flow_metrics": self.flow_metrics,
            "reference_free": plain(self.reference_free),
            "shadow": {part: plain(results) for part, results in self.shadow.items()},
        }


def _metric_table(results: Results, baseline: str) -> dict[str, Any]:
    """Each metric per deployment (value, CI, rows) and its verdicts against `baseline`, for the page."""
    names = list(results)
    rows = []
    for metric in next(iter(results.values()), {}):
        cells, verdicts = [], []
        for name in names:
            r = results[name][metric].as_dict()
            rate = is_rate([r])
            cells.append({"value": format_value(r["value"], rate), "low": format_value(r["ci_low"], rate),
                          "high": format_value(r["ci_high"], rate), "rows": r["rows"]})  # fmt: skip
            if r.get("verdict"):
                verdict = f"{r['delta']:+.3f}, p={r['p_value']:.2g}, {r['verdict']} ({r['test']})"
                verdicts.append({"cls": {"better": "better", "worse": "worse"}.get(r["verdict"], "n"),
                                 "text": f"{name} vs {baseline}: {verdict}"})  # fmt: skip
        rows.append({"metric": metric, "cells": cells, "verdicts": verdicts})
    return {"names": names, "rows": rows}


def _traffic_table(groups: Mapping[str, DeploymentRows]) -> Table:
    head = ["deployment", "variant", "requests", "errors", "latency p50", "latency p95", "sampled",
            "joined to the dataset"]  # fmt: skip
    rows = []
    for group in groups.values():
        t = group.traffic()
        rows.append([group.name, group.variant, t["rows"], t["errors"], f"{t['latency_s']['p50']:.3f} s",
                     f"{t['latency_s']['p95']:.3f} s", t["sampled"], t["joined"]])  # fmt: skip
    return Table(head, rows)


def render(title: str, facts: Mapping[str, str], result: ProductionEvaluation, dpi: int) -> str:
    """The offline report page: traffic per deployment, metrics with CIs and verdicts, and the headline chart."""
    groups, baseline, evaluated = result.groups, result.baseline, result.evaluated

    def parts(results: Results) -> list[VariantReport]:
        ordered = [baseline, *(n for n in results if n != baseline)]
        return [VariantReport(n, [], {"headline": {m: r.as_dict() for m, r in results[n].items()}}, {})
                for n in ordered if n in results]  # fmt: skip

    drawn = [charts.headline_chart(parts(evaluated), dpi)] if any(evaluated.values()) else []
    shadow = [(part.replace("_", "-"), _metric_table(results, LIVE)) for part, results in result.shadow.items()]
    return pages.render(
        "production.html.jinja2", title=title, facts=facts, traffic=_traffic_table(groups),
        evaluated=_metric_table(evaluated, baseline) if any(evaluated.values()) else None,
        charts=pages.trusted(drawn), reference_free=_metric_table(result.reference_free, baseline), shadow=shadow,
    )  # fmt: skip


LIVE = "live"


def shadow_verdict(
    groups: Mapping[str, DeploymentRows], rows_by_deployment: Mapping[str, Sequence[Mapping[str, Any]]],
    free_rows: Mapping[str, Sequence[Mapping[str, Any]]], specs: Sequence[headline.MetricSpec],
    free_specs: Sequence[headline.MetricSpec],
) -> dict[str, Results]:  # fmt: skip
    """The shadow against live on the same requests: every live deployment's answers together as `live`, paired
    with the shadow's by request id (reference-free) and by dataset row (evaluated)."""
    shadows = [name for name, group in groups.items() if group.shadow]
    if not shadows:
        return {}
    out: dict[str, Results] = {}
    for part, rows, part_specs in (("evaluated", rows_by_deployment, specs), ("reference_free", free_rows, free_specs)):
        live: dict[str, Mapping[str, Any]] = {}
        for name, group_rows in rows.items():
            if name in groups and not groups[name].shadow:
                for row in group_rows:
                    live.setdefault(str(row["row_id"]), row)
        if not live or not any(name in rows for name in shadows):
            continue
        compared = {LIVE: list(live.values()), **{name: list(rows[name]) for name in shadows if name in rows}}
        out[part] = compare(part_specs, compared, LIVE)
    return out


def evaluate(
    root: Path,
    params: Mapping[str, Any],
    use_case: str,
    order: Sequence[str],
    log: Path,
    sample: int,
    seed: int,
    secret: str | None = None,
) -> ProductionEvaluation:
    """Read the log, run the evaluation flow over each deployment's joined sample, compare the deployments.

    `order` is the configured deployments, new first: the baseline is the prior one (the second), or the only one.
    """
    from stages import engine
    from stages.llm import connections
    from stages.results import evaluation

    config = params["use_cases"][use_case]
    columns = datasets.input_columns(config["data"]["inputs"])
    schema = datasets.Schema.from_config(config["data"])
    source = root / config["dataset"]
    dataset = datasets.assign_ids(datasets.load(source, schema, params["prepare"]["max_row_bytes"]), schema, source)
    groups = split_by_deployment(read_log(log), dataset, columns, config["data"]["label"], sample, seed, secret)
    if not groups:
        raise ProductionLogError(f"{log}: no scoring requests reached a deployment yet")
    ranked = [name for name in order if name in groups] + sorted(set(groups) - set(order))
    live = [name for name in ranked if not groups[name].shadow] or ranked
    baseline = live[1] if len(live) > 1 and live[0] == order[0] else live[0]
    groups = {name: groups[name] for name in ranked}

    judges = config["evaluate"].get("judges") or {}
    bindings = []
    if judges:
        judge = connections.resolve(params["judge"], connections.environment(root))
        bindings = evaluation.judge_bindings(judges, judge)
    session = engine.FlowSession(root / config["eval_flow"], *bindings,
                                      row_timeout_s=params["bulk"]["row_timeout_s"])  # fmt: skip
    specs = headline.parse_specs(config.get("metrics"), f"use_cases.{use_case}.metrics")
    flow_metrics: dict[str, dict[str, Any]] = {}
    rows_by_deployment: dict[str, list[dict[str, Any]]] = {}
    for name, group in groups.items():
        if not group.joined:
            continue
        prepared = [row for row, _ in group.joined]
        run_rows = [{"row_id": row["row_id"], "outputs": logged["outputs"], "error": None,
                     "latency_s": logged["latency_s"]} for row, logged in group.joined]  # fmt: skip
        joined, metrics, _ = evaluation.evaluate_variant([session], use_case, name, config, prepared, run_rows)
        rows_by_deployment[name], flow_metrics[name] = joined, metrics
    evaluated = compare(specs, rows_by_deployment, baseline) if rows_by_deployment else {}
    declared = engine.interface(root / config["flow"], _any_prompt(config)).outputs
    free_specs = [headline.MetricSpec(name, "mean", (path,)) for name, path in REFERENCE_FREE.items()
                  if path == "ok" or path in declared]  # fmt: skip
    free_rows = {n: reference_free_rows(g, declared) for n, g in groups.items()}
    reference_free = compare(free_specs, free_rows, baseline)
    shadow = shadow_verdict(groups, rows_by_deployment, free_rows, specs, free_specs)
    return ProductionEvaluation(groups, baseline, flow_metrics, evaluated, reference_free, shadow)


def _any_prompt(config: Mapping[str, Any]) -> str | None:
    """A prompt of the first variant (a prompty flow's folder may hold one .prompty per variant; all declare
    the same outputs)."""
    prompt = next(iter(config["variants"].values())).get("prompt")
    return next(iter(prompt.values())) if isinstance(prompt, Mapping) else prompt
