"""Run NodeNetwork inside a test namespace (a fresh interpreter under `ip netns exec`) and report what happened."""
from __future__ import annotations

import textwrap

from tests.netsetup.netns import Netns

_TEMPLATE = """
import ipaddress, json, logging, sys
logging.basicConfig(level=logging.INFO, stream=sys.stderr)
from cache.netsetup import NodeNetwork, SetupError
from cache.netsetup.iptables import Iptables
errors = []
net = NodeNetwork([ipaddress.ip_address(a) for a in {addresses!r}], 53, {health_port!r}, {interface!r}, {kind!r},
                  errors.append, iptables={iptables}, fallback={fallback!r})
result = {{}}
{body}
print(json.dumps(dict(result, errors=errors)))
"""


def run_node_network(ns: Netns, body: str, addresses: tuple[str, ...] = ("169.254.20.10",), kind: str = "bridge",
                     interface: str = "nodelocaldns", health_port: int | None = 8080, backend: str | None = "nft",
                     env: dict[str, str] | None = None, fallback: bool = False) -> dict:
    """`body` sees `net`, `errors` (errortypes passed to on_error) and fills `result`; returns result + errors."""
    iptables = "None" if backend is None else f"Iptables({backend!r})"
    code = _TEMPLATE.format(addresses=list(addresses), health_port=health_port, interface=interface, kind=kind,
                            iptables=iptables, fallback=fallback, body=textwrap.dedent(body))
    return ns.python(code, env=env)
