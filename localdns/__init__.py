"""What the localdns programs share: one Kubernetes client (`kube`), the names an installation gives its objects
(`names`), the format of every program's log lines (`logformat`), and the demo that runs certs, the webhook and the
cache together (`demo`).

The admission server (webhook/) and the cache import only `logformat` (the standard library alone), and the
webhook's NetworkPolicy view the client: tests/test_layout.py holds each program to that.
"""
