"""Sample objects for the webhook tests."""
from __future__ import annotations


def pod(name: str = "web", annotations: dict | None = None, namespace: str | None = None, **spec) -> dict:
    """A Pod as a controller sends it: generateName, often no namespace in the object."""
    metadata: dict = {"generateName": f"{name}-", "labels": {"app": name}}
    if annotations is not None:
        metadata["annotations"] = annotations
    if namespace is not None:
        metadata["namespace"] = namespace
    return {"apiVersion": "v1", "kind": "Pod", "metadata": metadata,
            "spec": {"containers": [{"name": "app", "image": "nginx:1.27"}], **spec}}
