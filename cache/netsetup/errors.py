"""The one error of the node side: what could not be set up, and the label it is counted under.

`errortype` is the `errortype` label of coredns_nodecache_setup_errors_total (node-local-dns's metric), so a
dashboard built for node-local-dns reads ours. An OSError, so that the daemon reports a node that cannot offer the
listen address the same way as a socket it cannot bind.
"""
from __future__ import annotations


class SetupError(OSError):
    """The node network cannot be set up as asked; the message says what to change."""

    def __init__(self, message: str, errortype: str) -> None:
        super().__init__(message)
        self.errortype = errortype

    def __str__(self) -> str:
        return str(self.args[0])
