"""``deploy/grafana/contactsync.json``: a well-formed dashboard whose every query names only metrics the app
really exports (as ``GET /metrics`` of a started app lists them)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import httpx
import pytest

DASHBOARD = Path(__file__).resolve().parents[2] / "deploy" / "grafana" / "contactsync.json"

# Words of PromQL that are not metric names where they stand (a name is never followed by "(").
_KEYWORDS = {
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "bool",
    "and",
    "or",
    "unless",
    "offset",
}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_NAME = re.compile(r"(?<![\w:$.])([a-zA-Z_:][\w:]*)(?![\w:]|\s*\()")
_LABEL_VALUES = re.compile(r"label_values\(\s*([^,)]+)")
# The sample names of each metric type, as the Prometheus exposition names them.
_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
}


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects: strings, label matchers, ranges and grouping clauses
    taken out, what remains that is no function, keyword or number."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', " ", expr)
    text = re.sub(r"\{[^}]*\}", " ", text)
    text = re.sub(r"\[[^\]]*\]", " ", text)
    text = _GROUPING.sub(" ", text)
    return {name for name in _NAME.findall(text) if name not in _KEYWORDS}


def exported_names(exposition: str) -> set[str]:
    """Every sample name ``/metrics`` may carry, from its ``# TYPE`` lines (a labelled metric with no sample
    yet is listed by type only)."""
    names: set[str] = set()
    for line in exposition.splitlines():
        if line.startswith("# TYPE "):
            _, _, family, kind = line.split(" ", 3)
            base = family.removesuffix("_total") if kind == "counter" else family
            names |= {base + suffix for suffix in _SUFFIXES.get(kind, ("",))}
    return names


def _panels(dashboard: dict[str, Any]) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row keeps its panels inside
    return found


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    data: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return data


def test_the_parser_finds_names_and_only_names() -> None:
    expr = (
        "histogram_quantile(0.95, sum by (le, route) (rate(contactsync_http_request_duration_seconds_bucket"
        '{instance=~"$instance", route!="x"}[$__rate_interval]))) / on (route) group_left '
        "max without (job) (contactsync_outbox_pending offset 5m) > bool 1e3"
    )
    assert metric_names(expr) == {
        "contactsync_http_request_duration_seconds_bucket",
        "contactsync_outbox_pending",
    }
    assert metric_names("sum(rate(contactsync_nope_total[5m]))") == {"contactsync_nope_total"}
    assert _LABEL_VALUES.findall("label_values(contactsync_jobs_total, instance)") == [
        "contactsync_jobs_total"
    ]


def test_the_dashboard_is_a_grafana_dashboard_with_a_datasource_variable(dashboard: dict[str, Any]) -> None:
    for key in ("title", "uid", "schemaVersion", "panels", "templating", "time"):
        assert key in dashboard, key
    assert isinstance(dashboard["schemaVersion"], int)
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    panels = _panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids repeat"
    queried = [p for p in panels if p["type"] != "row"]
    assert len(queried) >= 10
    for panel in queried:
        assert panel["title"], panel["id"]
        assert panel["datasource"] == {"type": "prometheus", "uid": "${datasource}"}, panel["title"]
        grid = panel["gridPos"]
        assert set(grid) == {"h", "w", "x", "y"}, panel["title"]
        assert grid["x"] >= 0, panel["title"]
        assert grid["x"] + grid["w"] <= 24, panel["title"]
        assert panel["targets"], panel["title"]
        ref_ids = [t["refId"] for t in panel["targets"]]
        assert len(ref_ids) == len(set(ref_ids)), panel["title"]
        for target in panel["targets"]:
            assert target["expr"].count("(") == target["expr"].count(")"), target["expr"]
            assert target["datasource"]["uid"] == "${datasource}"


async def test_every_metric_the_dashboard_queries_is_exported(
    dashboard: dict[str, Any], api: httpx.AsyncClient
) -> None:
    r = await api.get("/metrics")
    assert r.status_code == 200
    exported = exported_names(r.text)
    assert "contactsync_event_lag_seconds_bucket" in exported  # the exposition was read as meant
    queries = [t["expr"] for p in _panels(dashboard) for t in p.get("targets", [])]
    # A variable's label_values(SELECTOR, label) is Grafana's, not PromQL: its selector is.
    queries += [
        m.group(1)
        for v in dashboard["templating"]["list"]
        for m in _LABEL_VALUES.finditer(v.get("definition", ""))
    ]
    used = set().union(*(metric_names(q) for q in queries))
    unknown = {name: [q for q in queries if name in metric_names(q)][:1] for name in used - exported}
    assert not unknown, f"the dashboard queries metrics the app does not export: {unknown}"
    # What the dashboard is for: lag, queue depth, throughput, provider calls and 429s, intake.
    for wanted in (
        "contactsync_event_lag_seconds_bucket",
        "contactsync_events_pending",
        "contactsync_outbox_pending",
        "contactsync_provider_requests_total",
        "contactsync_provider_throttled_total",
        "contactsync_webhook_requests_total",
        "contactsync_jobs_total",
    ):
        assert wanted in used, wanted
