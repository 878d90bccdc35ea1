"""The node side of the cache: the link-local interface, the rules that keep its traffic out of conntrack, and their
teardown. `NodeNetwork` is what the daemon uses; `python -m cache.netsetup` is the same by hand."""
from __future__ import annotations

from .errors import SetupError
from .network import NodeNetwork

__all__ = ["NodeNetwork", "SetupError"]
