"""`make demo` runs `python -m webhook demo`: no root, no cluster, no internet; exits 0 and stops its server."""
from __future__ import annotations

import io
import subprocess
import sys
import types
from pathlib import Path

from webhook import demo
from webhook.config import Settings

REPO = Path(__file__).resolve().parents[2]


def test_demo_command_prints_each_decision_and_resolv_conf_and_exits_0():
    done = subprocess.run([sys.executable, "-m", "webhook", "demo"], cwd=REPO, capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "decision: inject (injected nameservers=169.254.20.10 ndots=5)" in out
    assert "decision: skip (pod opted out with annotation localdns.io/inject: 'disabled')" in out
    assert "decision: skip (hostNetwork with ClusterFirst uses the node's resolv.conf)" in out
    assert "decision: already-injected" in out
    assert "      nameserver 169.254.20.10\n      nameserver 10.20.0.53\n" in out  # own dnsConfig kept
    assert "      options ndots:2\n" in out  # the per-pod ndots annotation
    assert "webhook stopped" in out


def test_demo_hands_the_pods_names_to_the_cache_demo(monkeypatch):
    calls = []
    fake = types.ModuleType("cache.demo")
    fake.run = lambda names, out=sys.stdout: calls.append(list(names))
    monkeypatch.setitem(sys.modules, "cache.demo", fake)
    out = io.StringIO()
    assert demo.run(out=out, settings=Settings(cluster_domain="corp.internal")) == 0
    assert calls == [["svc-1.default.svc.corp.internal", "svc-2.default.svc.corp.internal",
                      "svc-3.default.svc.corp.internal"]]


def test_demo_runs_without_a_cache_demo(monkeypatch):
    monkeypatch.setitem(sys.modules, "cache.demo", types.ModuleType("cache.demo"))  # no run(): skipped
    out = io.StringIO()
    assert demo.run(out=out) == 0
    assert "through the node-local cache" not in out.getvalue()
