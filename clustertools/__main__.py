"""`python -m clustertools audit|rollout|status`, also installed as the kubectl plugin `kubectl localdns ...` and
reachable as `python -m webhook audit|rollout|status` (the names the docs have always used)."""
from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from clustertools import audit, kubednsmirror, rollout, status
from clustertools.cli import guarded

COMMANDS = {"audit": audit, "rollout": rollout, "status": status, "mirror-kube-dns": kubednsmirror}


def build_parser(prog: str = "python -m clustertools") -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog=prog, description="localdns cluster tools: move running workloads onto "
                                     "the node-local DNS cache and check the installation")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, module in COMMANDS.items():
        command = commands.add_parser(name, help=module.HELP, description=module.DESCRIPTION)
        module.add_arguments(command)
        command.set_defaults(run=module.run)
    return parser


def main(argv: Sequence[str] | None = None, prog: str = "python -m clustertools") -> int:
    """Run one command line (from the command's name on); the exit status is the command's (docs/cluster-tools.md)."""
    args = build_parser(prog).parse_args(argv)
    return guarded(args.run, args)


def kubectl_plugin() -> int:
    """The console script `kubectl-localdns`: kubectl runs it for `kubectl localdns ...`."""
    return main(prog="kubectl localdns")


if __name__ == "__main__":
    sys.exit(main())
