"""docs/install.md's recipes work on the real tree: its health-port patch renders with kustomize, moves the flag
and all three probes together, and the cache accepts the result; the files and components it names exist."""
from __future__ import annotations

import re

import yaml

from tests.deploy.render import (
    ALL_COMPONENTS,
    DEPLOY,
    ROOT,
    container,
    copy_tree,
    expanded_args,
    find,
    flag_values,
    kustomize,
    select_components,
)

DOC = ROOT / "docs" / "install.md"


def test_health_port_patch_moves_the_flag_and_the_probes(tmp_path) -> None:
    text = DOC.read_text()
    section = text[text.index("To move the cache's health port"):]
    block = re.search(r"```yaml\n(.*?)```", section, re.S).group(1)
    patches = yaml.safe_load(block)["patches"]
    tree = copy_tree(tmp_path)
    select_components(tree, ("builtin-certs",))
    kustomization = tree / "default" / "kustomization.yaml"
    document = yaml.safe_load(kustomization.read_text())
    document["patches"] = patches
    kustomization.write_text(yaml.safe_dump(document))
    cache = container(find(kustomize(tree / "default"), "DaemonSet", "localdns-cache"), "cache")
    assert flag_values(expanded_args(cache, {"status.hostIP": "192.0.2.7"}), "--health") == ["169.254.20.10:8081"]
    for probe in ("startupProbe", "livenessProbe", "readinessProbe"):
        assert cache[probe]["httpGet"]["port"] == 8081


def test_names_in_the_doc_exist() -> None:
    text = DOC.read_text()
    for component in ALL_COMPONENTS:
        assert f"`{component}`" in text, f"docs/install.md does not describe {component}"
    for path in set(re.findall(r"`(deploy/[\w./-]+)`", text)):
        assert (ROOT / path.rstrip("/")).exists(), path
    assert set(p.name for p in (DEPLOY / "components").iterdir()) == set(ALL_COMPONENTS)
