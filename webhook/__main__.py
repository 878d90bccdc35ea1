"""`python -m webhook serve|preview|demo` (and `audit|rollout|status` when those modules are installed).

Subcommands register through `add_parser(subparsers)`: a module adds its parser and sets `func=callable(args) -> int`
with `set_defaults`. The optional modules are imported lazily and may be absent.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import os
import sys

from webhook import logs
from webhook.config import DEFAULT_DRAIN_SECONDS, DEFAULT_MAX_BODY_BYTES, ConfigError, Settings
from webhook.preview import DEFAULT_CLUSTER_DNS

OPTIONAL_SUBCOMMANDS = ("audit", "rollout", "status", "kubednsmirror")


def _settings() -> Settings:
    return Settings.from_env(os.environ)


def _serve(args: argparse.Namespace) -> int:
    from webhook.app import create_app
    from webhook.server import serve

    settings = _settings()
    logging.getLogger("localdns.webhook").info("settings: %s", settings.describe())
    serve(create_app(settings, max_body_bytes=args.max_body_bytes), args.tls_cert, args.tls_key, args.host,
          args.port, drain_seconds=args.drain_seconds)
    return 0


def _preview(args: argparse.Namespace) -> int:
    from webhook.preview import run

    run(args.file, args.namespace, _settings(), cluster_dns=args.cluster_dns, node_resolv_conf=args.node_resolv_conf)
    return 0


def _demo(args: argparse.Namespace) -> int:
    from webhook.demo import run

    if "LOCALDNS_LOG_LEVEL" not in os.environ and args.log_level.upper() == "INFO":
        logging.getLogger().setLevel(logging.WARNING)  # the demo's own output tells the story
    return run(settings=_settings())


def _add_builtin(subparsers: argparse._SubParsersAction) -> None:
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
    serve.set_defaults(func=_serve)

    preview = subparsers.add_parser("preview", help="show what the webhook would do to a pod or workload")
    preview.add_argument("file", help="YAML or JSON file with a Pod or workload ('-' for stdin)")
    preview.add_argument("--namespace", "-n", help="namespace the pod is created in (default: the object's, "
                                                   "else 'default')")
    preview.add_argument("--cluster-dns", default=DEFAULT_CLUSTER_DNS,
                         help=f"kubelet's --cluster-dns, to show the file of a pod left unchanged "
                              f"(default {DEFAULT_CLUSTER_DNS})")
    preview.add_argument("--node-resolv-conf", help="a node's resolv.conf, for pods that use the node's DNS")
    preview.set_defaults(func=_preview)

    demo = subparsers.add_parser("demo", help="run the webhook on loopback and send it sample pods")
    demo.set_defaults(func=_demo)


def _add_optional(subparsers: argparse._SubParsersAction, name: str) -> None:
    module_name = f"webhook.{name}"
    try:
        module = importlib.import_module(module_name)
        module.add_parser(subparsers)
    except ModuleNotFoundError as error:
        if error.name != module_name:
            _add_broken(subparsers, name, error)
    except Exception as error:  # a broken optional module must not take serve/preview down with it
        _add_broken(subparsers, name, error)


def _add_broken(subparsers: argparse._SubParsersAction, name: str, error: BaseException) -> None:
    def fail(_args: argparse.Namespace) -> int:
        print(f"localdns-webhook: the {name} subcommand cannot load: {error!r}", file=sys.stderr)
        return 1

    parser = subparsers.add_parser(name, help=f"(unavailable: {error})")
    parser.set_defaults(func=fail)


BUILTIN_SUBCOMMANDS = ("serve", "preview", "demo")


def build_parser(include_optional: bool = True) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m webhook", description="localdns admission webhook")
    parser.add_argument("--log-level", default=os.environ.get("LOCALDNS_LOG_LEVEL", "INFO"),
                        help="DEBUG, INFO, WARNING or ERROR (default INFO, or LOCALDNS_LOG_LEVEL)")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_builtin(subparsers)
    for name in OPTIONAL_SUBCOMMANDS if include_optional else ():
        _add_optional(subparsers, name)
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # The cluster tools import the Kubernetes client (about 1.5 s and 40 MB); `serve` does not need them.
    command = next((arg for previous, arg in zip(["", *argv], argv)
                    if not arg.startswith("-") and previous != "--log-level"), None)
    args = build_parser(include_optional=command not in BUILTIN_SUBCOMMANDS).parse_args(argv)
    try:
        logs.configure(args.log_level)
    except ValueError:
        print(f"localdns-webhook: unknown log level {args.log_level!r}; use DEBUG, INFO, WARNING or ERROR",
              file=sys.stderr)
        return 2
    try:
        return int(args.func(args) or 0)
    except ConfigError as error:
        print(f"localdns-webhook: configuration error: {error}", file=sys.stderr)
        return 2
    except (OSError, ValueError) as error:
        print(f"localdns-webhook: {error}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
