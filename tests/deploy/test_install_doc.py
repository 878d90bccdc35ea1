"""docs/install.md and the README describe the real tree: their tables of cluster.yaml values list exactly the keys
and defaults of deploy/cluster/cluster.yaml, and the files and components the guide names exist."""
from __future__ import annotations

import re

import pytest
import yaml

from tests.deploy.render import ALL_COMPONENTS, DEPLOY, ROOT

DOC = ROOT / "docs" / "install.md"


def documented_values(text: str) -> dict[str, str]:
    """Rows `| `key` | `default` | ...` of the first table whose rows name cluster.yaml keys (the table after the
    first mention of cluster.yaml, up to the first line that is not a table row)."""
    lines = text[text.index("deploy/cluster/cluster.yaml"):].splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("| key |"))
    rows = {}
    for line in lines[start + 2:]:
        if not line.startswith("|"):
            break
        match = re.match(r"\| `(\w+)` \| `([^`]*)` \|", line)
        assert match, f"table row without `key` | `default`: {line}"
        rows[match.group(1)] = match.group(2)
    return rows


@pytest.mark.parametrize("doc", [DOC, ROOT / "README.md"], ids=["install.md", "README"])
def test_cluster_values_table_is_cluster_yaml(doc) -> None:
    data = yaml.safe_load((DEPLOY / "cluster" / "cluster.yaml").read_text())["data"]
    assert documented_values(doc.read_text()) == {key: str(value) for key, value in data.items()}


def test_moving_a_port_needs_no_patch() -> None:
    # The ports are cluster.yaml values now (test_cluster_values.py follows them): the guide must not send users
    # back to a JSON patch of argument indexes, which breaks whenever the argument list changes.
    text = DOC.read_text()
    assert "op: replace" not in text and "args/3" not in text
    section = text[text.index("## Troubleshooting"):]
    assert "`healthPort`" in section and "`metricsPort`" in section


def test_names_in_the_doc_exist() -> None:
    text = DOC.read_text()
    for component in ALL_COMPONENTS:
        assert f"`{component}`" in text, f"docs/install.md does not describe {component}"
    for path in set(re.findall(r"`(deploy/[\w./-]+)`", text)):
        assert (ROOT / path.rstrip("/")).exists(), path
    assert set(p.name for p in (DEPLOY / "components").iterdir()) == set(ALL_COMPONENTS)


def test_the_networkpolicy_rule_in_the_guide_lets_dns_through_and_is_the_warnings() -> None:
    """The NetworkPolicy section's example is a valid policy (the 1.35 schema) that the webhook judges to allow DNS
    to the local IP, only thanks to the localdns rule; and that rule is the one the webhook's warning gives."""
    import kubernetes_validate

    from webhook import netpol
    section = DOC.read_text().split("## NetworkPolicy\n", 1)[1].split("\n## ", 1)[0]
    rule_block, policy_block = re.findall(r"```yaml\n(.*?)```", section, re.S)
    [rule] = yaml.safe_load(rule_block)
    policy = yaml.safe_load(policy_block)
    kubernetes_validate.validate(policy, "1.35", strict=True)
    local_ip = yaml.safe_load((DEPLOY / "cluster" / "cluster.yaml").read_text())["data"]["localIP"]
    assert policy["spec"]["egress"][-1] == rule
    assert [rule] == yaml.safe_load(netpol.egress_rule(local_ip))

    def reach(obj: dict) -> tuple[bool, bool]:
        result = netpol.reach({"app": "web"}, [netpol.compile_policy(obj, local_ip)])
        return result.udp, result.tcp

    assert reach(policy) == (True, True)
    without = {**policy, "spec": {**policy["spec"], "egress": policy["spec"]["egress"][:-1]}}
    assert reach(without) == (False, False)
