"""The real entry points, as a user runs them: `python -m webhook audit|rollout|status` (the documented names) and
the kubectl plugin, `kubectl localdns audit|rollout|status`, run by a real kubectl."""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.cluster_tools import workloads as w
from tests.conftest import require_tool

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run(*args: str) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALDNS_")}
    return subprocess.run([sys.executable, "-m", "webhook", *args], capture_output=True, text=True, timeout=120,
                          cwd=ROOT, env=env)


def test_subcommands_are_wired(api):
    w.localdns(api)
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web")
    audit = run("audit", "--kubeconfig", str(api.kubeconfig_path), "-o", "json")
    assert audit.returncode == 1, audit.stderr
    assert json.loads(audit.stdout)["needsRestart"][0]["name"] == "web"
    with w.Controller(api, "Deployment", "shop", "web"):
        rollout = run("rollout", "--kubeconfig", str(api.kubeconfig_path), "--yes", "--poll-interval", "0.02")
    assert rollout.returncode == 0, rollout.stderr
    # Not a terminal: progress is plain lines on stderr, the result on stdout.
    assert "deployment shop/web: restarting: restart requested" in rollout.stderr
    assert "deployment shop/web: ready:" in rollout.stderr
    assert "\r" not in rollout.stderr
    status = run("status", "--kubeconfig", str(api.kubeconfig_path))
    assert status.returncode == 1 and "MutatingWebhookConfiguration localdns-webhook is not installed" in status.stdout
    assert "Traceback" not in audit.stderr + rollout.stderr + status.stderr


def test_kubectl_runs_the_tools_as_its_localdns_plugin(api):
    kubectl = require_tool("kubectl")
    w.localdns(api)
    w.namespace(api, "shop")
    w.deployment(api, "shop", "web")
    # The console script pip installs beside this interpreter, found on PATH as kubectl finds plugins.
    scripts = str(Path(sys.executable).parent)
    env = {k: v for k, v in os.environ.items() if not k.startswith("LOCALDNS_")}
    env["PATH"] = os.pathsep.join([scripts, env.get("PATH", "")])
    listed = subprocess.run([kubectl, "plugin", "list"], capture_output=True, text=True, timeout=60, env=env)
    assert os.path.join(scripts, "kubectl-localdns") in listed.stdout, listed.stdout + listed.stderr
    audit = subprocess.run([kubectl, "localdns", "audit", "--kubeconfig", str(api.kubeconfig_path), "-o", "json"],
                           capture_output=True, text=True, timeout=120, cwd=ROOT, env=env)
    assert audit.returncode == 1, audit.stderr
    assert json.loads(audit.stdout)["needsRestart"][0]["name"] == "web"
    usage = subprocess.run([kubectl, "localdns", "status", "--help"], capture_output=True, text=True, timeout=60,
                           env=env)
    assert usage.returncode == 0 and usage.stdout.startswith("usage: kubectl localdns status ")
