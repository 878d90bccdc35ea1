"""`audit`: pods that would be injected now are grouped by what recreates them; the rest say why they are left."""
from __future__ import annotations

from tests.cluster_tools import workloads as w


def seed_mixed_namespace(api) -> None:
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web", replicas=2)
    w.deployment(api, "shop", "api", replicas=1, injected=True)
    w.statefulset(api, "shop", "db", replicas=2)
    w.daemonset(api, "shop", "agent", nodes=2)
    w.cronjob(api, "shop", "nightly")
    w.job(api, "shop", "migrate")
    w.pod(api, "shop", "debug")
    w.pod(api, "shop", "opted-out", annotations={"localdns.io/inject": "disabled"})
    w.daemonset(api, "shop", "node-exporter", nodes=1, host_network=True)
    w.pod(api, "shop", "custom-dns", dns_policy="Default")
    w.pod(api, "shop", "done", phase="Succeeded")


def test_needing_pods_are_grouped_by_top_owner(api, cli):
    seed_mixed_namespace(api)
    result = cli("audit", "-o", "json")
    data = result.json()
    groups = {(g["kind"], g["name"]): g for g in data["needsRestart"]}
    assert set(groups) == {("Deployment", "web"), ("StatefulSet", "db"), ("DaemonSet", "agent"),
                           ("CronJob", "nightly"), ("Job", "migrate"), ("Pod", "debug")}
    assert groups[("Deployment", "web")]["pods"] == ["web-7d4b9c8f6d-00000", "web-7d4b9c8f6d-00001"]
    assert groups[("Deployment", "web")]["action"] == "restart"
    assert groups[("CronJob", "nightly")]["action"] == "none"
    assert "next scheduled run" in groups[("CronJob", "nightly")]["explanation"]
    assert groups[("Job", "migrate")]["action"] == "none"
    assert groups[("Pod", "debug")]["action"] == "delete-bare-pod"
    assert result.code == 1
    assert data["partial"] is False


def test_untouched_pods_carry_the_webhooks_reason(api, cli):
    seed_mixed_namespace(api)
    data = cli("audit", "-o", "json").json()
    reasons = {u["pod"]: u["reason"] for u in data["untouched"]}
    assert set(reasons) == {"opted-out", "node-exporter-00000", "custom-dns", "done"}
    assert "opted out" in reasons["opted-out"]
    assert "hostNetwork" in reasons["node-exporter-00000"]
    assert "dnsPolicy Default" in reasons["custom-dns"]
    assert "finished" in reasons["done"]
    owners = {u["pod"]: u["owner"] for u in data["untouched"]}
    assert owners["node-exporter-00000"] == "daemonset/node-exporter"
    summary = data["namespaces"][0]
    assert summary == {"name": "shop", "mode": "enabled", "readable": True, "pods": 14, "injected": 1,
                       "needsRestart": 9, "wouldInject": 0, "untouched": 4}


def test_table_is_readable_and_yaml_matches_json(api, cli):
    seed_mixed_namespace(api)
    table = cli("audit")
    assert table.code == 1
    assert "deployment/web" in table.out and "cronjob/nightly" in table.out
    assert "Rightly untouched (4 pods)" in table.out
    assert "python -m webhook rollout" in table.out
    assert cli("audit", "-o", "yaml").yaml() == cli("audit", "-o", "json").json()


def test_nothing_to_restart_exits_zero(api, cli):
    w.namespace(api, "calm")
    w.deployment(api, "calm", "web", injected=True)
    w.namespace(api, "elsewhere", opted_in=False)
    w.deployment(api, "elsewhere", "legacy")  # not opted in: the webhook never touches it
    result = cli("audit")
    assert result.code == 0, result.out
    assert "Nothing needs a restart." in result.out
    assert "elsewhere" not in result.out


def test_only_opted_in_namespaces_and_named_ones(api, cli):
    w.namespace(api, "a")
    w.deployment(api, "a", "web")
    w.namespace(api, "b")
    w.deployment(api, "b", "web")
    w.namespace(api, "plain", opted_in=False)
    data = cli("audit", "-o", "json").json()
    assert [n["name"] for n in data["namespaces"]] == ["a", "b"]
    data = cli("audit", "-o", "json", "--namespace", "b,plain", "-n", "missing").json()
    assert [n["name"] for n in data["namespaces"]] == ["b"]
    assert any("plain is not opted in" in note for note in data["notes"])
    assert any("missing does not exist" in note for note in data["notes"])


def test_excluded_namespace_is_noted_and_never_needs_restart(api, cli, monkeypatch):
    w.namespace(api, "kube-system")
    w.deployment(api, "kube-system", "coredns")
    result = cli("audit", "-o", "json")
    data = result.json()
    assert data["needsRestart"] == []
    assert any("excluded" in note for note in data["notes"])
    assert result.code == 0
    # The same rule as the webhook, with the webhook's settings: un-excluding it makes coredns need a restart.
    monkeypatch.setenv("LOCALDNS_EXCLUDED_NAMESPACES", "localdns-system")
    assert cli("audit", "-o", "json").json()["needsRestart"][0]["name"] == "coredns"


def test_settings_file_is_the_webhooks(api, cli, tmp_path):
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web", injected=True)  # injected with 169.254.20.10
    config = tmp_path / "settings.yaml"
    config.write_text("local_ip: 169.254.53.53\n")
    data = cli("audit", "-o", "json", "--config", str(config)).json()
    # With another cache address the old injection no longer counts as injected: the pods need a restart.
    assert [g["name"] for g in data["needsRestart"]] == ["web"]
    # The same pod, opted out since: left alone, and the table says it still has the old settings.
    w.edit(api, "pods", "shop", "web-7d4b9c8f6d-00000",
           lambda p: p["metadata"]["annotations"].update({"localdns.io/inject": "false"}))
    data = cli("audit", "-o", "json", "--config", str(config)).json()
    assert [g["pods"] for g in data["needsRestart"]] == [["web-7d4b9c8f6d-00001"]]
    assert "opted out" in data["untouched"][0]["reason"] and "until recreated" in data["untouched"][0]["reason"]
    config.write_text("ndots: many\n")
    bad = cli("audit", "--config", str(config))
    assert bad.code == 2 and "ndots" in bad.err and "Traceback" not in bad.err
