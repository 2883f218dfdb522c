"""The monitoring kit in deploy/ (docs/monitoring.md): the Prometheus alert rules pass
``promtool check rules`` and their unit tests (``promtool test rules``), and the rules and
the Grafana dashboard name only metrics that the hub or the agent export."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
from collections.abc import Iterator
from typing import Any

import yaml  # type: ignore[import-untyped]  # no types-PyYAML in the dev extras
from prometheus_client import REGISTRY, CollectorRegistry

import cloud_hub.metrics  # noqa: F401  (registers the hub's metrics in the global registry)
from edge_agent.delivery.outbox import Outbox
from edge_agent.device.metrics import AgentMetrics
from edge_agent.device.telemetry import CameraMeter
from tests.paths import REPO

PROMETHEUS = REPO / "deploy" / "prometheus"
ALERTS = PROMETHEUS / "alerts.yml"
ALERT_TESTS = PROMETHEUS / "alerts_test.yml"
DASHBOARD = REPO / "deploy" / "grafana" / "audience-fleet.json"
#: Series Prometheus makes itself for every target.
SCRAPE_SERIES = frozenset({"up"})
#: The names a family of each type is exposed under (counters as ``_total``, ...).
SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_sum", "_count", "_created"),
    "gaugehistogram": ("_bucket", "_gsum", "_gcount"),
    "summary": ("", "_sum", "_count", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "unknown": ("",),
}
KEYWORDS = frozenset(
    {"and", "or", "unless", "by", "without", "on", "ignoring", "group_left", "group_right"}
    | {"bool", "offset", "inf", "nan"}
)


def exposed_names(registry: CollectorRegistry) -> set[str]:
    """Every series name the registry exposes, whether or not it has samples yet."""
    return {
        family.name + suffix for family in registry.collect() for suffix in SUFFIXES[family.type]
    }


def exported_metrics() -> set[str]:
    """What the hub's /metrics (the global registry) and an agent's /metrics expose."""
    agent = AgentMetrics([CameraMeter("entrance")], Outbox(None))
    return exposed_names(REGISTRY) | exposed_names(agent.registry) | SCRAPE_SERIES


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects (not its functions, labels, keywords)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'', '""', expr)  # strings
    text = re.sub(r"\$\{?\w+\}?", "", text)  # Grafana variables ($__rate_interval, ${device})
    text = re.sub(r"\{[^}]*\}", "", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", "", text)  # ranges and subqueries
    text = re.sub(
        r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", text
    )  # grouping label lists
    text = re.sub(r"\b\d[\w.]*", "", text)  # numbers and durations
    names = set()
    for match in re.finditer(r"[A-Za-z_:][\w:]*", text):
        following = text[match.end() :].lstrip()
        if following.startswith("(") or match.group().lower() in KEYWORDS:
            continue  # a function or an aggregation, or a keyword
        names.add(match.group())
    return names


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text(encoding="utf-8"))["groups"]
    return [rule for group in groups for rule in group["rules"]]


def panels(items: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in items:
        yield panel
        yield from panels(panel.get("panels", []))  # panels inside collapsed rows


def promtool() -> str:
    path = shutil.which("promtool")
    assert path, "promtool is missing: run .ci/prometheus-tools.sh (make test's services do)"
    return path


def test_metric_name_parser() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, stage) (rate(x_seconds_bucket{job="a",'
        'instance=~"$device"}[$__rate_interval]))) / on (instance) group_left (version) '
        "y_info and time() - z_ts > 300 or absent(w offset 5m) unless count without (le) (v)"
    )
    assert metric_names(expr) == {"x_seconds_bucket", "y_info", "z_ts", "w", "v"}


def test_alert_rules_pass_promtool_check() -> None:
    result = subprocess.run(
        [promtool(), "check", "rules", str(ALERTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_alert_rules_pass_their_unit_tests() -> None:
    result = subprocess.run(
        [promtool(), "test", "rules", str(ALERT_TESTS)], capture_output=True, text=True
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_example_prometheus_config_is_valid() -> None:
    result = subprocess.run(
        [promtool(), "check", "config", "--syntax-only", str(PROMETHEUS / "prometheus.yml")],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_silent() -> None:
    rules = alert_rules()
    assert len(rules) >= 10
    fired: set[str] = set()
    silent: set[str] = set()
    for case in yaml.safe_load(ALERT_TESTS.read_text(encoding="utf-8"))["tests"]:
        for check in case["alert_rule_test"]:
            name, expected = check["alertname"], check["exp_alerts"]
            (fired if expected else silent).add(name)
            # Series that must not fire sit beside the ones that do.
            if expected and len(case["input_series"]) > len(expected):
                silent.add(name)
    for rule in rules:
        assert rule["labels"]["severity"] in {"critical", "warning", "info"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    names = {rule["alert"] for rule in rules}
    assert names <= fired, f"no test fires {names - fired}"
    assert names <= silent, f"no test keeps {names - silent} silent"


def test_alerts_name_only_exported_metrics() -> None:
    exported = exported_metrics()
    assert {"hub_build_info", "edge_agent_build_info", "hub_batch_write_seconds_bucket"} <= exported
    unknown = {
        rule["alert"]: sorted(metric_names(rule["expr"]) - exported) for rule in alert_rules()
    }
    assert not {k: v for k, v in unknown.items() if v}, unknown
    assert all(metric_names(rule["expr"]) for rule in alert_rules())


def test_dashboard_names_only_exported_metrics() -> None:
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    assert dashboard["uid"] and dashboard["schemaVersion"] >= 36
    exported = exported_metrics()
    unknown: dict[str, list[str]] = {}
    exprs = 0
    for panel in panels(dashboard["panels"]):
        for target in panel.get("targets", []):
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: no metric in {target['expr']!r}"
            exprs += 1
            if names - exported:
                unknown[f"{panel['title']}: {target['expr']}"] = sorted(names - exported)
    assert exprs >= 15
    assert not unknown, unknown
    for variable in dashboard["templating"]["list"]:
        query = variable.get("query")
        if variable["type"] == "query":
            text = query["query"] if isinstance(query, dict) else query
            metric = re.fullmatch(r"label_values\((\w+),\s*\w+\)", text)
            assert metric and metric.group(1) in exported, text
