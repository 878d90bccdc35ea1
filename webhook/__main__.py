"""`python -m webhook serve|preview`: the admission webhook's command line.

`python -m webhook audit|rollout|status|demo` keep working too, though those commands belong to other programs
(the cluster tools, and the demo that runs certs, the webhook and the cache together): the table HANDOVER names the
function each is handed to, imported only when its subcommand is chosen, so `serve` loads none of them.
"""
from __future__ import annotations

import argparse
import dataclasses
import importlib
import logging
import os
import sys
from collections.abc import Callable, Sequence

from webhook import logs
from webhook.config import DEFAULT_DRAIN_SECONDS, DEFAULT_LIMITS, DEFAULT_MAX_BODY_BYTES, ConfigError, Settings
from webhook.preview import DEFAULT_CLUSTER_DNS

# Subcommand -> ("module:function", help). The function gets the command line from the subcommand on and the
# program's name, `function(argv, prog)`, and returns the exit status.
HANDOVER: dict[str, tuple[str, str]] = {
    "audit": ("clustertools.__main__:main",
              "list running pods that do not use the local DNS cache yet, grouped by what recreates them"),
    "rollout": ("clustertools.__main__:main",
                "restart the workloads `audit` lists, like `kubectl rollout restart` (dry run unless --yes)"),
    "status": ("clustertools.__main__:main", "check the installation: webhook configuration, certificates, webhook "
                                             "and cache readiness, namespaces"),
    "demo": ("localdns.demo:main", "run the webhook on loopback and send it sample pods, then resolve their names "
                                   "through the cache"),
}


LOG_FORMAT_HELP = "text (one line per record) or json (one JSON object per line: time, level, logger, msg, fields)"


def _settings() -> Settings:
    return Settings.from_env(os.environ)


def _serve(args: argparse.Namespace) -> int:
    from webhook.app import create_app
    from webhook.metrics import Metrics
    from webhook.server import serve

    settings = _settings()
    logging.getLogger("localdns.webhook").info("settings: %s", settings.describe())
    limits = dataclasses.replace(DEFAULT_LIMITS, max_connections=args.max_connections)
    metrics = Metrics()
    view = None
    if args.networkpolicies == "watch":
        from webhook.netpolview import PolicyView  # the Kubernetes client: for serve only

        view = PolicyView.from_credentials(args.kubeconfig, args.api_timeout, settings.local_ip, metrics)
        view.start()
    try:
        serve(create_app(settings, metrics, max_body_bytes=args.max_body_bytes, networkpolicies=view), args.tls_cert,
              args.tls_key, args.host, args.port, drain_seconds=args.drain_seconds, limits=limits)
    finally:
        if view is not None:
            view.stop()
    return 0


def _preview(args: argparse.Namespace) -> int:
    from webhook.preview import run

    run(args.file, args.namespace, _settings(), cluster_dns=args.cluster_dns, node_resolv_conf=args.node_resolv_conf,
        dry_run=args.dry_run)
    return 0


def _handed_over(target: str) -> Callable[[Sequence[str], str], int]:
    module, _, function = target.partition(":")
    handler: Callable[[Sequence[str], str], int] = getattr(importlib.import_module(module), function)
    return handler


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m webhook", description="localdns admission webhook")
    parser.add_argument("--log-level", default=os.environ.get("LOCALDNS_LOG_LEVEL", "INFO"),
                        help="DEBUG, INFO, WARNING or ERROR (default INFO, or LOCALDNS_LOG_LEVEL)")
    parser.add_argument("--log-format", default=os.environ.get("LOCALDNS_LOG_FORMAT", "text"),
                        help=LOG_FORMAT_HELP + " (default text, or LOCALDNS_LOG_FORMAT)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    serve = subparsers.add_parser("serve", help="serve the admission webhook over HTTPS",
                                  description="Settings come from LOCALDNS_* variables and LOCALDNS_CONFIG.")
    serve.add_argument("--host", default="0.0.0.0", help="address to listen on (default 0.0.0.0; '::' for IPv6)")
    serve.add_argument("--port", type=int, default=8443, help="HTTPS port (default 8443)")
    serve.add_argument("--tls-cert", required=True, help="PEM certificate chain; re-read when it changes")
    serve.add_argument("--tls-key", required=True, help="PEM private key; re-read when it changes")
    serve.add_argument("--drain-seconds", type=int, default=DEFAULT_DRAIN_SECONDS,
                       help=f"on SIGTERM, wait this long for in-flight requests (default {DEFAULT_DRAIN_SECONDS})")
    serve.add_argument("--max-body-bytes", type=int, default=DEFAULT_MAX_BODY_BYTES,
                       help=f"refuse larger request bodies with 413 (default {DEFAULT_MAX_BODY_BYTES})")
    serve.add_argument("--max-connections", type=int, default=DEFAULT_LIMITS.max_connections,
                       help=f"connections open at once; at the limit the one that waited longest for its client is "
                            f"closed (default {DEFAULT_LIMITS.max_connections})")
    serve.add_argument("--networkpolicies", choices=("watch", "off"), default="watch",
                       help="watch: keep a view of every NetworkPolicy and leave pods whose policies block DNS to the "
                            "local IP on kube-dns (needs list and watch on networkpolicies); off: no check "
                            "(default watch)")
    serve.add_argument("--kubeconfig", help="credentials for the NetworkPolicy view (default: $KUBECONFIG; in a pod, "
                                            "its ServiceAccount; else ~/.kube/config)")
    serve.add_argument("--api-timeout", type=float, default=30.0, metavar="SECONDS",
                       help="give up on one call to the API server after this long (default 30)")
    # Also after `serve`, where the Deployment's other flags are; SUPPRESS keeps the one given before it.
    serve.add_argument("--log-format", default=argparse.SUPPRESS, help=LOG_FORMAT_HELP)
    serve.set_defaults(func=_serve)

    preview = subparsers.add_parser("preview", help="show what the webhook would do to a pod or workload")
    preview.add_argument("file", help="YAML or JSON file with a Pod or workload ('-' for stdin)")
    preview.add_argument("--namespace", "-n", help="namespace the pod is created in (default: the object's, "
                                                   "else 'default')")
    preview.add_argument("--cluster-dns", default=DEFAULT_CLUSTER_DNS,
                         help=f"kubelet's --cluster-dns, to show the file of a pod left unchanged "
                              f"(default {DEFAULT_CLUSTER_DNS})")
    preview.add_argument("--node-resolv-conf", help="a node's resolv.conf, for pods that use the node's DNS")
    preview.add_argument("--dry-run", action="store_true",
                         help="as in a namespace labelled localdns.io/inject=dry-run: the pod keeps its DNS and gets "
                              "only the annotation localdns.io/dry-run")
    preview.set_defaults(func=_preview)

    # The handed-over commands parse their own options (and --help): everything after the name is theirs.
    for name, (target, help_text) in HANDOVER.items():
        subparsers.add_parser(name, help=help_text, add_help=False).set_defaults(handover=target)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    handover = getattr(args, "handover", None)
    if rest and handover is None:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    if args.log_format not in ("text", "json"):
        print(f"localdns-webhook: unknown log format {args.log_format!r}; use text or json", file=sys.stderr)
        return 2
    try:
        logs.configure(args.log_level, args.log_format)
    except ValueError:
        print(f"localdns-webhook: unknown log level {args.log_level!r}; use DEBUG, INFO, WARNING or ERROR",
              file=sys.stderr)
        return 2
    try:
        if handover is not None:
            return _handed_over(handover)([args.command, *rest], parser.prog)
        return int(args.func(args))
    except ConfigError as error:
        print(f"localdns-webhook: configuration error: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"localdns-webhook: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
