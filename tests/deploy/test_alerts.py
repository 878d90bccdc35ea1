"""The alerts of the servicemonitor component, as rendered: promtool (Prometheus' own rule checker and unit-test
runner) accepts them and proves each expression on series that fire it and series that do not
(tests/deploy/alerts_test.yaml); every alert reads only metric names that localdns exports, scrape jobs that the
ServiceMonitors create, and links to a runbook entry that exists in docs/operations.md."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool
from tests.deploy.metric_names import known_names, metric_names
from tests.deploy.render import DEPLOY, ROOT, find, find_all, rendered

TESTS = Path(__file__).with_name("alerts_test.yaml")
RUNBOOKS = ROOT / "docs" / "operations.md"
SEVERITIES = {"warning", "critical"}


@pytest.fixture(scope="module")
def objects() -> list[dict]:
    return rendered(("builtin-certs", "servicemonitor"))


@pytest.fixture(scope="module")
def rules(objects) -> list[dict]:
    rule = find(objects, "PrometheusRule", "localdns", "localdns-system")
    alerts = [r for group in rule["spec"]["groups"] for r in group["rules"]]
    assert alerts and all("alert" in r for r in alerts)
    return alerts


def rule_file(objects: list[dict], directory: Path) -> Path:
    """The PrometheusRule's groups as a Prometheus rule file: what the Operator hands to Prometheus."""
    rule = find(objects, "PrometheusRule", "localdns", "localdns-system")
    path = directory / "localdns.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": rule["spec"]["groups"]}, sort_keys=False))
    return path


def run(*argv: str, cwd: Path) -> subprocess.CompletedProcess:
    return subprocess.run(argv, cwd=cwd, capture_output=True, text=True, timeout=120)


def filled(template: str, labels: dict[str, str]) -> str:
    """An annotation as Prometheus writes it for an alert with these labels. Only `{{ $labels.NAME }}` is used in
    our annotations; a label the alert does not carry fails here (Prometheus would print `<no value>`)."""
    text = re.sub(r"\{\{\s*\$labels\.(\w+)\s*\}\}", lambda m: labels[m.group(1)], template)
    assert "{{" not in text, f"template beyond $labels: {template}"
    return text


def test_prometheusrule_has_the_fields_its_crd_requires(objects) -> None:
    """kubernetes-validate has no schema for monitoring.coreos.com; these are the PrometheusRule CRD's
    constraints on what we use (promtool, below, checks the rules themselves)."""
    rule = find(objects, "PrometheusRule", "localdns", "localdns-system")
    assert set(rule["spec"]) == {"groups"}
    groups = rule["spec"]["groups"]
    assert len({g["name"] for g in groups}) == len(groups)
    for group in groups:
        assert set(group) <= {"name", "interval", "rules"} and group["name"]
        for r in group["rules"]:
            assert set(r) <= {"alert", "record", "expr", "for", "labels", "annotations"}
            assert ("alert" in r) != ("record" in r) and isinstance(r["expr"], str)
            assert re.fullmatch(r"(0|(\d+y)?(\d+w)?(\d+d)?(\d+h)?(\d+m)?(\d+s)?(\d+ms)?)", r.get("for", "0"))
            for key in ("labels", "annotations"):
                assert all(isinstance(k, str) and isinstance(v, str) for k, v in r.get(key, {}).items())


def test_promtool_accepts_the_rules(objects, tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    result = run(promtool, "check", "rules", str(rule_file(objects, tmp_path)), cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_fires_and_holds_on_its_test_series(objects, rules, tmp_path: Path) -> None:
    promtool = require_tool("promtool")
    rule_file(objects, tmp_path)
    annotations = {r["alert"]: r["annotations"] for r in rules}
    suite = yaml.safe_load(TESTS.read_text())
    suite["rule_files"] = ["localdns.rules.yaml"]
    for case in suite["tests"]:
        for check in case["alert_rule_test"]:
            for alert in check["exp_alerts"]:
                labels = {"alertname": check["alertname"], **alert["exp_labels"]}
                alert["exp_annotations"] = {key: filled(value, labels)
                                            for key, value in annotations[check["alertname"]].items()}
    (tmp_path / "alerts_test.yaml").write_text(yaml.safe_dump(suite, sort_keys=False))
    result = run(promtool, "test", "rules", "alerts_test.yaml", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "SUCCESS" in result.stdout


def test_every_alert_has_series_that_fire_it_and_series_that_do_not(rules) -> None:
    suite = yaml.safe_load(TESTS.read_text())
    checks = [check for case in suite["tests"] for check in case["alert_rule_test"]]
    names = {r["alert"] for r in rules}
    assert {c["alertname"] for c in checks} == names  # and no test of an alert that does not exist
    for name in names:
        mine = [c for c in checks if c["alertname"] == name]
        assert any(c["exp_alerts"] for c in mine), f"{name}: no series that fire it"
        assert any(not c["exp_alerts"] for c in mine), f"{name}: no series that must leave it quiet"


def test_alerts_read_only_exported_metrics(rules) -> None:
    known = known_names()
    for rule in rules:
        unknown = metric_names(rule["expr"]) - known
        assert not unknown, f"{rule['alert']} reads metrics nothing exports: {unknown}"


def test_alerts_read_the_jobs_the_servicemonitors_create(objects, rules) -> None:
    """A ServiceMonitor without jobLabel names its scrape job after the Service it selects; renaming that Service
    would silently empty every alert."""
    services = {}
    for monitor in find_all(objects, "ServiceMonitor"):
        assert "jobLabel" not in monitor["spec"]
        [service] = [s for s in find_all(objects, "Service") if monitor["spec"]["selector"]["matchLabels"].items()
                     <= s["metadata"].get("labels", {}).items()]
        services[monitor["metadata"]["name"]] = service["metadata"]["name"]
    jobs = {job for rule in rules for job in re.findall(r'\bjob="([^"]+)"', rule["expr"])}
    assert jobs == set(services.values()) == {"localdns-cache-metrics", "localdns-webhook"}
    # The node label the cache alerts group by is the one the cache ServiceMonitor writes.
    relabel = find(objects, "ServiceMonitor", "localdns-cache")["spec"]["endpoints"][0]["relabelings"]
    assert {"sourceLabels": ["__meta_kubernetes_pod_node_name"], "targetLabel": "node"} in relabel


def test_every_alert_says_what_it_means_and_links_its_runbook(rules) -> None:
    cluster = yaml.safe_load((DEPLOY / "cluster" / "cluster.yaml").read_text())["data"]
    anchors = heading_anchors(RUNBOOKS.read_text())
    for rule in rules:
        assert rule["labels"]["severity"] in SEVERITIES, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"], rule["alert"]
        base, _, anchor = rule["annotations"]["runbook_url"].partition("#")
        assert base == cluster["runbookURL"], rule["alert"]
        assert anchor == rule["alert"].lower() and anchor in anchors, f"{rule['alert']}: no runbook heading"


def test_runbook_url_follows_cluster_yaml() -> None:
    url = "https://wiki.example.com/platform/localdns-runbooks"
    rule = find(rendered(("builtin-certs", "servicemonitor"), runbookURL=url), "PrometheusRule", "localdns")
    urls = [r["annotations"]["runbook_url"] for group in rule["spec"]["groups"] for r in group["rules"]]
    assert urls and all(u == f"{url}#{r}" for u, r in zip(urls, (
        r["alert"].lower() for group in rule["spec"]["groups"] for r in group["rules"])))


def heading_anchors(markdown: str) -> set[str]:
    """The anchors GitHub gives a document's headings: lower case, punctuation dropped, spaces to hyphens."""
    anchors = set()
    for line in markdown.splitlines():
        match = re.match(r"#{1,6}\s+(.*)", line)
        if match:
            text = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower())
            anchors.add(text.replace(" ", "-"))
    return anchors


@pytest.mark.parametrize("expr,names", [
    ('sum by (node) (rate(coredns_dns_responses_total{job="x", rcode="SERVFAIL"}[5m])) > 0.05',
     {"coredns_dns_responses_total"}),
    ('(a_total > 0) - time() < 14 * 86400', {"a_total"}),
    ('max by (namespace, pod) (b{c="d"} == 0) * on (namespace, pod) group_left (node) e or absent(f offset 5m)',
     {"b", "e", "f"}),
    ('histogram_quantile(0.99, sum by (le) (rate(g_bucket{node=~"$node"}[$__rate_interval])))', {"g_bucket"}),
    ('sum(rate(h[5m])) / (sum(rate(h[5m])) + sum(rate(i[5m]))) and on() vector(1)', {"h", "i"}),
    ('1e3 * j unless k{l="or (m)"}', {"j", "k"}),
])
def test_metric_name_reader(expr: str, names: set[str]) -> None:
    assert metric_names(expr) == names
