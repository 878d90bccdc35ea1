"""What `audit`, `rollout` and `status` share on the command line: the common options, the webhook settings they
judge pods by, the exit codes, and the guard that turns every failure into one line on stderr."""
from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable

from localdns.kube import DEFAULT_TIMEOUT, Client, KubeError, connect
from webhook.config import ConfigError, Settings

EXIT_OK = 0
EXIT_FINDINGS = 1  # audit: something needs a restart; rollout: a restart failed; status: something is wrong
EXIT_ERROR = 2  # bad usage, cluster unreachable, credentials rejected: no result at all
EXIT_PARTIAL = 3  # some namespaces or objects could not be read: the result is incomplete

Run = Callable[[argparse.Namespace], int]


class CommandError(Exception):
    """A command cannot start (bad settings or options); str() says what to fix."""


def add_common_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--kubeconfig", help="kubeconfig file (default: $KUBECONFIG; in a pod, its ServiceAccount; "
                                             "else ~/.kube/config)")
    parser.add_argument("--context", help="kubeconfig context to use (default: the current context)")
    parser.add_argument(
        "-n", "--namespace", action="append", default=[], metavar="NS",
        help="only these namespaces (repeatable or comma-separated; default: every opted-in namespace)",
    )
    parser.add_argument("-o", "--output", choices=("table", "json", "yaml"), default="table", help="output format")
    parser.add_argument("--request-timeout", type=float, default=DEFAULT_TIMEOUT, metavar="SECONDS",
                        help=f"give up on one API call after this long (default: {DEFAULT_TIMEOUT:g})")
    parser.add_argument(
        "--config", metavar="FILE",
        help="the webhook's settings YAML (as LOCALDNS_CONFIG); default: LOCALDNS_* variables, else built-in defaults",
    )


def connect_from(args: argparse.Namespace) -> Client:
    if args.request_timeout <= 0:
        raise CommandError("--request-timeout must be positive")
    return connect(args.kubeconfig, args.context, args.request_timeout)


def requested_namespaces(args: argparse.Namespace) -> list[str]:
    names: list[str] = []
    for value in getattr(args, "namespace", None) or []:
        names.extend(n.strip() for n in value.split(",") if n.strip())
    return list(dict.fromkeys(names))


def load_settings(args: argparse.Namespace) -> Settings:
    """The webhook's settings from this environment (LOCALDNS_*), or the YAML file given with --config."""
    environ = dict(os.environ)
    if getattr(args, "config", None):
        environ["LOCALDNS_CONFIG"] = args.config
    try:
        return Settings.from_env(environ)
    except ConfigError as exc:
        raise CommandError(f"bad webhook settings: {exc}") from None


def guarded(run: Run, args: argparse.Namespace) -> int:
    """Run a command: failures and interrupts become one line on stderr and an exit code, never a traceback."""
    try:
        return run(args)
    except (KubeError, CommandError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("interrupted: nothing further was started (restarts already requested go on in the cluster)",
              file=sys.stderr)
        return 130
    except BrokenPipeError:
        return EXIT_ERROR
    except Exception as exc:
        if os.environ.get("LOCALDNS_DEBUG"):
            raise
        print(f"error: unexpected {type(exc).__name__}: {exc} (set LOCALDNS_DEBUG=1 for details)", file=sys.stderr)
        return EXIT_ERROR
