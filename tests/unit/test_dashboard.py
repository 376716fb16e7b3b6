"""The Grafana dashboard (deploy/grafana/backfill-dashboard.json) asks only for what
the code exports (`backfill.engine.metrics`).

What must hold: the file is a dashboard model Grafana imports (a schemaVersion, a
Prometheus datasource variable `DS_PROMETHEUS` every panel and query uses); every
metric name in a panel's expression or a variable's query is a series the code
serves, and every label it groups or filters by is one that series has.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from backfill.engine.prometheus import DatabaseCollector, PrometheusMetrics

DASHBOARD = Path(__file__).parents[2] / "deploy" / "grafana" / "backfill-dashboard.json"
DATASOURCE = {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}
# Labels every series has once Prometheus scraped it.
TARGET_LABELS = {"instance", "job"}


def exported() -> dict[str, set[str]]:
    """Every series name the code serves -> its labels."""
    metrics = PrometheusMetrics()
    for record in ("dispatched", "redispatched", "reaped"):  # a sample of each, with its labels
        getattr(metrics, record)(1, dag_id="d")
    metrics.pass_took(0.1, dag_id="d")
    metrics.claimed([0.1], dag_id="d")
    series: dict[str, set[str]] = {}
    for family in metrics.registry.collect():
        for sample in family.samples:
            series.setdefault(sample.name, set()).update(sample.labels)
    # Read from the database at each scrape: without one, the families and their labels.
    for family in DatabaseCollector(engine=None).describe():  # type: ignore[arg-type]
        name = family.name + ("_total" if family.type == "counter" else "")
        series[name] = set(getattr(family, "_labelnames", ()))
    return series


def expressions(dashboard: dict[str, Any]) -> Iterator[tuple[str, str]]:
    """(where, PromQL) of every panel target and query variable."""
    for panel in dashboard["panels"]:
        for target in panel["targets"]:
            yield f"panel {panel['title']!r} {target['refId']}", target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            yield f"variable {variable['name']}", variable["definition"]


_STRING = re.compile(r'"(?:[^"\\]|\\.)*"')
_SELECTOR = re.compile(r"([a-zA-Z_:][\w:]*)?\{([^}]*)\}")
_GROUPING = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
_IDENTIFIER = re.compile(r"(?<![\w$.])([a-zA-Z_:][\w:]*)(\s*\()?")


_LABEL_VALUES = re.compile(r"^label_values\((.+),\s*(\w+)\)$")


def names_and_labels(expr: str) -> tuple[set[str], set[str]]:
    """The metric names an expression reads, and the labels it filters or groups by.

    A small reading of PromQL, enough for a dashboard: strings, range selectors and
    grouping clauses are set aside; an identifier followed by `(` is a function or an
    aggregation; any other is a metric name. `label_values(SELECTOR, LABEL)` (a
    variable's query) reads SELECTOR and LABEL."""
    if found := _LABEL_VALUES.match(expr.strip()):
        names, labels = names_and_labels(found.group(1))
        return names, labels | {found.group(2)}
    text = _STRING.sub('""', expr)
    labels = {m.strip() for g in _GROUPING.findall(text) for m in g.split(",") if m.strip()}
    text = _GROUPING.sub(" ", text)
    for _, matchers in _SELECTOR.findall(text):
        labels |= {re.split(r"[=!~]", m)[0].strip() for m in matchers.split(",") if m.strip()}
    text = re.sub(r"\{[^}]*\}|\[[^\]]*\]", " ", text)
    return {name for name, call in _IDENTIFIER.findall(text) if not call}, labels


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def test_the_dashboard_is_a_grafana_model_on_a_prometheus_datasource_variable(
    dashboard: dict[str, Any],
) -> None:
    assert 36 <= dashboard["schemaVersion"] <= 41
    assert dashboard["title"]
    assert dashboard["uid"]
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        assert panel["datasource"] == DATASOURCE, panel["title"]
        assert panel["targets"], panel["title"]
        assert all(t["datasource"] == DATASOURCE for t in panel["targets"]), panel["title"]
        assert {"h", "w", "x", "y"} <= set(panel["gridPos"]), panel["title"]
    for name in ("dag_id", "backfill_id"):
        assert variables[name]["datasource"] == DATASOURCE


def test_every_expression_reads_only_exported_series_and_their_labels(
    dashboard: dict[str, Any],
) -> None:
    series = exported()
    read: set[str] = set()
    for where, expr in expressions(dashboard):
        names, labels = names_and_labels(expr)
        assert names, f"{where}: no metric in {expr!r}"
        unknown = names - set(series)
        assert not unknown, f"{where}: {sorted(unknown)} not exported; exported: {sorted(series)}"
        known = set().union(*(series[n] for n in names)) | TARGET_LABELS
        assert labels <= known, f"{where}: labels {sorted(labels - known)} not on {sorted(names)}"
        read |= names
    # Each metric of DESIGN section 6 has a panel.
    for family in (
        "backfill_task_instances",
        "backfill_dispatched_total",
        "backfill_reaped_total",
        "backfill_redispatched_total",
        "backfill_claims_lost_total",
        "backfill_pass_duration_seconds_bucket",
        "backfill_dispatch_lag_seconds_bucket",
    ):
        assert family in read


def test_the_expression_reader_catches_a_wrong_name_or_label() -> None:
    names, labels = names_and_labels(
        'histogram_quantile(0.95, sum by (le, dag_id) (rate(backfill_pass_bucket{dag_id=~"$d"}'
        "[$__rate_interval])))"
    )
    assert (names, labels) == ({"backfill_pass_bucket"}, {"le", "dag_id"})
    names, labels = names_and_labels('label_values(backfill_task_instances{x="1"}, backfill_id)')
    assert (names, labels) == ({"backfill_task_instances"}, {"x", "backfill_id"})
    assert "backfill_dispatch_total" not in exported()  # a typo of the counter's name
