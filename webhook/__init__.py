"""The localdns admission webhook: rewrites new pods' DNS settings to use the node-local cache when their namespace
opted in (`python -m webhook serve`). It imports nothing outside this package; see docs/webhook.md."""
