"""The shipped Grafana dashboard and Prometheus alert rules name only metrics that exist
(issue 14): both are parsed, every ``tradebridge_*`` name in their queries is checked against
the registry, and the dashboard shows every metric the registry holds."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest
import yaml

from tradebridge.obs import metrics

DOCS = Path(__file__).resolve().parents[2] / "docs"
DASHBOARD = DOCS / "grafana" / "tradebridge.json"
ALERTS = DOCS / "prometheus" / "alerts.yml"
OPERATIONS = DOCS / "operations.md"
_NAME = re.compile(r"\btradebridge_[a-z0-9_]+")
# Series a family serves beside its own name (counters, histograms).
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")
# The events of issue 14 the rules must cover, each by the rule that does.
REQUIRED_RULES = {
    "rejections": "TradebridgeRejections",
    "denials": "TradebridgeDenialsHigh",
    "unknown outcomes": "TradebridgeUnknownOutcome",
    "auth failures": "TradebridgeAuthFailures",
    "lockouts / 429": "TradebridgeLockedOut",
    "token near expiry": "TradebridgeTokenNearExpiry",
    "WebSocket down": "TradebridgeWebSocketDown",
    "queue backing up": "TradebridgeQueueBackingUp",
    "kill switch thrown": "TradebridgeKillSwitchOn",
    "risk limit reached": "TradebridgeRiskLimitReached",
}


def _families() -> set[str]:
    return {f.name for f in metrics.REGISTRY.collect() if f.name.startswith("tradebridge_")}


def _family_of(series: str, families: set[str]) -> str | None:
    if series in families:
        return series
    for suffix in _SUFFIXES:
        if series.endswith(suffix) and series.removesuffix(suffix) in families:
            return series.removesuffix(suffix)
    return None


def _rules() -> list[dict[str, Any]]:
    document = yaml.safe_load(ALERTS.read_text())
    return [rule for group in document["groups"] for rule in group["rules"]]


def _dashboard_exprs() -> list[str]:
    document = json.loads(DASHBOARD.read_text())
    exprs = [t["expr"] for p in document["panels"] for t in p.get("targets", [])]
    exprs += [v.get("query", "") for v in document["templating"]["list"]]
    return exprs


def _unknown_names(exprs: list[str]) -> list[str]:
    families = _families()
    return sorted(
        {name for e in exprs for name in _NAME.findall(e) if _family_of(name, families) is None}
    )


def test_alert_rules_name_only_metrics_that_exist() -> None:
    exprs = [str(rule["expr"]) for rule in _rules()]

    assert _unknown_names(exprs) == []
    assert all(_NAME.search(e) for e in exprs)


def test_alert_rules_each_have_a_severity_and_a_summary() -> None:
    for rule in _rules():
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"], rule["alert"]


@pytest.mark.parametrize(("event", "alert"), sorted(REQUIRED_RULES.items()))
def test_alert_rules_cover_the_event(event: str, alert: str) -> None:
    assert alert in {rule["alert"] for rule in _rules()}, event


def test_dashboard_names_only_metrics_that_exist() -> None:
    assert _unknown_names(_dashboard_exprs()) == []


def test_dashboard_shows_every_metric_of_the_registry() -> None:
    families = _families()
    shown = {_family_of(name, families) for e in _dashboard_exprs() for name in _NAME.findall(e)}

    assert sorted(families - shown) == []


def test_dashboard_panels_have_unique_ids_and_fit_the_grid() -> None:
    panels = json.loads(DASHBOARD.read_text())["panels"]
    ids = [p["id"] for p in panels]

    assert len(ids) == len(set(ids))
    assert all(p["gridPos"]["x"] + p["gridPos"]["w"] <= 24 for p in panels)


def test_unknown_metric_name_is_caught() -> None:
    # The check itself: a misspelt name must not pass.
    assert _unknown_names(["rate(tradebridge_signals_outcomes_total[5m])"]) == [
        "tradebridge_signals_outcomes_total"
    ]


def test_operations_doc_explains_every_metric_and_rule() -> None:
    text = OPERATIONS.read_text()

    assert sorted(name for name in _families() if f"`{name}" not in text) == []
    assert sorted(r["alert"] for r in _rules() if r["alert"] not in text) == []
