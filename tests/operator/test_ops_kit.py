"""The operations kit under deploy/: the Grafana dashboard and the Prometheus alerting rules name
only metrics the gateway exports, and the rules are valid (``promtool check rules`` where
promtool is installed, otherwise a structural check of the rule file)."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from pathlib import Path

import yaml
from prometheus_client import REGISTRY

import gateway.connectors.meiqia.metrics
import gateway.connectors.yeastar.metrics
import gateway.runtime.metrics  # registers the metrics

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy/grafana/gateway-dashboard.json"
RULES = ROOT / "deploy/prometheus/gateway-rules.yaml"
_ = (gateway.connectors.meiqia.metrics, gateway.connectors.yeastar.metrics, gateway.runtime.metrics)

#: PromQL words that are not metric names.
_PROMQL = {
    "sum", "by", "rate", "increase", "deriv", "histogram_quantile", "and", "or", "unless",
    "le", "without", "on", "ignoring", "max", "min", "avg", "count", "offset", "bool",
}  # fmt: skip


def exported() -> set[str]:
    """Every series name the gateway's registry can expose (counters with _total, ...)."""
    names: set[str] = set()
    for family in REGISTRY.collect():
        if not family.name.startswith("gateway_"):
            continue
        names.add(family.name)
        suffixes = {
            "counter": ("_total",),
            "histogram": ("_bucket", "_sum", "_count"),
            "gauge": ("",),
        }
        names.update(family.name + s for s in suffixes.get(family.type, ("",)))
    return names


def metrics_in(expr: str) -> set[str]:
    """Metric names in a PromQL expression (label matchers and strings removed)."""
    bare = re.sub(r"\{[^}]*\}|\[[^\]]*\]|\"[^\"]*\"", " ", expr)
    words = set(re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", bare))
    return {w for w in words - _PROMQL if w.startswith("gateway_")} | {
        w for w in words - _PROMQL if not w.startswith("gateway_") and "_" in w
    }


def test_dashboard_queries_name_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    known = exported()
    queried: set[str] = set()
    for panel in dashboard["panels"]:
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metrics_in(target["expr"])
            assert names, (panel["title"], target["expr"])
            assert names <= known, f"{panel['title']}: {names - known} not exported"
            queried |= names
    for needed in (
        "gateway_link_up",
        "gateway_events_published_total",
        "gateway_publish_confirm_seconds_bucket",
        "gateway_outbox_events",
        "gateway_outbox_oldest_age_seconds",
        "gateway_commands_total",
        "gateway_yeastar_token_refreshes_total",
        "gateway_bus_up",
    ):
        assert needed in queried, f"the dashboard shows no {needed}"


def test_alert_rules_are_valid_and_name_exported_metrics() -> None:
    promtool = shutil.which("promtool")
    if promtool:
        result = subprocess.run(
            [promtool, "check", "rules", str(RULES)], capture_output=True, text=True, check=False
        )
        assert result.returncode == 0, result.stdout + result.stderr
    rules = yaml.safe_load(RULES.read_text())
    known = exported()
    alerts = {}
    for group in rules["groups"]:
        assert set(group) <= {"name", "interval", "rules", "limit"} and group["name"]
        for rule in group["rules"]:
            assert set(rule) <= {"alert", "expr", "for", "labels", "annotations", "keep_firing_for"}
            assert re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", rule["alert"])
            assert rule["expr"].count("(") == rule["expr"].count(")"), rule["alert"]
            if "for" in rule:
                assert re.fullmatch(r"\d+[smhd]", rule["for"]), rule["alert"]
            assert rule["annotations"]["summary"], rule["alert"]
            names = metrics_in(rule["expr"])
            assert names and names <= known, f"{rule['alert']}: {names - known} not exported"
            alerts[rule["alert"]] = rule
    assert alerts["PbxLinkDown"]["for"] == "2m"
    assert "300" in alerts["GatewayOutboxStale"]["expr"]
    for name in ("GatewayBrokerUnreachable", "GatewayOutboxGrowing", "PbxAuthFailures"):
        assert name in alerts
    assert "PbxEventGaps" in alerts
