"""The node side of the cache: the link-local interface, the rules that keep its traffic out of conntrack, the
fail-open fallback, and their teardown. `NodeNetwork` is what the daemon uses; `python -m cache.netsetup` is the
same by hand.

`NodeNetwork` is imported on first use: it brings the rule and netlink machinery, which a cache without
--setup-network never needs, while the settings only need the pure planning modules (fallback.py).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .errors import SetupError

if TYPE_CHECKING:
    from .network import NodeNetwork

__all__ = ["NodeNetwork", "SetupError"]


def __getattr__(name: str) -> Any:
    if name == "NodeNetwork":
        from .network import NodeNetwork
        return NodeNetwork
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
