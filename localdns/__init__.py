"""What the localdns programs share: one Kubernetes client (`kube`), the names an installation gives its objects
(`names`), and the demo that runs certs, the webhook and the cache together (`demo`).

The admission server (webhook/) imports none of it: it answers admission reviews and needs no Kubernetes client.
"""
