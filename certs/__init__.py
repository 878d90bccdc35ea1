"""TLS for the localdns webhook: make and check certificates (authority), keep them in the cluster and rotate them
(reconcile, rotation, kube), write them for local use (local). `python -m certs --help` lists the commands."""
