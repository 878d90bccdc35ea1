"""The cluster tools: `audit` (running pods that bypass the local DNS cache), `rollout` (restart their workloads)
and `status` (is the installation healthy), judged by the webhook's own rule (`webhook.policy.decide`) and read
through the shared Kubernetes client (`localdns.kube`). `python -m clustertools --help`, or as a kubectl plugin,
`kubectl localdns --help`."""
