"""`python -m certs local|bootstrap|watch|show`: the webhook's TLS, from a laptop or inside the cluster."""
from __future__ import annotations

import argparse
import datetime as dt
import logging
import signal
import sys
import threading
from collections.abc import Sequence

from certs.authority import CertificateError, utcnow
from certs.kube import CertsError, Kube
from certs.local import DEFAULT_DNS_NAMES, DEFAULT_IP_ADDRESSES, write_local
from certs.reconcile import Target, observe, plan, reconcile, watch
from certs.rotation import Action, Policy
from certs.show import describe
from localdns import names
from localdns.kube import DEFAULT_TIMEOUT, Conflict, KubeError, connect
from localdns.logformat import FORMATS, configure

log = logging.getLogger("certs")
TEXT_FORMAT = "%(asctime)s certs %(message)s"


def positive(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a number") from None
    if not value > 0:
        raise argparse.ArgumentTypeError(f"{text} must be greater than 0")
    return value


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m certs", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    local = commands.add_parser("local", help="write ca.crt, tls.crt and tls.key for running the webhook locally")
    local.add_argument("--out", required=True, help="directory to write into (created if missing)")
    local.add_argument("--dns-name", action="append", default=None, metavar="NAME",
                       help="DNS name for the certificate, repeatable (default: localhost)")
    local.add_argument("--ip", action="append", default=None, metavar="IP",
                       help="IP address for the certificate, repeatable (default: 127.0.0.1)")

    for name, help_text in [
        ("bootstrap", "create or repair the Secrets and caBundle, then exit (init container)"),
        ("watch", "keep certificates renewed and the CA rolled, forever (sidecar)"),
        ("show", "print what is deployed and what would happen next; exit 1 if something needs doing"),
    ]:
        cmd = commands.add_parser(name, help=help_text)
        cmd.add_argument("--namespace", default=names.NAMESPACE, help="namespace of the webhook (%(default)s)")
        cmd.add_argument("--service", default=names.WEBHOOK, help="webhook Service name (%(default)s)")
        cmd.add_argument("--secret", default=names.TLS_SECRET,
                         help="serving Secret, type kubernetes.io/tls with ca.crt (%(default)s)")
        cmd.add_argument("--ca-secret", default="",
                         help=f"Secret holding the CA and its key (default: SECRET{names.CA_SECRET_SUFFIX})")
        cmd.add_argument("--webhook-configuration", default=names.WEBHOOK,
                         help="MutatingWebhookConfiguration whose caBundle to set (%(default)s)")
        cmd.add_argument("--cluster-domain", default=names.CLUSTER_DOMAIN, help="cluster DNS domain (%(default)s)")
        cmd.add_argument("--kubeconfig", default=None, help="kubeconfig file (default: $KUBECONFIG; in a pod, "
                                                            "its ServiceAccount; else ~/.kube/config)")
        cmd.add_argument("--context", default=None, help="kubeconfig context (default: current)")
        cmd.add_argument("--timeout", type=positive, default=DEFAULT_TIMEOUT,
                         help="seconds per API call (%(default)s)")
        cmd.add_argument("--log-format", choices=FORMATS, default="text",
                         help="text (one line per record) or json (one JSON object per line: time, level, logger, "
                              "msg) (%(default)s)")
        cmd.add_argument("--replace-invalid", action="store_true",
                         help="replace a garbage or expired Secret instead of stopping with an error")
        cmd.add_argument("--leaf-days", type=positive, default=90, help="serving certificate lifetime (%(default)s)")
        cmd.add_argument("--leaf-renew-days", type=positive, default=30,
                         help="renew the serving certificate this many days before expiry (%(default)s)")
        cmd.add_argument("--ca-days", type=positive, default=5 * 365, help="CA lifetime (%(default)s)")
        cmd.add_argument("--ca-renew-days", type=positive, default=180,
                         help="roll the CA this many days before expiry (%(default)s)")
        cmd.add_argument("--propagation-seconds", type=float, default=300,
                         help="wait between rotation steps for kubelet and API servers to see them (%(default)s)")
        if name == "watch":
            cmd.add_argument("--interval", type=positive, default=60,
                             help="seconds between checks, which also repair drift (%(default)s)")
    return parser


def run_local(args: argparse.Namespace) -> int:
    dns_names = args.dns_name if args.dns_name is not None else list(DEFAULT_DNS_NAMES)
    ips = args.ip if args.ip is not None else list(DEFAULT_IP_ADDRESSES)
    files = write_local(args.out, dns_names, ips)
    print(f"wrote {files.ca}, {files.cert}, {files.key} for {', '.join([*dns_names, *ips])}")
    return 0


def _days(count: float) -> dt.timedelta:
    return dt.timedelta(days=count)


def _target_and_policy(args: argparse.Namespace) -> tuple[Target, Policy]:
    target = Target(args.namespace, args.service, args.secret, args.webhook_configuration, args.cluster_domain,
                    args.ca_secret)
    if args.leaf_renew_days >= args.leaf_days or args.ca_renew_days >= args.ca_days:
        raise CertsError("renew-days must be shorter than the lifetime it renews")
    if args.propagation_seconds < 0:
        raise CertsError("--propagation-seconds cannot be negative")
    if args.ca_renew_days <= args.leaf_days:
        raise CertsError("--ca-renew-days must exceed --leaf-days, so a leaf never outlives its CA")
    policy = Policy(target.dns_names(), _days(args.leaf_days), _days(args.leaf_renew_days), _days(args.ca_days),
                    _days(args.ca_renew_days), dt.timedelta(seconds=args.propagation_seconds))
    return target, policy


def _kube(args: argparse.Namespace) -> Kube:
    return Kube(connect(args.kubeconfig, args.context, args.timeout, timeout_flag="--timeout"), args.namespace)


def run_bootstrap(args: argparse.Namespace) -> int:
    target, policy = _target_and_policy(args)
    step = reconcile(_kube(args), target, policy, log.info, args.replace_invalid)
    log.info("done: %s", step.reason)
    return 0


def run_watch(args: argparse.Namespace) -> int:
    target, policy = _target_and_policy(args)
    kube = _kube(args)
    stop = threading.Event()
    for signum in (signal.SIGTERM, signal.SIGINT):
        signal.signal(signum, lambda *_: stop.set())
    log.info("watching Secret %s/%s and MutatingWebhookConfiguration %s every %gs", target.namespace,
             target.secret, target.webhook_configuration, args.interval)
    watch(kube, target, policy, log.info, args.interval, stop, args.replace_invalid)
    return 0


def run_show(args: argparse.Namespace) -> int:
    target, policy = _target_and_policy(args)
    now = utcnow()
    snap = observe(_kube(args), target)
    step = plan(snap, target, policy, now, replace_invalid=False)
    print(describe(snap, target, step, now))
    return 0 if step.action in (Action.NOTHING, Action.WAIT) else 1


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    configure(logging.INFO, getattr(args, "log_format", "text"), sys.stderr, TEXT_FORMAT, force=True)
    runners = {"local": run_local, "bootstrap": run_bootstrap, "watch": run_watch, "show": run_show}
    try:
        return runners[args.command](args)
    except Conflict as exc:
        print(f"error: {exc.what} kept changing while we worked on it; run again", file=sys.stderr)
        return 1
    except (CertsError, CertificateError, KubeError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        return 130
    except OSError as exc:
        print(f"error: {exc.strerror or exc}: {exc.filename or ''}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
