"""The grafana-dashboard component: it renders a ConfigMap that Grafana's sidecar picks up, holding a dashboard that
parses, whose every query is PromQL that Prometheus accepts (promtool) and reads only metric names localdns exports,
and which shows what an admin looks for (the panels the issue lists). Schema validation of the ConfigMap itself runs
with every other object in test_render_and_validate.py."""
from __future__ import annotations

import json
import re
import subprocess
from pathlib import Path

import pytest
import yaml

from tests.conftest import require_tool
from tests.deploy.metric_names import known_names, metric_names
from tests.deploy.render import DEPLOY, ROOT, copy_tree, find, kustomize, rendered, select_components

SOURCE = DEPLOY / "components" / "grafana-dashboard" / "localdns.json"
# kubectl apply (client side) copies the object into an annotation, and all annotations together may hold 256 KiB.
ANNOTATION_LIMIT = 256 * 1024
# Grafana's variables, as Prometheus would see them once Grafana has filled them in.
GRAFANA_VARIABLES = {"$__rate_interval": "5m", "$__interval": "1m", "$__range": "1h", "$node": ".*"}
# What an admin looks for, each shown by at least one panel.
SHOWN = {
    "coredns_dns_requests_total", "coredns_dns_responses_total", "coredns_cache_hits_total",
    "coredns_cache_misses_total", "coredns_cache_entries", "coredns_forward_request_duration_seconds_bucket",
    "coredns_forward_healthcheck_failures_total", "coredns_forward_healthcheck_broken_total",
    "coredns_forward_responses_total", "coredns_nodecache_setup_errors_total", "localdns_fallback_armed",
    "localdns_fallback_endpoints", "localdns_fallback_last_refresh_timestamp_seconds",
    "localdns_webhook_admissions_total", "localdns_webhook_admission_duration_seconds_bucket",
    "localdns_webhook_certificate_expiry_timestamp_seconds",
}


@pytest.fixture(scope="module")
def configmap() -> dict:
    return find(rendered(("builtin-certs", "grafana-dashboard")), "ConfigMap", "localdns-dashboard", "localdns-system")


@pytest.fixture(scope="module")
def dashboard(configmap) -> dict:
    [(key, text)] = configmap["data"].items()
    assert key.endswith(".json")  # the sidecar writes the key as the file Grafana's provisioning reads
    return json.loads(text)


def panels(dashboard: dict) -> list[dict]:
    found = []
    for panel in dashboard["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # a collapsed row holds its panels
    return [p for p in found if p["type"] != "row"]


def queries(dashboard: dict) -> list[str]:
    """Every PromQL the dashboard sends: panel targets, and the selectors inside variable queries."""
    exprs = [t["expr"] for p in panels(dashboard) for t in p["targets"]]
    for variable in dashboard["templating"]["list"]:
        if variable["type"] == "query":
            query = variable["query"]["query"] if isinstance(variable["query"], dict) else variable["query"]
            match = re.fullmatch(r"label_values\((.*),\s*\w+\)", query)
            exprs.append(match.group(1) if match else query)
    return exprs


def test_configmap_is_what_grafanas_sidecar_loads(configmap) -> None:
    assert configmap["metadata"]["labels"]["grafana_dashboard"] == "1"
    assert configmap["metadata"]["name"] == "localdns-dashboard"  # no hash suffix: an edit replaces it in place
    assert configmap["data"]["localdns.json"] == SOURCE.read_text()
    assert len(json.dumps(configmap)) < ANNOTATION_LIMIT


def test_dashboard_is_self_contained(dashboard) -> None:
    assert dashboard["uid"] == "localdns" and dashboard["title"]
    [source] = [v for v in dashboard["templating"]["list"] if v["type"] == "datasource"]
    assert source["query"] == "prometheus"
    ids = [p["id"] for p in panels(dashboard)]
    assert len(ids) == len(set(ids))
    for panel in panels(dashboard):
        # Every query goes to the data source the user picks, never to a uid from someone else's Grafana.
        assert panel["datasource"] == {"type": "prometheus", "uid": f"${{{source['name']}}}"}, panel["title"]
        assert panel["targets"] and all(t["datasource"] == panel["datasource"] for t in panel["targets"])
        assert panel["title"] and panel["description"]


def test_panels_do_not_overlap(dashboard) -> None:
    taken: dict[tuple[int, int], str] = {}
    for panel in dashboard["panels"]:
        box = panel["gridPos"]
        assert box["x"] + box["w"] <= 24, panel["title"]
        for cell in ((x, y) for x in range(box["x"], box["x"] + box["w"])
                     for y in range(box["y"], box["y"] + box["h"])):
            assert cell not in taken, f"{panel['title']} overlaps {taken.get(cell)}"
            taken[cell] = panel["title"]


def test_every_query_reads_only_exported_metrics(dashboard) -> None:
    known = known_names()
    for expr in queries(dashboard):
        unknown = metric_names(expr) - known
        assert not unknown, f"reads metrics nothing exports: {unknown} in {expr}"


def test_the_dashboard_shows_what_an_admin_looks_for(dashboard) -> None:
    shown = set().union(*(metric_names(expr) for expr in queries(dashboard)))
    assert SHOWN <= shown, f"not shown: {SHOWN - shown}"


def test_every_query_is_promql_that_prometheus_accepts(dashboard, tmp_path: Path) -> None:
    """promtool parses each query (with Grafana's variables filled in) as a recording rule's expression."""
    promtool = require_tool("promtool")
    rules = []
    for i, expr in enumerate(queries(dashboard)):
        for variable, value in sorted(GRAFANA_VARIABLES.items(), key=lambda item: -len(item[0])):
            expr = expr.replace(variable, value)
        assert "$" not in expr, f"a Grafana variable this test does not fill in: {expr}"
        rules.append({"record": f"dashboard:query_{i}", "expr": expr})
    path = tmp_path / "dashboard.rules.yaml"
    path.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr


def test_the_documented_move_to_grafanas_namespace_renders(tmp_path: Path) -> None:
    """docs/operations.md's patch for a sidecar that only watches its own namespace, applied as the doc says."""
    text = (ROOT / "docs" / "operations.md").read_text()
    block = re.search(r"```yaml\n(.*?)```", text[text.index("## Dashboard"):], re.S).group(1)
    tree = copy_tree(tmp_path)
    select_components(tree, ("builtin-certs", "grafana-dashboard"))
    kustomization = tree / "default" / "kustomization.yaml"
    document = yaml.safe_load(kustomization.read_text())
    document["patches"] = yaml.safe_load(block)["patches"]
    kustomization.write_text(yaml.safe_dump(document))
    moved = find(kustomize(tree / "default"), "ConfigMap", "localdns-dashboard")
    assert moved["metadata"]["namespace"] == "monitoring"
    assert moved["metadata"]["labels"]["grafana_dashboard"] == "1"

