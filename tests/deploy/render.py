"""Render deploy/ with the real kubectl kustomize, and read the result the way the kubelet and API server would.

Used by every test in tests/deploy. `rendered(...)` copies the tree into a temporary directory, optionally edits
it as a user would (switch components on in deploy/default/kustomization.yaml, change a line of cluster.yaml),
and runs `kubectl kustomize` on the copy, so no test ever touches the real tree.
"""
from __future__ import annotations

import os
import re
import shutil
import subprocess
import tempfile
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

import kubernetes_validate
import yaml

from tests.conftest import require_tool

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
DEFAULT = DEPLOY / "default"
OPTIONAL_COMPONENTS = ("iptables-mode", "fallback-nameserver", "servicemonitor", "legacy-iptables-backend",
                       "grafana-dashboard", "kube-dns-mirror", "startup-taint")
TLS_COMPONENTS = ("builtin-certs", "cert-manager")
ALL_COMPONENTS = TLS_COMPONENTS + OPTIONAL_COMPONENTS

# What deploy/cluster/cluster.yaml ships with.
LOCAL_IP = "169.254.20.10"
CLUSTER_DOMAIN = "cluster.local"
KUBE_DNS = "10.96.0.10"
KUBE_DNS_UPSTREAM = "10.96.0.11"
IMAGE = "localdns:0.1.0"
HEALTH_PORT = 8080
METRICS_PORT = 9253
RUNBOOK_URL = "https://github.com/ORG/localdns/blob/main/docs/operations.md"

K8S_VERSION = "1.35.0"  # the kubectl/kustomize we render with; kubernetes-validate ships its schemas
CRD_GROUPS = ("cert-manager.io/", "monitoring.coreos.com/")  # no schema in kubernetes-validate: checked by hand


def kubectl() -> str:
    """kubectl 1.35 (kustomize v5.7): on PATH (`make test` puts .tools/bin there) or in .tools/bin."""
    local = ROOT / ".tools" / "bin" / "kubectl"
    if shutil.which("kubectl") is None and local.is_file() and os.access(local, os.X_OK):
        return str(local)
    return require_tool("kubectl")


def kustomize(directory: Path) -> list[dict]:
    """`kubectl kustomize DIR` parsed into objects; a render error fails with kustomize's own message."""
    result = subprocess.run([kubectl(), "kustomize", str(directory)], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, f"kubectl kustomize {directory} failed:\n{result.stderr}"
    return [doc for doc in yaml.safe_load_all(result.stdout) if doc]


def copy_tree(destination: Path) -> Path:
    target = destination / "deploy"
    shutil.copytree(DEPLOY, target)
    return target


def select_components(tree: Path, wanted: Iterable[str]) -> None:
    """Switch components on or off in a copy of deploy/default/kustomization.yaml, as its comments tell a user to:
    a wanted component's line is uncommented, every other component line is commented out."""
    wanted = set(wanted)
    unknown = wanted - set(ALL_COMPONENTS)
    assert not unknown, f"no such component {unknown}"
    path = tree / "default" / "kustomization.yaml"
    lines = []
    for line in path.read_text().splitlines():
        match = re.match(r"^(\s*)(#\s*)?- \.\./components/([\w-]+)(.*)$", line)
        if match:
            indent, _, name, rest = match.groups()
            line = f"{indent}{'' if name in wanted else '# '}- ../components/{name}{rest}"
        lines.append(line)
    path.write_text("\n".join(lines) + "\n")


def set_cluster_value(tree: Path, key: str, value: str) -> None:
    """The one-line edit of cluster.yaml a user makes (the line `  key: value`, comment kept)."""
    path = tree / "cluster" / "cluster.yaml"
    text, count = re.subn(rf"(?m)^(  {re.escape(key)}: )\S+", lambda m: m.group(1) + value, path.read_text())
    assert count == 1, f"cluster.yaml has no single line for {key}"
    path.write_text(text)


def rendered(components: Iterable[str] = ("builtin-certs",), directory: str = "default",
             **cluster_values: str) -> list[dict]:
    """Render deploy/default (or deploy/uninstall) with exactly these components and these cluster.yaml values
    changed."""
    with tempfile.TemporaryDirectory(prefix="localdns-deploy-") as scratch:
        tree = copy_tree(Path(scratch))
        select_components(tree, components)
        for key, value in cluster_values.items():
            set_cluster_value(tree, key, value)
        return kustomize(tree / directory)


def validation_failures(objects: list[dict]) -> list[str]:
    """kubernetes-validate's complaints about each object Kubernetes has a schema for (strict: unknown fields too)."""
    failures = []
    for obj in objects:
        if obj["apiVersion"].startswith(CRD_GROUPS):
            continue
        try:
            kubernetes_validate.validate(obj, K8S_VERSION, strict=True)
        except kubernetes_validate.ValidationError as error:
            failures.append(f"{obj['kind']}/{obj['metadata']['name']}: {error.message} at {list(error.path)}")
    return failures


# ---- reading the rendered objects ----

def find(objects: list[dict], kind: str, name: str, namespace: str | None = None) -> dict:
    matches = [o for o in objects if o["kind"] == kind and o["metadata"]["name"] == name
               and (namespace is None or o["metadata"].get("namespace") == namespace)]
    assert len(matches) == 1, f"expected one {kind} {name}, found {len(matches)}"
    return matches[0]


def find_all(objects: list[dict], kind: str) -> list[dict]:
    return [o for o in objects if o["kind"] == kind]


def pod_spec(workload: dict) -> dict:
    return workload["spec"]["template"]["spec"]


def container(workload: dict, name: str, init: bool = False) -> dict:
    containers = pod_spec(workload).get("initContainers" if init else "containers", [])
    matches = [c for c in containers if c["name"] == name]
    assert len(matches) == 1, f"{workload['metadata']['name']} has no single container {name!r}"
    return matches[0]


def all_containers(workload: dict) -> Iterator[dict]:
    spec = pod_spec(workload)
    yield from spec.get("initContainers", [])
    yield from spec.get("containers", [])


def plain_env(c: dict, downward: Mapping[str, str] = {}) -> dict[str, str]:
    """The container's environment as the kubelet builds it: literal values, and fieldRefs from `downward`
    (e.g. {"status.hostIP": "192.0.2.7"}); a reference this helper cannot resolve fails the test."""
    env: dict[str, str] = {}
    for item in c.get("env", []):
        if "value" in item:
            env[item["name"]] = expand(item["value"], env)
        else:
            field = item["valueFrom"]["fieldRef"]["fieldPath"]
            assert field in downward, f"env {item['name']} needs {field}"
            env[item["name"]] = downward[field]
    return env


def expand(text: str, env: Mapping[str, str]) -> str:
    """Kubernetes' $(VAR) expansion in command/args/env: defined names are replaced, `$$` is a literal `$`, an
    undefined $(NAME) stays as written (which is never what a manifest means, so tests check for it)."""
    def one(match: re.Match) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))
    return re.sub(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_.-]*)\)", one, text)


def expanded_args(c: dict, downward: Mapping[str, str] = {}) -> list[str]:
    env = plain_env(c, downward)
    args = [expand(a, env) for a in c.get("args", [])]
    unresolved = [a for a in args if re.search(r"\$\([^)]*\)", a)]
    assert not unresolved, f"container {c['name']}: args reference undefined variables: {unresolved}"
    return args


def flag_values(args: list[str], flag: str) -> list[str]:
    """Values of `--flag=value` and `--flag value` in an argument list."""
    values = []
    for i, arg in enumerate(args):
        if arg.startswith(flag + "="):
            values.append(arg.split("=", 1)[1])
        elif arg == flag and i + 1 < len(args):
            values.append(args[i + 1])
    return values


def cache_config(objects: list[dict]) -> tuple[str, dict]:
    """The cache's ConfigMap (generated, so its name carries a hash) and its parsed cache.yaml."""
    daemonset = find(objects, "DaemonSet", "localdns-cache")
    volume = next(v for v in pod_spec(daemonset)["volumes"] if v["name"] == "config")
    configmap = find(objects, "ConfigMap", volume["configMap"]["name"])
    return configmap["data"]["cache.yaml"], yaml.safe_load(configmap["data"]["cache.yaml"])
